"""Embedded vs a Ballista cluster on this machine: the same queries over the 20M-event database,
once in-process (`segdb sql`) and once on `segdb scheduler` + 2 `segdb executor`s on 127.0.0.1
(`segdb sql --cluster`). Each query runs --runs times in one process per mode (the first run
is a warm-up); the median is reported with the ratio cluster / embedded. On 2 cores a cluster
cannot be faster: the ratio is the overhead of planning on a scheduler, shuffling through
executors' work dirs and streaming results over Flight.

usage: python benches/cluster.py --segdb target/release/segdb --db DIR --keyring FILE [--runs 4]
       (DIR: e.g. the database benches/segments_vs_peers.py leaves in its --work dir)
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

QUERIES = {
    "scan": "SELECT count(*) AS n, count(DISTINCT event) AS e, max(ts) AS t FROM events",
    "group_by_event": "SELECT event, count(*) AS n, count(DISTINCT uid) AS users FROM events GROUP BY event",
    "group_by_user": "SELECT count(*) FROM (SELECT uid, count(*) AS n FROM events GROUP BY uid) t",
    "join_group_by": "SELECT p.country, count(*) AS n FROM events e JOIN profiles p ON e.uid = p.uid GROUP BY p.country",
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def timed(segdb, env, extra, sql, runs):
    """Run `sql` runs times in one `segdb sql` process; per-statement times from --timing."""
    script = ";\n".join([sql] * runs) + ";"
    out = subprocess.run([segdb, "sql", "--timing", "--format", "csv", *extra, "-c", script],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"segdb sql {extra} failed:\n{out.stderr[-3000:]}")
    times = [float(l.split()[1]) for l in out.stderr.splitlines() if l.startswith("Time: ")]
    return times, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segdb", default="target/release/segdb")
    ap.add_argument("--db", required=True)
    ap.add_argument("--keyring", required=True)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cluster-20M.md"))
    a = ap.parse_args()
    env = dict(os.environ, SEGDB_DATA=a.db, SEGDB_KEYRING=a.keyring)
    env.pop("SEGDB_LOG", None)
    work = tempfile.mkdtemp(prefix="segdb-cluster-bench-")
    procs = []
    try:
        sched = subprocess.Popen([a.segdb, "scheduler", "--bind", "127.0.0.1:0"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(sched)
        addr = sched.stdout.readline().split()[-1]
        for i in range(2):
            port, grpc = free_port(), free_port()
            p = subprocess.Popen([a.segdb, "executor", "--scheduler", addr, "--port", str(port),
                                  "--grpc-port", str(grpc), "--vcores", "2",
                                  "--work-dir", os.path.join(work, f"e{i}")],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            p.stdout.readline()
            procs.append(p)
        time.sleep(1)
        rows = []
        for name, sql in QUERIES.items():
            emb, emb_out = timed(a.segdb, env, [], sql, a.runs)
            clu, clu_out = timed(a.segdb, env, ["--cluster", addr], sql, a.runs)
            same = sorted(emb_out.splitlines()) == sorted(clu_out.splitlines())
            e, c = statistics.median(emb[1:]), statistics.median(clu[1:])
            rows.append((name, e, c, c / e, same))
            print(f"{name}: embedded {e:.1f} ms, cluster {c:.1f} ms ({c / e:.2f}x), same rows: {same}", flush=True)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    with open(a.out, "w") as f:
        f.write("# Embedded vs a 2-executor Ballista cluster on one 2-core machine (1M users, 20M events)\n\n")
        f.write(f"{time.strftime('%Y-%m-%d')}, release build, median of {a.runs - 1} warm runs in one process per mode, "
                "milliseconds; ratio = cluster / embedded (above 1: the cluster's overhead).\n\n")
        f.write("| query | embedded | cluster | ratio | same rows |\n|---|---|---|---|---|\n")
        for name, e, c, r, same in rows:
            f.write(f"| {name} | {e:.1f} | {c:.1f} | {r:.2f}× | {'yes' if same else 'NO'} |\n")
        f.write("\nQueries:\n\n")
        for name, sql in QUERIES.items():
            f.write(f"- {name}: `{sql}`\n")
        f.write("\nBoth modes share the machine's 2 cores, so no speed-up is possible here: the ratio is what "
                "scheduling, shuffle files and Flight transfers cost. See the README for a 1B-event layout.\n")
    print(json.dumps({"out": a.out}))
    if not all(r[4] for r in rows):
        sys.exit("a query gave different rows on the cluster")


if __name__ == "__main__":
    main()
