"""One throughput budget per phone number, shared by every shard sending from it.

Meta's throughput limit belongs to the number (80 messages/s by default), whatever campaigns send
from it. Each sending batch keeps an entry in its number's roster (`models.Number.roster`: shard →
{ask, owner, until}) with its heartbeat: one UpdateItem a heartbeat that sets its own entry and
returns the whole item (the roster and the number's limit), so no read of its own and nothing per
message. Every batch computes the same split from it (`fair_shares`): max-min fair, each shard's
ask (its campaign's rate over its shards) its ceiling, so a shard that asks for less leaves the
rest to the others. An entry counts until `until` (a few heartbeats ahead): a dead batch's share
returns to the others within seconds, and a batch that lets its shard go removes its entry at once.
The split is re-read at every heartbeat, so a campaign that starts, pauses or finishes re-splits the
number within a heartbeat or two.
"""

from __future__ import annotations

import time

from pynamodb.exceptions import UpdateError

from .config import Settings
from .models import Number, write_if

DEFAULT_THROUGHPUT_MPS = 80.0  # Meta's default for a number (1 000 after its upgrade)
ENTRY_HEARTBEATS = 3  # an entry counts this many heartbeats (plus the clock skew) after its last renewal


def fair_shares(asks: dict[str, float], limit: float) -> dict[str, float]:
    """Max-min fair split of `limit` over `asks`: each gets its ask or an equal share of what is
    left by the smaller asks, whichever is less (water-filling)."""
    shares: dict[str, float] = {}
    left, waiting = float(limit), len(asks)
    for key, ask in sorted(asks.items(), key=lambda item: item[1]):
        shares[key] = min(float(ask), left / waiting)
        left -= shares[key]
        waiting -= 1
    return shares


def live_asks(roster: dict, now: float) -> dict[str, float]:
    return {key: float(entry["ask"]) for key, entry in (roster or {}).items()
            if isinstance(entry, dict) and float(entry.get("until") or 0) > now}


class Budget:
    """A batch's part of its number's budget."""

    def __init__(self, phone_number_id: str, shard_key: str, ask: float, owner: str, settings: Settings):
        self.phone_number_id, self.shard_key, self.ask, self.owner = phone_number_id, shard_key, ask, owner
        self.ttl = ENTRY_HEARTBEATS * settings.heartbeat_seconds + settings.clock_skew_seconds
        self.number: Number | None = None  # the number's item, from the last renewal

    def renew(self, now: float | None = None) -> float:
        """Keep this shard's entry, and return its share of the number now."""
        now = time.time() if now is None else now
        number = Number(*Number.key(self.phone_number_id))
        entry = {"ask": self.ask, "owner": self.owner, "until": now + self.ttl}
        try:
            write_if(number, [Number.roster[self.shard_key].set(entry)], read_back=True)
        except UpdateError:
            # The number's first entry: its item, or its roster, does not exist yet (a document path
            # into a missing map is refused). Made with the roster holding this entry alone; a
            # concurrent first entry wins the condition and this one sets itself into it.
            if not write_if(number, [Number.roster.set({self.shard_key: entry})], Number.roster.does_not_exist(),
                            read_back=True):
                write_if(number, [Number.roster[self.shard_key].set(entry)], read_back=True)
        self.number = number  # as the write left it: the limits its owner set, read by the batch
        limit = float(number.throughput_mps or DEFAULT_THROUGHPUT_MPS)
        asks = live_asks(number.roster.as_dict() if hasattr(number.roster, "as_dict") else number.roster, now)
        asks[self.shard_key] = self.ask
        return fair_shares(asks, limit)[self.shard_key]

    def leave(self) -> None:
        """This batch lets its shard go: its share returns to the others at their next heartbeat. Only
        its own entry (a takeover's entry for the same shard is the new holder's)."""
        write_if(Number(*Number.key(self.phone_number_id)), [Number.roster[self.shard_key].remove()],
                 Number.roster[self.shard_key]["owner"] == self.owner)
