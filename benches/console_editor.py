"""The console at 1M users: how soon the editor's size answers, and how soon the first page loads.

Starts `segdb serve --http` (release) on a loaded database, logs in through `/api/login`, then
times `POST /api/sql` with `SELECT segment_size_of('<q1>')` as the editor sends it after each
pause in typing (the first call cold, then warm; median and p95), and `GET /` with its two
assets. The editor waits 200 ms after the last keystroke before asking, so what a user sees is
200 ms plus the answer. Results to benches/results/console.md.

usage: python benches/console_editor.py --segdb target/release/segdb --data DB --keyring K [--runs 50]
"""

import argparse
import http.cookiejar
import json
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request

Q1 = "DID 'purchase' AT LEAST 3 TIMES IN THE LAST 30 DAYS AND PROFILE country = 'DE'"
EDITS = [
    "DID 'purchase' IN THE LAST 30 DAYS",
    "DID 'purchase' AT LEAST 3 TIMES IN THE LAST 30 DAYS",
    Q1,
    "DID 'add_to_cart' IN THE LAST 7 DAYS AND NOT DID 'purchase' IN THE LAST 7 DAYS",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segdb", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--keyring", required=True)
    ap.add_argument("--runs", type=int, default=50)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="segdb-console-bench-")
    config = os.path.join(work, "segdb.toml")
    subprocess.run([a.segdb, "user", "add", "bench", "--role", "analyst", "--config", config],
                   input="bench-pw-1\n", text=True, check=True, capture_output=True)
    env = dict(os.environ, SEGDB_DATA=a.data, SEGDB_KEYRING=a.keyring, SEGDB_LOG="error")
    srv = subprocess.Popen([a.segdb, "serve", "--flight", "127.0.0.1:0", "--http", "127.0.0.1:0", "--config", config],
                           stdout=subprocess.PIPE, text=True, env=env)
    try:
        srv.stdout.readline()
        base = srv.stdout.readline().strip().rsplit(" on ", 1)[1]
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def post(path, body, csrf=None):
            req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", **({"X-CSRF-Token": csrf} if csrf else {})})
            with opener.open(req) as r:
                return json.loads(r.read())

        csrf = post("/api/login", {"user": "bench", "password": "bench-pw-1"})["csrf"]

        def size(expr):
            t = time.perf_counter()
            r = post("/api/sql", {"sql": "SELECT segment_size_of('{}')".format(expr.replace("'", "''"))}, csrf)
            return (time.perf_counter() - t) * 1000, r["rows"][0][0]

        cold_ms, q1_size = size(Q1)
        warm = []
        for i in range(a.runs):
            ms, _ = size(EDITS[i % len(EDITS)])
            warm.append(ms)
        q1_warm = [size(Q1)[0] for _ in range(a.runs)]
        page = []
        for _ in range(20):
            t = time.perf_counter()
            for p in ("/", "/assets/app.js", "/assets/app.css"):
                with opener.open(base + p) as r:
                    r.read()
            page.append((time.perf_counter() - t) * 1000)
    finally:
        srv.terminate()
        srv.wait()
    p95 = lambda xs: sorted(xs)[int(0.95 * (len(xs) - 1))]
    lines = [
        "# The console's editor and first page",
        "",
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, release `segdb serve --http`, the database of {os.path.basename(os.path.dirname(os.path.abspath(a.data)))}/{os.path.basename(a.data)}; "
        f"q1 = `{Q1}` ({q1_size:,} members); `POST /api/sql` with `SELECT segment_size_of(…)` over loopback.",
        "",
        "| what | ms |",
        "|---|---:|",
        f"| q1 size, first call after start (cold) | {cold_ms:.1f} |",
        f"| q1 size, warm: median / p95 of {a.runs} | {statistics.median(q1_warm):.1f} / {p95(q1_warm):.1f} |",
        f"| an editor's successive expressions (4 kinds), median / p95 of {a.runs} | {statistics.median(warm):.1f} / {p95(warm):.1f} |",
        f"| `GET /` + app.js + app.css, median of 20 | {statistics.median(page):.1f} |",
        "",
        "The editor asks 200 ms after the last keystroke, so the size shows about 200 ms + the answer "
        f"after it: {200 + statistics.median(q1_warm):.0f} ms warm for q1 (target: within 300 ms).",
    ]
    out = "\n".join(lines) + "\n"
    print(out)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "console.md"), "w") as f:
        f.write(out)


if __name__ == "__main__":
    main()
