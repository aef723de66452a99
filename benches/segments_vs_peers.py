"""Segment queries: segdb (index path and forced scan path) vs DuckDB and chDB on the same files.

Generates the dataset with `segdb generate`, ingests it (timed), defines the segments, then runs
each query warm, median of --runs, and writes a markdown table with ratios to benches/results/.

usage: python benches/segments_vs_peers.py [--segdb target/release/segdb] [--users 1000000] [--days 30] [--runs 5]
"""

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

AS_OF = "2026-02-01T00:00:00Z"
Q = {
    "q1": ("DID 'purchase' AT LEAST 3 TIMES IN THE LAST 30 DAYS AND PROFILE country = 'DE'",
           """SELECT count(*) FROM (SELECT user_id FROM events WHERE event = 'purchase' AND ts >= TIMESTAMPTZ '2026-01-02 00:00:00+00' AND ts < TIMESTAMPTZ '2026-02-01 00:00:00+00'
              GROUP BY user_id HAVING count(*) >= 3) e JOIN profiles p USING (user_id) WHERE p.country = 'DE'"""),
    "q2": ("DID 'add_to_cart' IN THE LAST 7 DAYS AND NOT DID 'purchase' IN THE LAST 7 DAYS",
           """SELECT count(*) FROM (SELECT DISTINCT user_id FROM events WHERE event = 'add_to_cart' AND ts >= TIMESTAMPTZ '2026-01-25 00:00:00+00' AND ts < TIMESTAMPTZ '2026-02-01 00:00:00+00'
              EXCEPT SELECT DISTINCT user_id FROM events WHERE event = 'purchase' AND ts >= TIMESTAMPTZ '2026-01-25 00:00:00+00' AND ts < TIMESTAMPTZ '2026-02-01 00:00:00+00') t"""),
    "q4": ("(PROFILE plan IN ('plus', 'premium') AND DID 'view_item' AT LEAST 3 TIMES IN THE LAST 14 DAYS "
           "AND DID 'add_to_cart' THEN 'purchase' WITHIN 1 HOURS IN THE LAST 30 DAYS AND NOT IN SEGMENT q2 AND PROFILE device = 'mobile') "
           "OR DID 'newsletter_signup' IN THE LAST 7 DAYS",
           None),
}


def duck_q4():
    w = lambda d: f"ts >= TIMESTAMPTZ '{d}' AND ts < TIMESTAMPTZ '2026-02-01 00:00:00+00'"
    return f"""SELECT count(*) FROM (
      ((SELECT user_id FROM profiles WHERE plan IN ('plus', 'premium'))
       INTERSECT (SELECT user_id FROM events WHERE event = 'view_item' AND {w('2026-01-18 00:00:00+00')} GROUP BY user_id HAVING count(*) >= 3)
       INTERSECT (SELECT DISTINCT x.user_id FROM (SELECT user_id, ts FROM events WHERE event = 'add_to_cart' AND {w('2026-01-02 00:00:00+00')}) x
                  JOIN (SELECT user_id, ts FROM events WHERE event = 'purchase' AND {w('2026-01-02 00:00:00+00')}) y
                  ON x.user_id = y.user_id AND x.ts < y.ts AND y.ts <= x.ts + INTERVAL 1 HOUR)
       EXCEPT ({Q['q2'][1].replace('SELECT count(*) FROM (', '').rsplit(') t', 1)[0]})
       INTERSECT (SELECT user_id FROM profiles WHERE device = 'mobile'))
      UNION (SELECT DISTINCT user_id FROM events WHERE event = 'newsletter_signup' AND {w('2026-01-25 00:00:00+00')})) t"""


def run(cmd, **kw):
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return out, time.perf_counter() - t


def peak_rss_run(cmd, env):
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    return time.perf_counter() - t, int(m.group(1)) // 1024 if m else None


def segdb_times(segdb, env, statements, runs):
    """Run statements in one process; return the per-statement times (ms) of the measured runs."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("\n".join(statements))
        path = f.name
    out, _ = run([segdb, "sql", "--timing", "--format", "csv", "-f", path], env=env)
    os.unlink(path)
    return [float(m) for m in re.findall(r"^Time: ([0-9.]+) ms", out.stderr, re.M)], out.stdout


def median_timed(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segdb", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "segdb"))
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="segdb-bench-")
    src, data, keyring = f"{work}/src", f"{work}/db", f"{work}/bench.keyring"
    env = dict(os.environ, SEGDB_DATA=data, SEGDB_KEYRING=keyring, SEGDB_LOG="error")
    notes = []

    if not os.path.exists(f"{src}/profiles.parquet"):
        _, t = run([a.segdb, "generate", "--users", str(a.users), "--days", str(a.days), "--out", src, "--seed", "1"])
        size = sum(os.path.getsize(os.path.join(src, f)) for f in os.listdir(src))
        notes.append(f"generate: {t:.1f} s, {size / 1e6:.0f} MB of Parquet")
    events = sorted(f"{src}/{f}" for f in os.listdir(src) if f.startswith("events-"))
    if not os.path.exists(f"{data}/_segdb/segdb.json"):
        for kind, files in [("profiles", [f"{src}/profiles.parquet"]), ("events", events), ("consent", [f"{src}/consent.parquet"])]:
            t, rss = peak_rss_run([a.segdb, "ingest", kind] + files, env)
            notes.append(f"ingest {kind}: {t:.1f} s, peak RSS {rss} MB")
        t, _ = peak_rss_run([a.segdb, "index", "rebuild"], env)
        notes.append(f"index rebuild from events (for comparison with the incremental build at ingest): {t:.1f} s")

    setup = [f"SET segdb.as_of = '{AS_OF}';"] + [f"CREATE OR REPLACE SEGMENT {k} AS {v[0]};" for k, v in Q.items()]
    run([a.segdb, "sql", "-f", "/dev/stdin"], env=env, input="\n".join(setup))

    results = {}
    for path, toggle in [("segdb (index)", "true"), ("segdb (scan)", "false")]:
        stmts = [f"SET segdb.as_of = '{AS_OF}';", f"SET segdb.use_index = {toggle};"]
        for q in ["q1", "q2", "q3", "q4"]:
            sql = "SELECT * FROM segment_overlap('q1', 'q2');" if q == "q3" else f"SELECT segment_size('{q}');"
            stmts += [sql] * (a.runs + 1)
        times, _ = segdb_times(a.segdb, env, stmts, a.runs)
        times = times[2:]  # the two SETs
        per = a.runs + 1
        results[path] = {q: statistics.median(times[i * per + 1:(i + 1) * per]) for i, q in enumerate(["q1", "q2", "q3", "q4"])}

    import duckdb
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{src}/events-*.parquet')")
    con.execute(f"CREATE VIEW profiles AS SELECT * FROM read_parquet('{src}/profiles.parquet')")
    duck = {"q1": Q["q1"][1], "q2": Q["q2"][1], "q4": duck_q4()}
    con.execute(f"CREATE TABLE s1 AS {Q['q1'][1].replace('SELECT count(*) FROM', 'SELECT user_id FROM', 1)}")
    con.execute(f"CREATE TABLE s2 AS {Q['q2'][1].replace('SELECT count(*) FROM', 'SELECT user_id FROM', 1)}")
    duck["q3"] = "SELECT (SELECT count(*) FROM s1), (SELECT count(*) FROM s2), (SELECT count(*) FROM (SELECT user_id FROM s1 INTERSECT SELECT user_id FROM s2) t)"
    results["DuckDB"] = {q: median_timed(lambda s=s: con.execute(s).fetchall(), a.runs) for q, s in duck.items()}

    try:
        import chdb
        ch = chdb.session.Session() if hasattr(chdb, "session") else None
        def chq(s):
            s = s.replace("TIMESTAMPTZ ", "toDateTime64(").replace("+00'", "', 6, 'UTC')")
            s = s.replace("events", f"file('{src}/events-*.parquet', Parquet)").replace("profiles", f"file('{src}/profiles.parquet', Parquet)")
            s = s.replace("INTERVAL 1 HOUR", "toIntervalHour(1)").replace("USING (user_id)", "ON e.user_id = p.user_id")
            return s
        chs = {q: chq(duck[q]) for q in ["q1", "q2"]}
        run_ch = (lambda s: ch.query(s, "CSV")) if ch else (lambda s: chdb.query(s, "CSV"))
        results["chDB"] = {q: median_timed(lambda s=s: run_ch(s), a.runs) for q, s in chs.items()}
        notes.append("chDB runs q1 and q2 as plain SQL over the same Parquet files (q3/q4 not translated)")
    except ImportError:
        notes.append("chDB not installed (pip install chdb); its column is absent")

    base = results["segdb (index)"]
    lines = [f"# Segment queries: segdb vs peers ({a.users:,} users, {a.days} days)", "",
             f"{datetime.date.today()}, 2 cores. Median of {a.runs} warm runs, milliseconds; ratio = peer / segdb (index).", "",
             "| query | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for q in ["q1", "q2", "q3", "q4"]:
        cells = []
        for name, r in results.items():
            if q not in r:
                cells.append("—")
            elif name == "segdb (index)":
                cells.append(f"{r[q]:.1f}")
            else:
                cells.append(f"{r[q]:.1f} ({r[q] / base[q]:.1f}×)")
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    lines += ["", "Queries:", ""] + [f"- {k}: `{v[0]}`" for k, v in Q.items()] + ["- q3: `segment_overlap('q1', 'q2')` (DuckDB: both segments stored as tables, then the overlap)", ""]
    lines += ["Notes:", ""] + [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(os.path.dirname(__file__), "results", f"segments-{a.users}.md")
    with open(out, "w") as f:
        f.write(text)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
