"""A webhook receiver for segdb's tests: verifies every delivery with the Standard Webhooks
reference library (PyPI `standardwebhooks`), deduplicates by `webhook-id`, and records what it
accepted, one JSON line per new delivery.

    python receiver.py --secret-file F --record R --control C [--segment]

Prints `port N` once listening on 127.0.0.1. Before each request it reads the control file:
`ok` (answer 200), `fail` (answer 500), `gone` (answer 410) or `slow` (wait 3 s, then 200).
With `--segment` it records Segment-spec `/v1/batch` bodies instead (Basic auth, no signature).
"""

import argparse
import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

args = argparse.ArgumentParser()
args.add_argument("--secret-file")
args.add_argument("--record", required=True)
args.add_argument("--control", required=True)
args.add_argument("--segment", action="store_true")
args.add_argument("--write-key")
a = args.parse_args()

lock = threading.Lock()
seen = set()


def mode():
    try:
        with open(a.control) as f:
            return f.read().strip() or "ok"
    except FileNotFoundError:
        return "ok"


def record(entry):
    with open(a.record, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def answer(self, status, text=b"{}"):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        m = mode()
        with lock:
            record({"attempt": True, "id": self.headers.get("webhook-id"), "mode": m})
        if m == "fail":
            return self.answer(500)
        if m == "gone":
            return self.answer(410)
        if m == "slow":
            time.sleep(3)
        if a.segment:
            auth = self.headers.get("authorization", "")
            want = "Basic " + base64.b64encode((a.write_key + ":").encode()).decode()
            if auth != want:
                return self.answer(401)
            with lock:
                record({"segment": json.loads(body)})
            return self.answer(200, b'{"success":true}')
        with open(a.secret_file) as f:
            secret = f.read().strip()
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            payload = Webhook(secret).verify(body, headers)
        except WebhookVerificationError as e:
            with lock:
                record({"bad_signature": str(e)})
            return self.answer(400)
        wid = headers["webhook-id"]
        with lock:
            if wid in seen:
                record({"duplicate": wid})
            else:
                seen.add(wid)
                record({"id": wid, "payload": payload})
        self.answer(200)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
