"""Scale on paper: one campaign at 1 000 mps, the busiest partition and item against DynamoDB's limits.

Every figure follows from the shard layout and the writes the code makes (counted by bench.costs):
    .venv/bin/python -m bench.scale [--rate 1000]
"""

from __future__ import annotations

import argparse
import math

from campaigns.config import Settings

PARTITION_WCU = 1000  # DynamoDB's write limit per partition (units per second)
WEBHOOKS_PER_MESSAGE = 3  # sent, delivered, read (graph-api.md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args()
    settings = Settings()
    shards = math.ceil(args.rate / settings.shard_rate)
    per_shard = args.rate / shards
    # Recipient items are < 1 KB: each write is 1 WCU. Per message in the shard's partition:
    sender = 2  # claim + checkpoint
    webhook_recipient = WEBHOOKS_PER_MESSAGE  # one conditional update per status (a failed condition costs too)
    webhook_counters = 2  # delivered and read counters on the shard item
    heartbeat = 1 / settings.heartbeat_seconds  # per shard per second, regardless of rate
    partition = per_shard * (sender + webhook_recipient + webhook_counters) + heartbeat
    shard_item = per_shard * webhook_counters + heartbeat
    print(f"campaign at {args.rate} mps -> {shards} shards of {per_shard:.1f} mps (SHARD_RATE={settings.shard_rate})")
    print("| where | writes/s | limit | share of limit |")
    print("|---|---|---|---|")
    print(f"| busiest partition (one shard: recipients + shard item) | {partition:.0f} | {PARTITION_WCU} "
          f"| {partition / PARTITION_WCU:.2f} |")
    print(f"| busiest item (the shard item: webhook counters + heartbeat) | {shard_item:.0f} | {PARTITION_WCU} "
          f"| {shard_item / PARTITION_WCU:.2f} |")
    print(f"| campaign item (status changes only) | ~0 | {PARTITION_WCU} | 0.00 |")
    print(f"| DueIndex partition 'shard' (heartbeats of all shards) | {shards * heartbeat:.0f} | {PARTITION_WCU} "
          f"| {shards * heartbeat / PARTITION_WCU:.2f} |")
    print("| TransactWriteItems in the per-message path | 0 | | |")
    print(f"\nthe whole campaign: {args.rate * (sender + webhook_recipient + webhook_counters) + shards * heartbeat:.0f}"
          f" WCU/s spread over {shards} partitions")


if __name__ == "__main__":
    main()
