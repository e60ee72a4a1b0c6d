"""Verifies webhook deliveries with the Standard Webhooks reference library (PyPI
`standardwebhooks`), an implementation independent of Tally's.

Usage: verify_webhooks.py DELIVERIES.json
The file holds {"secrets": [...], "deliveries": [{"id", "timestamp", "signature", "body",
"all_of": [indexes of the secrets that must each verify it], "any_of": [indexes of which at
least one must]}]}. Exits 1 on the first delivery that does not verify, else prints how many
did."""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main(path):
    with open(path) as f:
        spec = json.load(f)
    hooks = [Webhook(secret) for secret in spec["secrets"]]
    checked = 0
    for delivery in spec["deliveries"]:
        headers = {
            "webhook-id": delivery["id"],
            "webhook-timestamp": delivery["timestamp"],
            "webhook-signature": delivery["signature"],
        }
        verified = []
        for index in delivery["all_of"] + delivery["any_of"]:
            try:
                payload = hooks[index].verify(delivery["body"], headers)
            except WebhookVerificationError:
                continue
            if payload["id"] != delivery["id"]:
                print(f"delivery {delivery['id']} carries event {payload['id']}")
                return 1
            verified.append(index)
        missing = [i for i in delivery["all_of"] if i not in verified]
        if missing or (delivery["any_of"] and not set(verified) & set(delivery["any_of"])):
            print(f"delivery {delivery['id']} does not verify as it should: verified by {verified}, {delivery}")
            return 1
        checked += len(verified)
    # A secret that was never the destination's verifies nothing.
    stranger = Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=")
    for delivery in spec["deliveries"][:5]:
        headers = {
            "webhook-id": delivery["id"],
            "webhook-timestamp": delivery["timestamp"],
            "webhook-signature": delivery["signature"],
        }
        try:
            stranger.verify(delivery["body"], headers)
            print(f"delivery {delivery['id']} verifies with a stranger's secret")
            return 1
        except WebhookVerificationError:
            pass
    print(f"verified {checked} signatures of {len(spec['deliveries'])} deliveries")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
