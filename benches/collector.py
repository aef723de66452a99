"""The collector under load: many SDK-like clients on keep-alive connections, each sending gzip
batches and waiting for the answer (200 only after the commit), like the SDKs do.

Measures, on one machine, with the server and the load generator sharing its cores:
  - a single client's acknowledgement latency at low load (one message per request);
  - events/s acknowledged durably with --connections clients sending --batch messages per request;
    p50/p99 acknowledgement latency; 429s and 503s; the server's peak RSS;
  - a q1-style segment's latency (Flight SQL, ADBC) when quiet and while the load runs;
  - freshness: an acknowledged event counts in the statement that follows;
and writes benches/results/collector.md next to the anchors (RudderStack about 1.7–3k events/s
per node; Segment's limit of 1,000 requests/s per source).

usage: python benches/collector.py --segdb target/release/segdb [--connections 1000] [--batch 100]
       [--seconds 20] [--users 1000000] [--work DIR]
"""

import argparse
import asyncio
import base64
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

Q1 = "DID 'purchase' AT LEAST 3 TIMES IN THE LAST 30 DAYS AND PROFILE country = 'DE'"


def sh(cmd, env, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return out.stdout


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def batch_body(tag, n, size):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    msgs = []
    for i in range(size):
        u = random.randrange(200_000)
        msgs.append({
            "type": "track", "event": "bench_view", "userId": f"bench-u-{u}",
            "messageId": f"{tag}-{n}-{i}", "timestamp": now,
            "properties": {"price": 9.5, "sku": f"s-{u % 1000}", "qty": 1},
            "context": {"library": {"name": "bench", "version": "1"}},
        })
    return gzip.compress(json.dumps({"batch": msgs, "sentAt": now}).encode(), 5)


class Conn:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol."""

    def __init__(self, host, port, auth):
        self.host, self.port, self.auth = host, port, auth
        self.r = self.w = None

    async def open(self):
        self.r, self.w = await asyncio.open_connection(self.host, self.port)

    async def post(self, path, body, gz=True):
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Basic {self.auth}\r\nContent-Type: application/json\r\n"
                + ("Content-Encoding: gzip\r\n" if gz else "")
                + f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.w.write(head + body)
        await self.w.drain()
        status_line = await self.r.readline()
        length = 0
        while True:
            line = await self.r.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.lower() == "content-length":
                length = int(v)
        await self.r.readexactly(length)
        return int(status_line.split()[1])


def flight_q1(uri):
    import adbc_driver_flightsql.dbapi as flight
    conn = flight.connect(uri)

    def q():
        t = time.perf_counter()
        with conn.cursor() as c:
            c.execute("SELECT segment_size('q1')")
            n = c.fetchone()[0]
        return (time.perf_counter() - t) * 1000, n
    return conn, q


async def load(host, port, auth, bodies, connections, seconds, batch):
    """Every body is sent once (all messages distinct); stops at `seconds` or when all are sent."""
    lat, codes = [], {}
    stop = time.perf_counter() + seconds
    counter = [0]

    async def client(k):
        c = Conn(host, port, auth)
        await c.open()
        while time.perf_counter() < stop and counter[0] < len(bodies):
            body = bodies[counter[0]]
            counter[0] += 1
            t = time.perf_counter()
            try:
                st = await c.post("/v1/batch", body)
            except (ConnectionError, asyncio.IncompleteReadError):
                codes["conn_error"] = codes.get("conn_error", 0) + 1
                return
            lat.append((time.perf_counter() - t) * 1000)
            codes[st] = codes.get(st, 0) + 1
            if st == 429:
                await asyncio.sleep(1)
        c.w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(connections)))
    took = time.perf_counter() - t0
    return lat, codes, took


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segdb", required=True)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--work")
    ap.add_argument("--bodies", type=int, default=0, help="distinct request bodies (default: enough for 150k events/s)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "collector.md"))
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="segdb-collector-bench-")
    db, ring = os.path.join(work, "db"), os.path.join(work, "keyring.json")
    env = dict(os.environ, SEGDB_DATA=db, SEGDB_KEYRING=ring)
    env.pop("SEGDB_LOG", None)
    shutil.rmtree(db, ignore_errors=True)
    if os.path.exists(ring):
        os.remove(ring)
    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "profiles.parquet")):
        sh([args.segdb, "generate", "--users", str(args.users), "--days", "30", "--out", data,
            "--end", time.strftime("%Y-%m-%d", time.gmtime())], env)
    print("loading the base dataset …", flush=True)
    for kind in ("profiles", "events"):
        files = sorted(os.path.join(data, f) for f in os.listdir(data) if f.startswith(kind))
        sh([args.segdb, "ingest", kind, *files], env)
    sh([args.segdb, "sql", "-c", f"CREATE SEGMENT q1 AS {Q1}"], env)
    key = sh([args.segdb, "sql", "--format", "csv", "-c", "CREATE SOURCE bench"], env).splitlines()[-1].split(",")[1]
    auth = base64.b64encode(f"{key}:".encode()).decode()

    serve = subprocess.Popen([args.segdb, "serve", "--flight", "127.0.0.1:0", "--http", "127.0.0.1:0",
                              "--insecure-no-auth", "--config", os.path.join(work, "none.toml")],
                             env=env, stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "w"), text=True)
    try:
        flight_line = serve.stdout.readline().strip()
        http_line = serve.stdout.readline().strip()
        flight_uri = "grpc://" + flight_line.rsplit("://", 1)[1]
        host, port = http_line.rsplit("://", 1)[1].rsplit(":", 1)
        port = int(port)
        conn, q1 = flight_q1(flight_uri)
        quiet = [q1()[0] for _ in range(15)]
        print(f"q1 quiet: median {statistics.median(quiet):.1f} ms", flush=True)

        # One client, one message per request, at low load.
        async def single():
            c = Conn(host, port, auth)
            await c.open()
            lat = []
            for i in range(200):
                body = json.dumps({"type": "track", "event": "bench_single", "userId": f"single-{i % 50}",
                                   "messageId": f"single-{i}"}).encode()
                t = time.perf_counter()
                st = await c.post("/v1/track", body, gz=False)
                assert st == 200, st
                lat.append((time.perf_counter() - t) * 1000)
            return lat
        single_lat = asyncio.run(single())
        print(f"single client: p50 {pct(single_lat, .5):.1f} ms p99 {pct(single_lat, .99):.1f} ms", flush=True)

        # Freshness: the statement after an acknowledgement counts the event (a segment needs
        # its event to exist, so one user first, then a second one measured).
        async def fresh(i):
            c = Conn(host, port, auth)
            await c.open()
            st = await c.post("/v1/track", json.dumps({"type": "track", "event": "bench_fresh",
                                                       "userId": f"fresh-{i}", "messageId": f"fresh-{i}"}).encode(), gz=False)
            assert st == 200
        asyncio.run(fresh(0))
        sh([args.segdb, "sql", "-c", "CREATE SEGMENT fresh AS DID 'bench_fresh'"], env)
        asyncio.run(fresh(1))
        with conn.cursor() as c:
            c.execute("SELECT segment_size('fresh')")
            fresh_n = c.fetchone()[0] - 1
        print(f"freshness: segment_size right after the 200 = {fresh_n}", flush=True)

        n_bodies = args.bodies or max(2000, args.seconds * 150_000 // args.batch)
        print(f"generating {n_bodies} request bodies ({n_bodies * args.batch:,} distinct messages) …", flush=True)
        bodies = [batch_body(f"b{k}", k, args.batch) for k in range(n_bodies)]
        under, peak = [], [0]
        done = threading.Event()

        def probe():
            while not done.is_set():
                under.append(q1()[0])
                peak[0] = max(peak[0], rss_kb(serve.pid))
                time.sleep(0.5)
        th = threading.Thread(target=probe)
        th.start()
        lat, codes, took = asyncio.run(load(host, port, auth, bodies, args.connections, args.seconds, args.batch))
        done.set()
        th.join()
        ok = codes.get(200, 0)
        events = ok * args.batch
        print(f"load: {ok} requests acknowledged in {took:.1f} s = {events / took:,.0f} events/s; "
              f"codes {codes}; p50 {pct(lat, .5):.0f} ms p99 {pct(lat, .99):.0f} ms; "
              f"q1 under load median {statistics.median(under):.1f} ms; peak RSS {peak[0] / 1024:.0f} MB", flush=True)
        with conn.cursor() as c:
            c.execute("SELECT count(*) FROM events WHERE event = 'bench_view'")
            stored = c.fetchone()[0]
        conn.close()
    finally:
        serve.kill()
        serve.wait()

    cores = os.cpu_count()
    lines = [
        "# Collector throughput and latency",
        "",
        f"`python benches/collector.py --segdb {args.segdb} --connections {args.connections} --batch {args.batch} "
        f"--seconds {args.seconds} --users {args.users}` on {cores} cores, the load generator (Python asyncio, one "
        "process) on the same machine. Every request is a gzip batch answered only after its commit.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| single client, one message per request: ack latency p50 / p99 | {pct(single_lat, .5):.1f} / {pct(single_lat, .99):.1f} ms |",
        f"| {args.connections} keep-alive clients × batches of {args.batch}: events acknowledged | {events:,} in {took:.1f} s = **{events / took:,.0f} events/s** |",
        f"| requests acknowledged / answered 429 / 503 / connection errors | {ok:,} / {codes.get(429, 0)} / {codes.get(503, 0)} / {codes.get('conn_error', 0)} |",
        f"| ack latency under load p50 / p99 | {pct(lat, .5):.0f} / {pct(lat, .99):.0f} ms |",
        f"| distinct events stored (every message is sent once and is distinct) | {stored:,} (acknowledged: {events:,}) |",
        f"| server peak RSS during the load | {peak[0] / 1024:.0f} MB |",
        f"| q1 at {args.users:,} users, quiet / under load (median) | {statistics.median(quiet):.1f} / {statistics.median(under):.1f} ms ({statistics.median(under) / statistics.median(quiet):.1f}×) |",
        f"| freshness: `segment_size` in the statement after the 200 | {fresh_n} of 1 |",
        "",
        "Anchors: RudderStack acknowledges after a Postgres write at about 1,700–3,000 events/s per node; "
        "Segment limits a source to about 1,000 requests/s.",
        "",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
