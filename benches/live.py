"""Live audiences under measurement (DESIGN §15 targets), on one machine whose two cores the
server, the load generators and this script share:

  - freshness: from the collector's 200 for an event to the live segment's new version committed
    (refreshed_at in segment_history), to the profile API answering with it, and to a local
    webhook receiver getting the change — with 10 live segments at --users users;
  - storage: bytes per version of live segments that change by a few users per version, against
    the size of a full version;
  - the profile API: lookups/s and latency (measured at the client, so including the client's
    own time) with 50 materialised segments, by benches/loadgen (a small tokio-only client).

Writes benches/results/live.md with the anchors beside the numbers.

usage: (cd benches/loadgen && cargo build --release)
       python benches/live.py --segdb target/release/segdb \
         --load benches/loadgen/target/release/segdb-loadgen [--users 1000000] [--probes 30] [--work DIR]
"""

import argparse
import base64
import glob
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def sh(cmd, env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return out.stdout


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


# Ten live segments over the generated data, each also entered by every probe user (a probe
# sends 'live_probe'), and forty more materialised segments for the lookups.
LIVE = [
    ("probe", "DID 'live_probe' IN THE LAST 1 DAYS"),
    ("active_7d", "DID ANY EVENT IN THE LAST 7 DAYS"),
    ("buyers_30d", "DID 'purchase' IN THE LAST 30 DAYS OR DID 'live_probe' IN THE LAST 1 DAYS"),
    ("viewers_3x", "DID 'view_item' AT LEAST 3 TIMES IN THE LAST 30 DAYS OR DID 'live_probe'"),
    ("de_active", "PROFILE country = 'DE' AND DID ANY EVENT IN THE LAST 14 DAYS OR DID 'live_probe'"),
    ("cart_no_buy", "DID 'add_to_cart' IN THE LAST 7 DAYS AND NOT DID 'purchase' IN THE LAST 7 DAYS OR DID 'live_probe'"),
    ("recent_1d", "DID ANY EVENT IN THE LAST 1 DAYS"),
    ("loyal", "DID 'purchase' AT LEAST 2 TIMES IN THE LAST 30 DAYS OR DID 'live_probe'"),
    ("fr_or_probe", "PROFILE country = 'FR' OR DID 'live_probe'"),
    ("any_30d", "DID ANY EVENT IN THE LAST 30 DAYS"),
]
STATIC = [(f"static_{i}", f"PROFILE country = '{c}' AND DID ANY EVENT IN THE LAST {d} DAYS")
          for i, (c, d) in enumerate([(c, d) for c in ("DE", "FR", "US", "GB", "ES", "IT", "NL", "PL")
                                      for d in (1, 3, 7, 14, 30)])]


class Receiver(http.server.BaseHTTPRequestHandler):
    arrivals = {}

    def log_message(self, *_):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        now = time.time()
        try:
            payload = json.loads(body)
            for c in payload.get("changes", []):
                Receiver.arrivals.setdefault((payload["version"], c["user_id"]), now)
        except ValueError:
            pass
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segdb", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--probes", type=int, default=30)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--work")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "live.md"))
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="segdb-live-bench-")
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
    print("loading …", flush=True)
    for kind in ("profiles", "events"):
        files = sorted(os.path.join(data, f) for f in os.listdir(data) if f.startswith(kind))
        sh([args.segdb, "ingest", kind, *files], env)
    # The probe event must exist before a definition names it: one, long before every window.
    seed = os.path.join(work, "seed.csv")
    with open(seed, "w") as f:
        f.write("user_id,event,ts\nseed-probe,live_probe,2000-01-01T00:00:00Z\n")
    sh([args.segdb, "ingest", "events", seed], env)
    import duckdb
    ids = [r[0] for r in duckdb.sql(
        f"SELECT user_id FROM '{data}/profiles*.parquet' USING SAMPLE 100000 ROWS").fetchall()]
    ids += [f"never-seen-{i}" for i in range(len(ids) // 10)]
    ids_file = os.path.join(work, "ids.txt")
    with open(ids_file, "w") as f:
        f.write("\n".join(ids))

    recv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=recv.serve_forever, daemon=True).start()
    t = time.time()
    for name, d in STATIC:
        sh([args.segdb, "sql", "-c", f"CREATE MATERIALIZED SEGMENT {name} AS {d}"], env)
    for name, d in LIVE:
        sh([args.segdb, "sql", "-c", f"CREATE MATERIALIZED SEGMENT {name} REFRESH LIVE AS {d}"], env)
    sh([args.segdb, "sql", "-c", "CREATE EXPORT probe_hook FOR SEGMENT probe TO "
        f"'http://127.0.0.1:{recv.server_address[1]}/in' FORMAT webhook FOR PURPOSE 'bench' ON REFRESH"], env)
    print(f"created {len(STATIC) + len(LIVE)} segments in {time.time() - t:.0f} s", flush=True)
    key = sh([args.segdb, "sql", "--format", "csv", "-c", "CREATE SOURCE bench"], env).splitlines()[-1].split(",")[1]
    auth = base64.b64encode(f"{key}:".encode()).decode()
    # Consent for the webhook's purpose, for the probe users only.
    consent = os.path.join(work, "consent.csv")
    with open(consent, "w") as f:
        f.write("user_id,purpose,granted\n")
        for i in range(args.probes):
            f.write(f"probe-{i},bench,true\n")
    sh([args.segdb, "ingest", "consent", consent], env)

    config = os.path.join(work, "segdb.toml")
    with open(config, "w") as f:
        f.write("[live]\nmin_interval = '200 milliseconds'\n")
    serve = subprocess.Popen([args.segdb, "serve", "--flight", "127.0.0.1:0", "--http", "127.0.0.1:0",
                              "--insecure-no-auth", "--config", config], env=env, stdout=subprocess.PIPE,
                             stderr=open(os.path.join(work, "serve.log"), "w"), text=True)
    try:
        serve.stdout.readline()
        base = "http://" + serve.stdout.readline().strip().rsplit("://", 1)[1]

        def get(path):
            try:
                with urllib.request.urlopen(base + path, timeout=10) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                return {"status": e.code}

        # Let the first live refreshes (one per segment at start) finish.
        time.sleep(15)
        snaps = os.path.join(db, "_segdb", "snapshots")
        bytes_before = sum(os.path.getsize(p) for p in glob.glob(os.path.join(snaps, "*.parquet")))
        versions_before = {n: int(sh([args.segdb, "sql", "--format", "csv", "-c",
                                      f"SELECT max(version) FROM segment_history('{n}')"], env).splitlines()[-1] or 0)
                           for n, _ in LIVE}

        commit, lookup, hook, acked = [], [], [], []
        for i in range(args.probes):
            user = f"probe-{i}"
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            body = json.dumps({"type": "track", "userId": user, "event": "live_probe",
                               "messageId": f"probe-{i}-{time.time()}", "timestamp": now}).encode()
            req = urllib.request.Request(base + "/v1/track", data=body, method="POST", headers={
                "Authorization": "Basic " + auth, "Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=30).read()
            t0 = time.time()
            acked.append(t0)
            while True:
                v = get(f"/v1/profiles/{user}/segments")
                if "probe" in v.get("segments", []):
                    lookup.append(time.time() - t0)
                    break
                if time.time() - t0 > 60:
                    sys.exit(f"{user} never entered")
                time.sleep(0.01)
            time.sleep(1.0)
        time.sleep(3)
        # Commit times from the history: the first version after each probe's 200.
        hist = sh([args.segdb, "sql", "--format", "csv", "-c",
                   "SELECT version, CAST(refreshed_at AS BIGINT) FROM segment_history('probe') "
                   "WHERE version IS NOT NULL ORDER BY version"], env).splitlines()[1:]
        committed = {int(r.split(",")[0]): int(r.split(",")[1]) / 1e6 for r in hist}
        # Probes run one at a time and only they change `probe`: probe i is its version v0 + 1 + i.
        v0 = versions_before["probe"]
        for i, t200 in enumerate(acked):
            if v0 + 1 + i in committed:
                commit.append(committed[v0 + 1 + i] - t200)
        probe_changes = sh([args.segdb, "sql", "--format", "csv", "-c",
                            "SELECT count(*) FROM segment_history('probe')"], env)
        # Webhook arrival after each version's commit.
        for (version, _), arrived in Receiver.arrivals.items():
            if version in committed:
                hook.append(arrived - committed[version])
        bytes_after = sum(os.path.getsize(p) for p in glob.glob(os.path.join(snaps, "*.parquet")))
        versions_after = {n: int(sh([args.segdb, "sql", "--format", "csv", "-c",
                                     f"SELECT max(version) FROM segment_history('{n}')"], env).splitlines()[-1] or 0)
                          for n, _ in LIVE}
        new_versions = sum(versions_after[n] - versions_before[n] for n, _ in LIVE)
        full_sizes = {}
        for n in ("active_7d", "any_30d"):
            r = sh([args.segdb, "sql", "--format", "csv", "-c",
                    f"SELECT size FROM segment_history('{n}') WHERE version = 1"], env).splitlines()
            full_sizes[n] = r[-1]
        first_files = sorted(glob.glob(os.path.join(snaps, "*.parquet")), key=os.path.getmtime)
        full_file = max(os.path.getsize(p) for p in first_files[:len(STATIC) + len(LIVE)])

        res = json.loads(subprocess.run([args.load, "--addr", base.split("://", 1)[1], "--ids", ids_file, "--connections", "32",
                                         "--seconds", str(args.seconds)], capture_output=True, text=True,
                                        check=True).stdout)
        ms = lambda xs, p: 1000 * pct(xs, p)
        lines = [
            "# Live audiences: freshness, storage per version, profile API",
            "",
            f"`benches/live.py`, {time.strftime('%Y-%m-%d', time.gmtime())}, {args.users:,} generated users, "
            f"{len(LIVE)} live + {len(STATIC)} manually refreshed materialised segments, one 2-core machine "
            "shared by the server, the load generator and the script. `[live] min_interval = '200 milliseconds'`.",
            "",
            "| measure | segdb | target | anchor |",
            "|---|---|---|---|",
            f"| collector 200 → live version committed, p50 / p99 ({len(commit)} probes) | "
            f"{ms(commit, .5):.0f} / {ms(commit, .99):.0f} ms | ≤ 2 s p99 | Segment real-time audiences: \"seconds to minutes\" |",
            f"| collector 200 → the profile API answers with it, p50 / p99 | "
            f"{ms(lookup, .5):.0f} / {ms(lookup, .99):.0f} ms | — | |",
            f"| version committed → webhook received, p50 / p99 ({len(hook)} deliveries) | "
            f"{ms(hook, .5):.0f} / {ms(hook, .99):.0f} ms | ≤ 1 s | AAM real-time destinations: batches of 1–10 users |",
            f"| bytes per new live version ({new_versions} versions of {len(LIVE)} live segments) | "
            f"{(bytes_after - bytes_before) / max(new_versions, 1):,.0f} B | grows by changes | a full version: up to {full_file:,} B "
            f"(active_7d has {full_sizes['active_7d']} members) |",
            f"| profile API lookups/s (32 connections, 10 % unknown ids) | {res['per_second']:,.0f} | ≥ 20,000 | Segment Profile API: 100 req/s |",
            f"| profile API latency at the client, p50 / p99 / p99.9 | {res['p50_us'] / 1000:.2f} / {res['p99_us'] / 1000:.2f} / "
            f"{res['p999_us'] / 1000:.2f} ms | p99 ≤ 2 ms at the server | Segment Profile API: p95 < 200 ms |",
            "",
            f"Answers by status: {res['status']}. Probe history rows: {probe_changes.splitlines()[-1]}.",
            "",
        ]
        text = "\n".join(lines)
        print(text)
        with open(args.out, "w") as f:
            f.write(text)
    finally:
        serve.terminate()
        serve.wait(30)


if __name__ == "__main__":
    main()
