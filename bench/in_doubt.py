"""What kills leave in doubt: one campaign, SIGKILLs of live sender batches at random moments.

The local stack as `make up` runs it (dynalite, warm environments, the project's fake Graph API at
50 ms ± 20 %), one campaign of N recipients at rate 80 and `--kills` SIGKILLs, each of a live batch
once 5-40 more sends were accepted. Counted once it completed: the recipients left in doubt, and of
those the ones the fake never received (the claim that never became a POST), per kill.

Without `--webhooks` the fake posts no status and the policy is `skip`: what is in doubt stays so,
the gap itself. With `--webhooks` the fake posts signed statuses to the stack's /webhook and the
policy is the default `auto`: the figure is what is still in doubt once the webhooks caught up, and
the duplicates (recipients the fake received twice).

    .venv/bin/python -m bench.in_doubt [--recipients 2000] [--kills 10] [--webhooks] [--seed 7]

The last line is JSON: {"kills", "in_doubt", "in_doubt_never_sent", "per_kill", "duplicates", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import tempfile
import time
from collections import Counter

from bench.recovery import live_senders, poll
from local.stack import LocalStack, StackConfig

LOG = os.path.join(tempfile.gettempdir(), "bench-in-doubt.log")


def kill_one(stack: LocalStack, rng: random.Random) -> bool:
    accepted = stack.fake.stats()["accepted"]
    poll(lambda: stack.fake.stats()["accepted"] >= accepted + rng.randint(5, 40) and live_senders(stack), 60)
    senders = live_senders(stack)
    if not senders:
        return False
    try:
        os.kill(rng.choice(senders)["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def measure(recipients: int, kills: int, webhooks: bool, seed: int) -> dict:
    from campaigns import service
    from campaigns.config import settings
    from campaigns.models import Recipient, shard_pk

    rng = random.Random(seed)
    config = StackConfig(table_name="bench-in-doubt", local_data_dir="", fake_webhook_failed_ratio=0.0,
                         api_port=0, random_seed=seed)
    with LocalStack(config, log_path=LOG, with_gateway=webhooks) as stack:
        spec = service.CampaignSpec(name="bench", phone_number_id=config.phone_number_id, rate=80,
                                    template={"name": "t", "language": "en_US", "components": []},
                                    in_doubt_policy="auto" if webhooks else "skip")
        campaign = service.create_campaign(spec, settings())
        service.add_recipients(campaign.id, [service.RecipientRow(f"9198{n:08d}") for n in range(recipients)])
        service.send(campaign.id, settings())
        done = sum(kill_one(stack, rng) for _ in range(kills))
        # Under auto a shard finishes only once its in-doubt recipients are resolved or waited for.
        poll(lambda: service.get_campaign(campaign.id).status == "completed", 900)
        recs = list(Recipient.query(shard_pk(campaign.id, 0), Recipient.SK.startswith("R#"), consistent_read=True))
        received = Counter(s["callback"] for s in stack.fake.sends())
    doubted = [r for r in recs if r.status == "in_doubt"]
    never_sent = [r for r in doubted if not received.get(r.callback_key)]
    return {
        "recipients": recipients,
        "kills": done,
        "policy": "auto" if webhooks else "skip",
        "webhooks": webhooks,
        "in_doubt": len(doubted),
        "in_doubt_never_sent": len(never_sent),
        "per_kill": {"in_doubt": round(len(doubted) / max(1, done), 2),
                     "in_doubt_never_sent": round(len(never_sent) / max(1, done), 2)},
        "resent_after_absence": sum(1 for r in recs if r.absent_proven_at is not None),
        "proven_sent": sum(1 for r in recs if r.proven_at is not None),
        "duplicates": sum(1 for n in received.values() if n > 1),
        "not_received": sum(1 for r in recs if not received.get(r.callback_key)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--webhooks", action="store_true", help="statuses flowing; policy auto")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.monotonic()
    result = measure(args.recipients, args.kills, args.webhooks, args.seed)
    print(f"# {result['kills']} kills, {args.recipients} recipients, policy {result['policy']}: "
          f"{result['in_doubt']} in doubt ({result['in_doubt_never_sent']} never reached the fake), "
          f"{result['duplicates']} duplicates, {time.monotonic() - started:.0f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
