"""Two campaigns sharing one number: refusals and how busy the number is kept.

The local stack as `make up` runs it (dynalite, warm environments, the project's fake Graph API at
50 ms ± 20 % refusing with 130429 above `--cap` messages/s per number), the number configured
with `PUT /numbers/{id}`-equivalent `numbers.configure(id, cap)`, and two campaigns at rate `cap`
on it, sent at once. Counted at the fake: the 130429s against the sends it accepted, and the
number's busy share: accepted sends a second over the cap, from the first arrival to the moment
the first of the two campaigns finished (while both send).

    .venv/bin/python -m bench.numbers [--recipients 500] [--cap 20]

The last line is JSON: {"refused_share", "busy_while_both_send", "accepted", "refused", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from bench.recovery import poll
from local.stack import LocalStack, StackConfig

LOG = os.path.join(tempfile.gettempdir(), "bench-numbers.log")
NUMBER = "5550001"


def measure(recipients: int, cap: int) -> dict:
    from campaigns import numbers, service
    from campaigns.config import settings

    config = StackConfig(table_name="bench-numbers", local_data_dir="")
    with LocalStack(config, log_path=LOG) as stack:
        stack.fake.configure(rate_cap_mps=cap)
        numbers.configure(NUMBER, cap)
        spec = service.CampaignSpec(name="bench", phone_number_id=NUMBER, rate=cap,
                                    template={"name": "t", "language": "en_US", "components": []})
        campaigns = []
        for c in range(2):
            campaign = service.create_campaign(spec, settings())
            service.add_recipients(campaign.id, [service.RecipientRow(f"91{c}8{n:08d}") for n in range(recipients)])
            campaigns.append(campaign)
        for campaign in campaigns:
            service.send(campaign.id, settings())
        done_at = {}

        def both_done():
            for campaign in campaigns:
                if campaign.id not in done_at and service.get_campaign(campaign.id).status == "completed":
                    done_at[campaign.id] = max(s["at"] for s in stack.fake.sends()
                                               if s["callback"].startswith(campaign.id + ":"))
            return len(done_at) == 2

        poll(both_done, 900)
        sends = stack.fake.sends()
        refused = sum(1 for r in stack.fake.rejected() if r["code"] == 130429)
    first, first_done = min(s["at"] for s in sends), min(done_at.values())
    while_both = sum(1 for s in sends if s["at"] <= first_done)
    return {
        "recipients_each": recipients,
        "cap": cap,
        "accepted": len(sends),
        "refused": refused,
        "refused_share": round(refused / len(sends), 4),
        "busy_while_both_send": round(while_both / (first_done - first) / cap, 3),
        "duplicates": len(sends) - len({s["callback"] for s in sends}),
        "both_completed": len(done_at) == 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=500, help="per campaign")
    parser.add_argument("--cap", type=int, default=20, help="the number's limit, the campaigns' rate, the fake's cap")
    args = parser.parse_args()
    result = measure(args.recipients, args.cap)
    print(f"# two campaigns at rate {args.cap} on a {args.cap}-mps number: {result['refused']} refused of "
          f"{result['accepted']} accepted ({result['refused_share']:.1%}), the number {result['busy_while_both_send']:.0%} "
          f"busy while both send")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
