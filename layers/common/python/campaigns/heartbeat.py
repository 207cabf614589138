"""A batch's heartbeat: renew the lease with the batch's progress, and see whether the campaign halted.

It runs on a thread of its own: on the batch's main loop, its calls would stop the batch from
dispatching sends for as long as the store takes to answer them, which is longest exactly when
the store is busiest. Its answer (a Beat) reaches the main loop through the same queue as the
sends' results; the main loop decides what a lost lease or a halt means for the batch.
"""

from __future__ import annotations

import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import lease as leases
from .budget import Budget
from .config import Settings
from .models import Campaign
from .states import CampaignStatus

# Heartbeats between two looks at the campaign's status when no halt was requested: the bound on
# how long a pause whose request never reached the shards (its API call died in between) goes unseen.
STATUS_LOOK_EVERY = 10


@dataclass
class Beat:
    """What one heartbeat came to, reported to the main loop like a send's Result."""

    lease_lost: bool = False
    halted: bool = False  # the campaign is no longer sending
    error: Exception | None = None  # a store error
    share: float | None = None  # the shard's share of its number's throughput now (campaigns.budget)


class Heartbeat:
    """One heartbeat at a time, due an interval after the previous one landed."""

    def __init__(self, lease: leases.Lease, campaign_id: str, settings: Settings, answers: queue.Queue,
                 budget: Budget | None = None):
        self.lease, self.campaign_id, self.settings, self.answers = lease, campaign_id, settings, answers
        self.budget = budget
        self.pending = False  # a heartbeat is on its way; its Beat has not been applied
        self.next_due = 0.0  # monotonic
        self.count = 0  # heartbeats started so far (the heartbeat thread's own count)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heartbeat")

    def due(self) -> bool:
        return not self.pending and time.monotonic() >= self.next_due

    def until_due(self) -> float:
        """How long the main loop may wait for results before it must start a heartbeat."""
        if self.pending:
            return self.settings.heartbeat_seconds  # its Beat wakes the loop when it lands
        return max(0.0, self.next_due - time.monotonic())

    def start(self, actions: list) -> None:
        """Renew with `actions` (the progress to flush) on the heartbeat's thread."""
        self.pending = True
        self._thread.submit(self._beat, actions)

    def landed(self) -> None:
        """Its Beat was applied. The next one is due an interval after this one landed, not after it
        started: a slow store gets fewer heartbeats rather than one after the other."""
        self.pending = False
        self.next_due = time.monotonic() + self.settings.heartbeat_seconds

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    def _beat(self, actions: list) -> None:
        try:
            beat = Beat(halted=self._renew_and_look(actions))
            if self.budget is not None and not beat.halted:
                beat.share = self.budget.renew()  # the number's split, as every shard on it computes it
        except leases.LeaseLost:
            beat = Beat(lease_lost=True)
        except Exception as error:  # handed to the main loop, raised there
            beat = Beat(error=error)
        self.answers.put(beat)

    def _renew_and_look(self, actions: list) -> bool:
        """Renew; True if the campaign is no longer sending.

        The campaign is read only after a pause or cancel asked for it (lease.request_halt), and
        every STATUS_LOOK_EVERY-th heartbeat in case one died between its status and its request:
        a heartbeat is one call to the store, not two.
        """
        self.count += 1
        look = self.count % STATUS_LOOK_EVERY == 0
        while True:
            try:
                leases.renew(self.lease, self.settings, actions)
                break
            except leases.HaltRequested as request:
                # Renewed again under the new count (the progress must land), then the look: the
                # status the request announces was written before it. Each refusal is a newer
                # request (the count only grows), so this ends once people stop pausing.
                self.lease.halts_seen = request.halts
                look = True
        if not look:
            return False
        # Consistent: an eventually consistent read could still answer `sending` after the request.
        campaign = Campaign.get(*Campaign.key(self.campaign_id), consistent_read=True, attributes_to_get=["status"])
        return campaign.status != CampaignStatus.SENDING
