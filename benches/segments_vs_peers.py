"""Segment queries: segdb (index path and forced scan path) vs DuckDB and chDB on the same files.

Generates the dataset with `segdb generate`, ingests it (timed), defines the segments, then runs
each query warm, median of --runs, and writes a markdown table with ratios to benches/results/.

usage: python benches/segments_vs_peers.py [--segdb target/release/segdb] [--users 1000000] [--days 30] [--runs 5]
       [--as-of now|midnight] [--work DIR]
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

MIDNIGHT = "2026-02-01T00:00:00Z"  # the generator's default end: windows fall on day boundaries


def queries(as_of):
    """q1–q5 as (segment expression, DuckDB SQL counting the same users) at `as_of` (ISO, UTC)."""
    t = f"TIMESTAMPTZ '{as_of.replace('T', ' ').replace('Z', '+00')}'"
    w = lambda days: f"ts >= {t} - INTERVAL {days} DAY AND ts < {t}"
    q2_users = f"""SELECT DISTINCT user_id FROM events WHERE event = 'add_to_cart' AND {w(7)}
              EXCEPT SELECT DISTINCT user_id FROM events WHERE event = 'purchase' AND {w(7)}"""
    seq = f"""SELECT DISTINCT x.user_id FROM (SELECT user_id, ts FROM events WHERE event = 'add_to_cart' AND {w(30)}) x
                  JOIN (SELECT user_id, ts FROM events WHERE event = 'purchase' AND {w(30)}) y
                  ON x.user_id = y.user_id AND x.ts < y.ts AND y.ts <= x.ts + INTERVAL 1 HOUR"""
    # Set operators nest explicitly: SQL binds INTERSECT tighter than EXCEPT and UNION.
    core = f"""SELECT user_id FROM (
        SELECT user_id FROM (
          (SELECT user_id FROM profiles WHERE plan IN ('plus', 'premium'))
          INTERSECT (SELECT user_id FROM events WHERE event = 'view_item' AND {w(14)} GROUP BY user_id HAVING count(*) >= 3)
          INTERSECT ({seq})
        ) abc EXCEPT ({q2_users})
      ) d INTERSECT (SELECT user_id FROM profiles WHERE device = 'mobile')"""
    q4 = f"""SELECT count(*) FROM (({core})
      UNION (SELECT DISTINCT user_id FROM events WHERE event = 'newsletter_signup' AND {w(7)})) t"""
    return {
        "q1": ("DID 'purchase' AT LEAST 3 TIMES IN THE LAST 30 DAYS AND PROFILE country = 'DE'",
               f"""SELECT count(*) FROM (SELECT user_id FROM events WHERE event = 'purchase' AND {w(30)}
              GROUP BY user_id HAVING count(*) >= 3) e JOIN profiles p USING (user_id) WHERE p.country = 'DE'"""),
        "q2": ("DID 'add_to_cart' IN THE LAST 7 DAYS AND NOT DID 'purchase' IN THE LAST 7 DAYS",
               f"SELECT count(*) FROM ({q2_users}) t"),
        "q4": ("(PROFILE plan IN ('plus', 'premium') AND DID 'view_item' AT LEAST 3 TIMES IN THE LAST 14 DAYS "
               "AND DID 'add_to_cart' THEN 'purchase' WITHIN 1 HOURS IN THE LAST 30 DAYS AND NOT IN SEGMENT q2 AND PROFILE device = 'mobile') "
               "OR DID 'newsletter_signup' IN THE LAST 7 DAYS", q4),
        "q5": ("DID 'add_to_cart' THEN 'purchase' WITHIN 1 HOURS IN THE LAST 30 DAYS", f"SELECT count(*) FROM ({seq}) t"),
    }


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
    ap.add_argument("--as-of", choices=["now", "midnight"], default="now",
                    help="now: data ending today, windows ending at the current time (where users are by default); "
                         "midnight: data ending 2026-02-01, windows on day boundaries")
    ap.add_argument("--work", default=None, help="scratch directory (kept; default: a temp dir, removed)")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="segdb-bench-")
    if a.as_of == "now":
        now = datetime.datetime.now(datetime.timezone.utc)
        end = (now + datetime.timedelta(days=1)).date()
        as_of = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    else:
        end, as_of = datetime.date(2026, 2, 1), MIDNIGHT
    Q = queries(as_of)
    tag = f"{a.users}-{end.isoformat()}"
    src, data, keyring = f"{work}/src-{tag}", f"{work}/db-{tag}", f"{work}/bench.keyring"
    env = dict(os.environ, SEGDB_DATA=data, SEGDB_KEYRING=keyring, SEGDB_LOG="error")
    notes = [f"as_of {as_of} ({'the current time: not a day boundary' if a.as_of == 'now' else 'a UTC midnight'})"]

    if not os.path.exists(f"{src}/profiles.parquet"):
        _, t = run([a.segdb, "generate", "--users", str(a.users), "--days", str(a.days), "--out", src, "--seed", "1",
                    "--end", end.isoformat()])
        size = sum(os.path.getsize(os.path.join(src, f)) for f in os.listdir(src))
        notes.append(f"generate: {t:.1f} s, {size / 1e6:.0f} MB of Parquet")
    events = sorted(f"{src}/{f}" for f in os.listdir(src) if f.startswith("events-"))
    if not os.path.exists(f"{data}/_segdb/segdb.json"):
        import pyarrow.parquet as pq
        n_events = sum(pq.ParquetFile(f).metadata.num_rows for f in events)
        for kind, files in [("profiles", [f"{src}/profiles.parquet"]), ("events", events), ("consent", [f"{src}/consent.parquet"])]:
            t, rss = peak_rss_run([a.segdb, "ingest", kind] + files, env)
            extra = f", {n_events / t / 1e6:.2f}M events/s with pseudonymisation and index upkeep" if kind == "events" else ""
            notes.append(f"ingest {kind}: {t:.1f} s, peak RSS {rss} MB{extra}")
        t, _ = peak_rss_run([a.segdb, "index", "rebuild"], env)
        notes.append(f"index rebuild from events (for comparison with the incremental build at ingest): {t:.1f} s")

    setup = [f"SET segdb.as_of = '{as_of}';"] + [f"CREATE OR REPLACE SEGMENT {k} AS {v[0]};" for k, v in Q.items()]
    run([a.segdb, "sql", "-f", "/dev/stdin"], env=env, input="\n".join(setup))

    names = ["q1", "q2", "q3", "q4", "q5"]
    results, answers = {}, {}
    for path, toggle in [("segdb (index)", "true"), ("segdb (scan)", "false")]:
        stmts = [f"SET segdb.as_of = '{as_of}';", f"SET segdb.use_index = {toggle};"]
        for q in names:
            sql = "SELECT * FROM segment_overlap('q1', 'q2');" if q == "q3" else f"SELECT segment_size('{q}');"
            stmts += [sql] * (a.runs + 1)
        times, out = segdb_times(a.segdb, env, stmts, a.runs)
        times = times[2:]  # the two SETs
        per = a.runs + 1
        results[path] = {q: statistics.median(times[i * per + 1:(i + 1) * per]) for i, q in enumerate(names)}
        answers[path] = out
    # Peak RSS of one segment query (a fresh process: index, identity, timelines loaded).
    t, rss = peak_rss_run([a.segdb, "sql", "-c", f"SET segdb.as_of = '{as_of}'; SELECT segment_size('q1'), segment_size('q5')"], env)
    notes.append(f"one cold process answering q1 and q5: {t:.2f} s, peak RSS {rss} MB")

    import duckdb
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{src}/events-*.parquet')")
    con.execute(f"CREATE VIEW profiles AS SELECT * FROM read_parquet('{src}/profiles.parquet')")
    duck = {q: Q[q][1] for q in ["q1", "q2", "q4", "q5"]}
    con.execute(f"CREATE TABLE s1 AS {Q['q1'][1].replace('SELECT count(*) FROM', 'SELECT user_id FROM', 1)}")
    con.execute(f"CREATE TABLE s2 AS {Q['q2'][1].replace('SELECT count(*) FROM (', 'SELECT user_id FROM (', 1)}")
    duck["q3"] = "SELECT (SELECT count(*) FROM s1), (SELECT count(*) FROM s2), (SELECT count(*) FROM (SELECT user_id FROM s1 INTERSECT SELECT user_id FROM s2) t)"
    results["DuckDB"] = {q: median_timed(lambda s=s: con.execute(s).fetchall(), a.runs) for q, s in duck.items()}
    # The answers agree (segdb's sizes vs DuckDB's counts).
    sizes = [l for l in answers["segdb (index)"].splitlines() if l.strip().isdigit()]
    for q in ["q1", "q2", "q4", "q5"]:
        want = con.execute(Q[q][1]).fetchone()[0]
        k = ["q1", "q2", "q4", "q5"].index(q) * (a.runs + 1)
        got = int(sizes[k]) if k < len(sizes) else None
        notes.append(f"{q}: segdb {got} members, DuckDB {want}" + ("" if got == want else "  ← MISMATCH"))

    try:
        import chdb
        ch = chdb.session.Session() if hasattr(chdb, "session") else None
        def chq(s):
            s = s.replace("TIMESTAMPTZ ", "toDateTime64(").replace("+00'", "', 6, 'UTC')")
            s = re.sub(r"INTERVAL (\d+) DAY", r"toIntervalDay(\1)", s)
            s = s.replace("events", f"file('{src}/events-*.parquet', Parquet)").replace("profiles", f"file('{src}/profiles.parquet', Parquet)")
            s = s.replace("INTERVAL 1 HOUR", "toIntervalHour(1)").replace("USING (user_id)", "ON e.user_id = p.user_id")
            return s
        chs = {q: chq(duck[q]) for q in ["q1", "q2"]}
        run_ch = (lambda s: ch.query(s, "CSV")) if ch else (lambda s: chdb.query(s, "CSV"))
        results["chDB"] = {q: median_timed(lambda s=s: run_ch(s), a.runs) for q, s in chs.items()}
        notes.append("chDB runs q1 and q2 as plain SQL over the same Parquet files (q3–q5 not translated)")
    except ImportError:
        notes.append("chDB not installed (pip install chdb); its column is absent")

    base = results["segdb (index)"]
    lines = [f"# Segment queries: segdb vs peers ({a.users:,} users, {a.days} days, as_of {a.as_of})", "",
             f"{datetime.date.today()}, 2 cores. Median of {a.runs} warm runs, milliseconds; ratio = peer / segdb (index).", "",
             "| query | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for q in names:
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
    out = os.path.join(os.path.dirname(__file__), "results", f"segments-{a.users}-{a.as_of}.md")
    with open(out, "w") as f:
        f.write(text)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
