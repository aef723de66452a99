"""`import segdb` vs `import duckdb`: a whole events table into a pyarrow Table, in-process.

segdb reads its Delta table (pseudonymised ids, the files it wrote at ingest) through
`db.sql(...).arrow()` (the Arrow C stream interface); DuckDB reads the generator's Parquet files
that were ingested, with `duckdb.sql(...).arrow()`. Same rows, same columns (segdb's `user_id` is
the pseudonym, DuckDB's the raw id: strings of similar length). Warm, median of --runs, with the
ratio; results to benches/results/python_arrow.md.

Needs the package built optimised: `pip install ./python` (the release profile; not the tests'
dev build).

usage: python benches/python_arrow.py [--segdb target/release/segdb] [--users 1000000] [--days 30]
       [--runs 5] [--work DIR]
"""

import argparse
import datetime
import glob
import os
import statistics
import subprocess
import sys
import time

import duckdb
import segdb

COLUMNS = "user_id, event, ts, session_id, product_id, category, price"


def timed(f, runs):
    f()  # warm: files in the page cache, the table's log read
    times = []
    rows = None
    for _ in range(runs):
        t = time.perf_counter()
        table = f()
        if hasattr(table, "read_all"):  # a RecordBatchReader: read it whole, as a Table is
            table = table.read_all()
        times.append(time.perf_counter() - t)
        rows = table.num_rows
        del table
    return statistics.median(times), rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segdb", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "segdb"))
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/segdb-python-bench"))
    a = ap.parse_args()
    data = os.path.join(a.work, "data")
    db_dir = os.path.join(a.work, "db")
    keyring = os.path.join(a.work, "segdb.keyring")
    if not os.path.exists(os.path.join(data, "events-00000.parquet")):
        subprocess.run([a.segdb, "generate", "--users", str(a.users), "--days", str(a.days), "--out", data], check=True)
    if not os.path.exists(db_dir):
        env = dict(os.environ, SEGDB_DATA=db_dir, SEGDB_KEYRING=keyring)
        subprocess.run([a.segdb, "ingest", "events", *sorted(glob.glob(os.path.join(data, "events-*.parquet")))], check=True, env=env)
    db = segdb.connect(db_dir, keyring=keyring)
    files = os.path.join(data, "events-*.parquet")
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    seg_s, seg_rows = timed(lambda: db.sql(f"SELECT {COLUMNS} FROM events").arrow(), a.runs)
    duck_s, duck_rows = timed(lambda: con.sql(f"SELECT {COLUMNS} FROM read_parquet('{files}')").arrow(), a.runs)
    assert seg_rows == duck_rows, (seg_rows, duck_rows)
    ratio = seg_s / duck_s
    lines = [
        "# `db.sql(...).arrow()`: segdb vs DuckDB in Python",
        "",
        f"{datetime.date.today()}, {os.cpu_count()} cores, segdb {segdb.__version__} (release), DuckDB {duckdb.__version__}; "
        f"{seg_rows:,} events ({a.users:,} users × {a.days} days), columns `{COLUMNS}`; warm, median of {a.runs}.",
        "",
        "| reader | seconds | events/s | ratio to DuckDB |",
        "|---|---:|---:|---:|",
        f"| segdb `db.sql(…).arrow()` (Delta table) | {seg_s:.3f} | {seg_rows / seg_s:,.0f} | {ratio:.2f}× |",
        f"| DuckDB `duckdb.sql(…).arrow()` (the Parquet files) | {duck_s:.3f} | {duck_rows / duck_s:,.0f} | 1.00× |",
        "",
        f"Target (issue 23): segdb no slower than 1.2× DuckDB — {'met' if ratio <= 1.2 else 'not met'}.",
    ]
    out = "\n".join(lines) + "\n"
    print(out)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "python_arrow.md")
    with open(path, "w") as f:
        f.write(out)
    db.close()


if __name__ == "__main__":
    sys.exit(main())
