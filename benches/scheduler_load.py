"""Does the scheduler starve queries, and does a server under query load still refresh on time?

One `segdb serve` over an existing database (e.g. the 1M-user one benches/segments_vs_peers.py
leaves in its --work dir). Two phases of --seconds each, with --clients ADBC clients looping a
query mix (a live segment size, a GROUP BY over events, a profile lookup):

  A. no materialised segment: the query latencies alone;
  B. --segments materialised segments with REFRESH EVERY '--every', refreshed by the server's
     scheduler ([scheduler] max_concurrent = --max-concurrent) while the same load runs.

Reports query latency percentiles in both phases, and for every scheduled refresh of phase B
how late it started and finished after its fire time (segment_history: as_of is the fire time,
refreshed_at the commit, took_ms the work), plus fire times that got no refresh. Writes
benches/results/scheduler-load.md.

usage: python benches/scheduler_load.py --segdb target/release/segdb --db DIR --keyring FILE
"""

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql

DEFINITIONS = [
    "DID 'purchase' AT LEAST 3 TIMES IN THE LAST 30 DAYS AND PROFILE country = 'DE'",
    "DID 'add_to_cart' IN THE LAST 7 DAYS AND NOT DID 'purchase' IN THE LAST 7 DAYS",
    "DID 'add_to_cart' THEN 'purchase' WITHIN 1 HOURS IN THE LAST 30 DAYS",
    "DID 'view_item' AT LEAST 5 TIMES IN THE LAST 14 DAYS AND NOT DID 'add_to_cart' IN THE LAST 14 DAYS",
    "DID 'app_open' AT LEAST 8 TIMES IN THE LAST 30 DAYS",
    "PROFILE plan IN ('plus', 'premium') AND DID 'view_item' IN THE LAST 3 DAYS",
]
QUERIES = [
    "SELECT segment_size('load_live')",
    "SELECT event, count(*) FROM events WHERE ts >= now() - INTERVAL '7 days' GROUP BY event",
    "SELECT country, count(*) FROM profiles WHERE plan = 'premium' GROUP BY country",
]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def load(addr, seconds, clients):
    """Loop the query mix from `clients` threads for `seconds`; latencies in ms per query."""
    lat = {q: [] for q in QUERIES}
    stop = time.time() + seconds
    errors = []

    def worker(k):
        try:
            with flight_sql.connect(f"grpc://{addr}") as conn, conn.cursor() as cur:
                i = k
                while time.time() < stop:
                    q = QUERIES[i % len(QUERIES)]
                    t = time.perf_counter()
                    cur.execute(q)
                    cur.fetchall()
                    lat[q].append((time.perf_counter() - t) * 1000)
                    i += 1
        except Exception as e:  # reported, and fails the run
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        sys.exit(f"query load failed: {errors[:3]}")
    return lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segdb", default="target/release/segdb")
    ap.add_argument("--db", required=True)
    ap.add_argument("--keyring", required=True)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--segments", type=int, default=6)
    ap.add_argument("--every", default="10 seconds")
    ap.add_argument("--max-concurrent", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "scheduler-load.md"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="segdb-sched-bench-")
    config = os.path.join(work, "segdb.toml")
    with open(config, "w") as f:
        f.write(f"[scheduler]\nmax_concurrent = {a.max_concurrent}\n")
    env = dict(os.environ, SEGDB_DATA=a.db, SEGDB_KEYRING=a.keyring, SEGDB_LOG="error")
    server = subprocess.Popen([a.segdb, "serve", "--flight", "127.0.0.1:0", "--insecure-no-auth", "--config", config],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    names = [f"load_m{i}" for i in range(a.segments)]
    try:
        addr = server.stdout.readline().strip().rsplit("://", 1)[1]
        with flight_sql.connect(f"grpc://{addr}") as conn, conn.cursor() as cur:
            cur.execute(f"CREATE OR REPLACE SEGMENT load_live AS {DEFINITIONS[0]}")
            cur.fetchall()
            for n in names:
                cur.execute(f"DROP SEGMENT IF EXISTS {n}")
                cur.fetchall()
        print(f"phase A: {a.clients} clients, {a.seconds} s, no scheduled refreshes", flush=True)
        base = load(addr, a.seconds, a.clients)
        with flight_sql.connect(f"grpc://{addr}") as conn, conn.cursor() as cur:
            for i, n in enumerate(names):
                cur.execute(f"CREATE MATERIALIZED SEGMENT {n} REFRESH EVERY '{a.every}' AS "
                            f"{DEFINITIONS[i % len(DEFINITIONS)]}")
                cur.fetchall()
        started = datetime.datetime.now(datetime.timezone.utc)
        print(f"phase B: the same load with {a.segments} segments refreshing every {a.every}", flush=True)
        busy = load(addr, a.seconds, a.clients)
        ended = datetime.datetime.now(datetime.timezone.utc)
        refreshes = []
        with flight_sql.connect(f"grpc://{addr}") as conn, conn.cursor() as cur:
            for n in names:
                cur.execute(f"SELECT as_of, refreshed_at, trigger, status, took_ms FROM segment_history('{n}')")
                for as_of, at, trig, status, took in cur.fetchall():
                    if trig == "schedule" and started <= as_of <= ended:
                        refreshes.append((n, as_of, at, status, took))
            for n in names:
                cur.execute(f"DROP SEGMENT {n}")
                cur.fetchall()
            cur.execute("DROP SEGMENT load_live")
            cur.fetchall()
    finally:
        server.kill()
        server.wait()
    every_s = float(a.every.split()[0]) * (60 if "minute" in a.every else 1)
    fires = int(a.seconds // every_s) * a.segments
    done = [r for r in refreshes if r[3] == "ok"]
    finish = [(r[2] - r[1]).total_seconds() * 1000 for r in done]
    start_late = [f - (r[4] or 0) for f, r in zip(finish, done)]
    took = [r[4] or 0 for r in done]
    lines = [
        f"# Scheduled refreshes under query load ({a.clients} ADBC clients, {a.seconds} s per phase)",
        "",
        f"{time.strftime('%Y-%m-%d')}, release build, 2 cores, database `{os.path.basename(a.db.rstrip('/'))}`; "
        f"{a.segments} materialised segments REFRESH EVERY '{a.every}', [scheduler] max_concurrent = {a.max_concurrent}.",
        "",
        "Query latency, milliseconds (p50 / p95 / p99, and queries completed):",
        "",
        "| query | A: no refreshes | B: with refreshes |",
        "|---|---|---|",
    ]
    for q in QUERIES:
        x, y = base[q], busy[q]
        lines.append(f"| `{q}` | {pct(x, 50):.1f} / {pct(x, 95):.1f} / {pct(x, 99):.1f} ({len(x)}) | "
                     f"{pct(y, 50):.1f} / {pct(y, 95):.1f} / {pct(y, 99):.1f} ({len(y)}) |")
    allx = [v for q in QUERIES for v in base[q]]
    ally = [v for q in QUERIES for v in busy[q]]
    lines += [
        f"| all | {pct(allx, 50):.1f} / {pct(allx, 95):.1f} / {pct(allx, 99):.1f} ({len(allx)}) | "
        f"{pct(ally, 50):.1f} / {pct(ally, 95):.1f} / {pct(ally, 99):.1f} ({len(ally)}) |",
        "",
        f"Refreshes in phase B: {len(done)} ok, {len(refreshes) - len(done)} failed, of ~{fires} fire times "
        f"({fires - len(refreshes)} fire times without a refresh: a segment still refreshing is not started again, "
        "and a later fire time supersedes a missed one).",
        "",
        "| refresh timing, ms | p50 | p95 | max |",
        "|---|---|---|---|",
        f"| start after fire time | {pct(start_late, 50):.0f} | {pct(start_late, 95):.0f} | {max(start_late, default=float('nan')):.0f} |",
        f"| commit after fire time | {pct(finish, 50):.0f} | {pct(finish, 95):.0f} | {max(finish, default=float('nan')):.0f} |",
        f"| work (took_ms) | {pct(took, 50):.0f} | {pct(took, 95):.0f} | {max(took, default=float('nan')):.0f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with open(a.out, "w") as f:
        f.write(text)
    if not done:
        sys.exit("no scheduled refresh ran under load")


if __name__ == "__main__":
    main()
