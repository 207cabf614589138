"""The lease protocol of a shard: who may send for it, until when, under which fencing generation.

Every change of holder is a conditional write on the shard item that bumps `lease_gen`:

  hand_to  an invoker (API send/resume, recovery, a batch handing off) reserves the lease
           for an invocation it is about to start, naming it by a fresh token;
  acquire  the invoked batch swaps that token for its own owner id: of two deliveries of
           the same event only the first can, so a duplicate sends nothing;
  renew    the heartbeat: extends the expiry, flushes counters and cursor, and fails once
           anyone else holds the lease;
  release  the holder lets go (paused, nothing to do until a time, or finished).

A person's pause or cancel reaches the holder through the same write: after the campaign's
status, `request_halt` bumps `halt_requests` on each of its shards, and a renewal is conditioned
on the count the holder last saw. A refused renewal that still finds the lease ours is a halt
request (HaltRequested): the holder reads its campaign's status then, rather than every heartbeat.

A batch marks the shard `dirty_since` when it acquires and clears it when it lets go with its
counters flushed (release, hand_off): the next holder that finds the mark knows its predecessor
died with counter deltas unflushed, and recounts the shard.

The shard's DueIndex entry (due_at) follows the lease expiry while it is held: recovery
takes over exactly the shards whose entry is in the past.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from pynamodb.expressions.condition import Condition

from .config import Settings
from .models import DUE_SHARD, Shard, write_if


class LeaseLost(Exception):
    """Somebody else holds the shard's lease now: stop sending at once."""


class HaltRequested(Exception):
    """The renewal was refused, the lease still ours: a halt was requested since the holder last
    looked at its campaign. `halts` is the count to look from."""

    def __init__(self, halts: int):
        super().__init__(f"halt requested ({halts})")
        self.halts = halts


def new_token() -> str:
    return uuid.uuid4().hex


@dataclass
class Lease:
    campaign_id: str
    shard: int
    owner: str
    gen: int
    expires: float
    # Own-clock (monotonic) instant after which this holder must not start a send.
    send_deadline: float = field(default=0.0)
    # The previous holder died without flushing its counters (see Shard.dirty_since).
    predecessor_died: bool = False
    # Shard.halt_requests as of the holder's last look at its campaign's status.
    halts_seen: int = 0

    def usable(self) -> bool:
        return time.monotonic() < self.send_deadline


def _shard(campaign_id: str, shard: int) -> Shard:
    return Shard(*Shard.key(campaign_id, shard))


def free_or_expired(now: float) -> Condition:
    return Shard.lease_owner.does_not_exist() | (Shard.lease_expires < now)


def held_under(lease: Lease) -> Condition:
    return (Shard.lease_owner == lease.owner) & (Shard.lease_gen == lease.gen)


def token_is(token: str) -> Condition:
    return Shard.lease_token == token


def _halts_are(count: int) -> Condition:
    if count == 0:  # shards written before halt requests existed have no count: that reads as 0
        return (Shard.halt_requests == 0) | Shard.halt_requests.does_not_exist()
    return Shard.halt_requests == count


def hand_to(
    campaign_id: str, shard: int, token: str, condition: Condition, settings: Settings, now: float | None = None
) -> int | None:
    """Reserve the lease for the invocation named `token`; returns the new generation, None if refused.

    The reservation lasts one lease period: if that invocation never runs, the shard becomes
    due and recovery takes it over.
    """
    now = time.time() if now is None else now
    item = _shard(campaign_id, shard)
    expires = now + settings.lease_seconds
    ok = write_if(
        item,
        [
            Shard.lease_owner.set(token),
            Shard.lease_token.set(token),
            Shard.lease_gen.add(1),
            Shard.lease_expires.set(expires),
            Shard.due_kind.set(DUE_SHARD),
            Shard.due_at.set(expires),
        ],
        condition & Shard.campaign_id.exists(),
        read_back=True,
    )
    return int(item.lease_gen) if ok else None


def acquire(campaign_id: str, shard: int, token: str, settings: Settings) -> tuple[Lease, Shard] | None:
    """Take the lease reserved for `token` under a fresh owner id; None if it is not ours to take."""
    owner = new_token()
    item = _shard(campaign_id, shard)
    started = time.monotonic()
    now = time.time()
    expires = now + settings.lease_seconds
    ok = write_if(
        item,
        [
            Shard.lease_owner.set(owner),
            Shard.lease_gen.add(1),
            Shard.lease_expires.set(expires),
            Shard.due_kind.set(DUE_SHARD),
            Shard.due_at.set(expires),
            Shard.heartbeat_at.set(now),
            Shard.dirty_since.set(Shard.dirty_since | now),
        ],
        Shard.lease_owner == token,
        read_back=True,
    )
    if not ok:
        return None
    lease = Lease(campaign_id, shard, owner, int(item.lease_gen), expires)
    lease.predecessor_died = float(item.dirty_since) < now
    lease.halts_seen = int(item.halt_requests or 0)  # the batch reads its campaign's status next
    lease.send_deadline = started + settings.lease_seconds - settings.lease_safety_seconds
    return lease, item


def renew(lease: Lease, settings: Settings, extra_actions: list | None = None) -> None:
    """Heartbeat: extend the lease and write `extra_actions` (counters, cursor) under its fence.

    Raises LeaseLost once anyone else holds the shard, HaltRequested if a halt was requested
    since `lease.halts_seen` (nothing is written then: the holder looks, and renews again).
    """
    started = time.monotonic()
    now = time.time()
    expires = now + settings.lease_seconds
    ok = write_if(
        _shard(lease.campaign_id, lease.shard),
        [
            Shard.lease_expires.set(expires),
            Shard.due_at.set(expires),
            Shard.heartbeat_at.set(now),
            *(extra_actions or []),
        ],
        held_under(lease) & _halts_are(lease.halts_seen),
    )
    if not ok:
        item = Shard.get(*Shard.key(lease.campaign_id, lease.shard), consistent_read=True)
        if item.lease_owner == lease.owner and int(item.lease_gen) == lease.gen:
            raise HaltRequested(int(item.halt_requests or 0))
        lease.send_deadline = 0.0
        raise LeaseLost(f"shard {lease.shard} of {lease.campaign_id} is no longer held by this batch")
    lease.expires = expires
    lease.send_deadline = started + settings.lease_seconds - settings.lease_safety_seconds


def release(lease: Lease, due_at: float | None, extra_actions: list | None = None) -> bool:
    """Let go of the lease. With `due_at`, recovery looks at the shard again then; without, never."""
    lease.send_deadline = 0.0
    actions = [
        Shard.lease_owner.remove(),
        Shard.lease_gen.add(1),
        Shard.lease_expires.set(0),
        Shard.dirty_since.remove(),
        *(extra_actions or []),
    ]
    if due_at is None:
        actions += [Shard.due_kind.remove(), Shard.due_at.remove()]
    else:
        actions += [Shard.due_kind.set(DUE_SHARD), Shard.due_at.set(due_at)]
    return write_if(
        _shard(lease.campaign_id, lease.shard),
        actions,
        held_under(lease),
    )


def hand_off(lease: Lease, token: str, settings: Settings, extra_actions: list | None = None) -> bool:
    """The holder passes the lease to the next batch it is about to invoke (self-continuation)."""
    lease.send_deadline = 0.0
    now = time.time()
    expires = now + settings.lease_seconds
    return write_if(
        _shard(lease.campaign_id, lease.shard),
        [
            Shard.lease_owner.set(token),
            Shard.lease_token.set(token),
            Shard.lease_gen.add(1),
            Shard.lease_expires.set(expires),
            Shard.due_at.set(expires),
            Shard.dirty_since.remove(),
            *(extra_actions or []),
        ],
        held_under(lease),
    )


def request_halt(campaign_id: str, shards: Iterable[int]) -> None:
    """Ask whoever holds these shards to look at their campaign's status now (after a pause or
    cancel wrote it): their next renewal is refused with HaltRequested."""
    for shard in shards:
        write_if(_shard(campaign_id, shard), [Shard.halt_requests.add(1)], Shard.campaign_id.exists())
