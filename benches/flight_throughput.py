"""Result streaming throughput of `segdb serve` next to DuckDB reading the same rows in-process.

    python benches/flight_throughput.py --segdb target/release/segdb [--users 1000000] [--days 30]

Generates the dataset (1M users x 30 days = ~20M events by default) into a scratch directory,
ingests it, starts `segdb serve --insecure-no-auth` on a free loopback port, and times
`SELECT * FROM events` fetched over Flight SQL with the ADBC driver (batches consumed as they
arrive, nothing kept), then DuckDB reading the same Parquet files of the Delta table to Arrow
batches in-process. Prints rows/s, MB/s (Arrow buffer bytes) and the ratio, best of --runs.
Needs the test venv (adbc-driver-flightsql, duckdb, pyarrow).
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb

ap = argparse.ArgumentParser()
ap.add_argument("--segdb", required=True)
ap.add_argument("--users", type=int, default=1_000_000)
ap.add_argument("--days", type=int, default=30)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--work", default=None, help="scratch dir (kept if given)")
args = ap.parse_args()

work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="segdb-flight-bench-"))
data, keyring, src = work / "db", work / "bench.keyring", work / "src"
env = dict(os.environ, SEGDB_DATA=str(data), SEGDB_KEYRING=str(keyring), SEGDB_LOG="error")


def run(*cmd):
    subprocess.run([args.segdb, *cmd], env=env, check=True, stdout=subprocess.DEVNULL)


if not (data / "events").exists():
    run("generate", "--users", str(args.users), "--days", str(args.days), "--out", str(src))
    for kind in ["profiles", "events"]:
        files = sorted(str(p) for p in src.glob(f"{kind}*.parquet"))
        run("ingest", kind, *files)

server = subprocess.Popen(
    [args.segdb, "serve", "--flight", "127.0.0.1:0", "--insecure-no-auth"],
    env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
)
try:
    addr = server.stdout.readline().strip().rsplit("://", 1)[1]
    sql = "SELECT * FROM events"

    def flight():
        with flight_sql.connect(f"grpc://{addr}") as conn, conn.cursor() as cur:
            cur.execute(sql)
            reader = cur.fetch_record_batch()
            rows = nbytes = 0
            for b in reader:
                rows += b.num_rows
                nbytes += b.nbytes
            return rows, nbytes

    parquet = str(data / "events" / "**" / "*.parquet")
    con = duckdb.connect()

    def duck():
        reader = con.execute(f"SELECT * FROM read_parquet('{parquet}')").to_arrow_reader(
            1 << 17)
        rows = nbytes = 0
        for b in reader:
            rows += b.num_rows
            nbytes += b.nbytes
        return rows, nbytes

    results = {}
    for name, fn in [("segdb Flight SQL (ADBC, loopback)", flight), ("DuckDB in-process", duck)]:
        best = None
        for _ in range(args.runs):
            t = time.perf_counter()
            rows, nbytes = fn()
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        results[name] = (rows, nbytes, best)
    print(f"| reader | rows | seconds | rows/s | MB/s |")
    print(f"|---|---|---|---|---|")
    for name, (rows, nbytes, dt) in results.items():
        print(f"| {name} | {rows:,} | {dt:.2f} | {rows / dt:,.0f} | {nbytes / dt / 1e6:,.0f} |")
    (fr, fb, ft), (dr, db, dt) = results.values()
    print(f"\nFlight SQL takes {ft / dt:.2f}x DuckDB's time for the same rows"
          f" ({fr:,} vs {dr:,} rows)")
finally:
    server.terminate()
    server.wait(timeout=30)
