"""Send events to a running `segdb serve --http` with the real Python SDKs from PyPI:
segment-analytics-python (Segment's) and rudder-sdk-python (RudderStack's, gzip on by default).
tests/it/collector.rs runs this and then checks what landed.

usage: sdks.py --http http://127.0.0.1:PORT --key WRITE_KEY --prefix PFX
Exit 0 when every flush returned without an error; prints {"sent": n} on its last line.
"""
import argparse
import json
import sys

import segment.analytics as segment_analytics
from rudderstack.analytics.client import Client as RudderClient


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--prefix", required=True)
    args = ap.parse_args()
    errors = []
    p = args.prefix

    def on_error(e, batch):
        errors.append(f"{type(e).__name__}: {e}")

    seg = segment_analytics.Client(
        write_key=args.key, host=args.http, on_error=on_error, max_retries=2, gzip=False
    )
    seg.identify(f"{p}-seg-1", {"plan": "pro", "age": 41, "email": "canary.seg@example.com"})
    seg.track(
        f"{p}-seg-1",
        "Order Completed",
        {"productID": 7, "price": 9.5, "Plan Name": "gold", "product": {"sku": "s-1"}},
    )
    seg.page(f"{p}-seg-1", category=None, name="Pricing", properties={"path": "/pricing"})
    seg.alias(previous_id=f"{p}-anon-1", user_id=f"{p}-seg-1")
    seg.group(f"{p}-seg-1", group_id="acme", traits={"size": 10})
    seg.track(anonymous_id=f"{p}-anon-2", event="Viewed", properties={"n": 1})
    seg.flush()
    seg.join()

    rud = RudderClient(write_key=args.key, host=args.http, on_error=on_error, max_retries=2)
    rud.track(f"{p}-rud-1", "Signed Up", {"amount": 12, "referrer": "ad"})
    rud.identify(f"{p}-rud-1", {"plan": "basic"})
    rud.screen(f"{p}-rud-1", name="Home")
    rud.flush()
    rud.join()

    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"sent": 9}))


if __name__ == "__main__":
    main()
