"""campaignctl: the command line for people, over the campaigns HTTP API (local or deployed).

    python -m campaignctl create --name "Diwali" --phone-number-id 1234567890 \\
        --template-name diwali_offer --language en_US --csv recipients.csv [--rate 80] [--send]
    python -m campaignctl send|pause|resume|cancel|retry-failed ID
    python -m campaignctl status ID [--watch]       (with the latest event of its history)
    python -m campaignctl events ID [--newest]      (its history: time, kind, who, cause; one a line)
    python -m campaignctl list [--status sending]
    python -m campaignctl recipients ID [--status failed]
    python -m campaignctl export ID [--status failed] [-o FILE]
    python -m campaignctl suppressions list|show PHONE|add PHONE [--reason R]|remove PHONE
    python -m campaignctl test ID --phone +919876543210 [--phone ...] [--var Asha ...] | --csv FILE
    python -m campaignctl clone ID [--name NAME] [--recipients none|all|failed|not_delivered|not_read]

--api-url (env CAMPAIGNS_API_URL, default http://127.0.0.1:3000). A URL that is not loopback is the
deployed API: requests are signed with SigV4 (service execute-api) with the default AWS credential chain.
"""
