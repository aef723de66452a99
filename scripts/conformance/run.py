#!/usr/bin/env python3
"""DataFusion sqllogictest conformance of `segdb serve` over Arrow Flight SQL.

Runs the self-contained `test_files/*.slt` of the datafusion-sqllogictest 55.2.0 crate twice:
in-process with the Python `datafusion` package (the baseline: a fresh SessionContext per file,
target_partitions = 4 as DataFusion's runner sets) and through a fresh `segdb serve` per file
with one ADBC Flight SQL connection per file. Both results are normalised the way DataFusion's
runner does (arrowfmt.py) and checked against the expected blocks (slt.py). A record counts
for segdb only if it passes the baseline.

    scripts/conformance/run.py [--segdb BIN] [--jobs 2] [--only GLOB ...] [--check --min 0.99]

Writes benches/results/conformance.md and conformance.json. See scripts/conformance/README.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.dont_write_bytecode = True  # keep scripts/conformance free of __pycache__

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV = Path(os.environ.get("SEGDB_CONFORMANCE_VENV", Path.home() / ".cache/segdb-conformance-venv"))
CACHE = Path(os.environ.get("SEGDB_CONFORMANCE_CACHE", Path.home() / ".cache/segdb-conformance"))
CRATE = "datafusion-sqllogictest"
CRATE_VERSION = "55.2.0"
CRATE_SHA256 = "b270cea4d8c2b2c42773e60164204386fb97d7936736e5f126ac751b86d7dabe"
CRATE_URLS = [
    "https://crates.io/api/v1/crates/%s/%s/download" % (CRATE, CRATE_VERSION),
    "https://static.crates.io/crates/%s/%s-%s.crate" % (CRATE, CRATE, CRATE_VERSION),
]
RUNNER_CONFIG = "target_partitions = 4 (datafusion-sqllogictest's TestContext); nothing else"
SEGDB_PRELUDE = ["SET datafusion.execution.target_partitions = 4"]

# Quoted paths that point outside the crate: DataFusion's repo test data, generated TPC-H data.
EXTERNAL_PATH = re.compile(r"'((?:\.\./|/(?!/|tmp/)|test_files/(?!scratch/))[^']*)'")
# Files whose TestContext registers tables/UDFs/planners in Rust (try_new_for_test_file):
# the records using them fail the baseline too, so they are simply not counted.
RUST_CONTEXT_FILES = {
    "cte.slt", "information_schema_table_types.slt", "information_schema_columns.slt", "map.slt",
    "avro.slt", "dynamic_file.slt", "joins.slt", "range_partitioning.slt", "metadata.slt",
    "arrow_field.slt", "union_function.slt", "aggregate.slt", "dictionary_struct.slt",
    "async_udf.slt", "cast_extension_type_metadata.slt",
}


# ---------------------------------------------------------------- environment

def ensure_venv() -> None:
    """Re-exec inside the pinned venv, creating or updating it first."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    req = HERE / "requirements.txt"
    stamp = VENV / ".segdb-requirements.sha256"
    want = hashlib.sha256(req.read_bytes()).hexdigest()
    py = VENV / "bin" / "python"
    if not py.exists():
        print("== creating the conformance venv at %s" % VENV, flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    if not stamp.exists() or stamp.read_text().strip() != want:
        print("== installing %s" % req, flush=True)
        subprocess.check_call([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "-r", str(req)])
        stamp.write_text(want)
    os.execv(str(py), [str(py), str(Path(__file__).resolve())] + sys.argv[1:])


def corpus_dir() -> Path:
    """test_files of datafusion-sqllogictest 55.2.0: cargo's registry, else the cache, else crates.io."""
    name = "%s-%s" % (CRATE, CRATE_VERSION)
    reg = Path.home() / ".cargo/registry/src"
    if reg.is_dir():
        for d in sorted(reg.glob("*/" + name)):
            if (d / "test_files").is_dir():
                return d
    d = CACHE / name
    if (d / "test_files").is_dir():
        return d
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / (name + ".crate")
    if not archive.exists() or hashlib.sha256(archive.read_bytes()).hexdigest() != CRATE_SHA256:
        import urllib.request

        last = None
        for url in CRATE_URLS:
            try:
                print("== downloading %s" % url, flush=True)
                with urllib.request.urlopen(url, timeout=60) as r:
                    data = r.read()
                break
            except Exception as e:  # noqa: BLE001 - try the next address
                last = e
        else:
            raise SystemExit("cannot download %s: %s" % (name, last))
        if hashlib.sha256(data).hexdigest() != CRATE_SHA256:
            raise SystemExit("%s: checksum mismatch" % name)
        archive.write_bytes(data)
    import tarfile

    with tarfile.open(archive) as t:
        try:
            t.extractall(CACHE, filter="data")
        except TypeError:  # Python without extraction filters
            t.extractall(CACHE)
    return d


def default_segdb() -> str:
    if os.environ.get("SEGDB_BIN"):
        return os.environ["SEGDB_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/segdb-target"))
    # debug first: `cargo test` (scripts/test, CI) keeps it fresh, a release build may be stale
    for p in (target / "debug/segdb", target / "release/segdb", REPO / "target/debug/segdb",
              REPO / "target/release/segdb"):
        if p.exists():
            return str(p)
    return str(target / "debug/segdb")


# ---------------------------------------------------------------- file selection

def _code_lines(text: str) -> str:
    return "\n".join(l for l in text.split("\n") if not l.startswith("#"))


def select_files(root: Path, with_includes: bool):
    """-> (list of runnable relative paths, list of (path, reason) skipped)."""
    import slt

    tf = root / "test_files"
    run, skipped = [], []
    for p in sorted(tf.rglob("*.slt")):
        rel = p.relative_to(tf).as_posix()
        text = p.read_text()
        if rel.startswith("spark/"):
            skipped.append((rel, "spark: needs the runner's Spark session (datafusion-spark, Spark dialect)"))
            continue
        code = _code_lines(text)
        try:
            records = slt.parse(text)
        except slt.ParseError as e:
            skipped.append((rel, "parse error: %s" % e))
            continue
        includes = [r.sql for r in records if r.kind == "include"]
        if includes and not with_includes:
            skipped.append((rel, "uses include (%s)" % ", ".join(sorted(set(includes)))))
            continue
        for inc in includes:
            for part in sorted(p.parent.glob(inc)):
                code += "\n" + _code_lines(part.read_text())
        m = EXTERNAL_PATH.search(code)
        if m:
            skipped.append((rel, "external data: %s" % m.group(1)))
            continue
        run.append(rel)
    return run, skipped


def expand_includes(path: Path, records):
    import slt

    out = []
    for r in records:
        if r.kind == "include":
            for part in sorted(path.parent.glob(r.sql)):
                for sub in slt.parse(part.read_text()):
                    sub.filename = part.name
                    out.append(sub)
        else:
            out.append(r)
    return out


# ---------------------------------------------------------------- engines

def _workspace(base: Path, stem: str) -> tuple[Path, str]:
    """A datafusion-like checkout: <base>/ws/datafusion/sqllogictest with data/ and scratch/."""
    cwd = base / "ws" / "datafusion" / "sqllogictest"
    (cwd / "test_files" / "scratch" / stem).mkdir(parents=True, exist_ok=True)
    return cwd, str(base / "ws").lstrip("/")


def _rows_or_complete(schema, batches, root):
    import arrowfmt
    import slt

    types = "".join(arrowfmt.column_type_char(f.type) for f in schema)
    rows = arrowfmt.batches_to_rows(schema, batches, root)
    if not rows and not types:
        return slt.Output("complete")
    return slt.Output("rows", types=types, rows=rows, arrow_types=[str(f.type) for f in schema])


class Baseline:
    """The Python datafusion package, in this process, on its own thread per record."""

    name = "baseline"

    def __init__(self, cwd: Path, root: str):
        from datafusion import SessionConfig, SessionContext

        os.chdir(cwd)
        self.ctx = SessionContext(SessionConfig().with_target_partitions(4))
        self.root = root
        self.broken = False

    def run(self, sql: str, timeout: float):
        import slt

        box = {}

        def work():
            try:
                df = self.ctx.sql(sql)
                batches = df.collect()
                schema = batches[0].schema if batches else df.schema()
                box["out"] = _rows_or_complete(schema, batches, self.root)
            except Exception as e:  # noqa: BLE001 - any failure is the record's outcome
                msg = str(e)
                if not msg.startswith("DataFusion error: "):
                    msg = "DataFusion error: " + msg
                box["out"] = slt.Output("error", error=msg)

        t = threading.Thread(target=work, daemon=True)
        start = time.monotonic()
        t.start()
        t.join(timeout)
        if t.is_alive():
            self.broken = True  # the context is still busy: stop this file's baseline here
            return slt.Output("timeout", error="baseline took more than %ss" % timeout)
        out = box["out"]
        out.millis = (time.monotonic() - start) * 1000
        return out

    def close(self):
        pass


_FLIGHT_ERR = re.compile(
    r"^(?:[A-Z_]+: )?\[FlightSQL\] (.*) \(([A-Z][A-Za-z]+); ([^()]*)\)(?:\. Vendor code: -?\d+)?\s*$", re.S)


def flight_error_text(e: Exception) -> tuple[str, str]:
    """ADBC's '<STATUS>: [FlightSQL] <server message> (<Code>; <call>)' -> (message, code)."""
    s = str(e)
    m = _FLIGHT_ERR.match(s)
    if m:
        return m.group(1), m.group(2)
    return s, type(e).__name__


class Segdb:
    """`segdb serve` on a fresh data dir, one ADBC Flight SQL connection for the whole file."""

    name = "segdb"

    def __init__(self, binary: str, base: Path, cwd: Path, root: str, timeout: float, prelude=True):
        self.root = root
        self.log = base / "serve.log"
        env = dict(os.environ)
        env.update(SEGDB_DATA=str(base / "db"), SEGDB_KEYRING=str(base / "k.keyring"))
        env.pop("SEGDB_LOG", None)
        # `serve` opens an existing database only: create the fresh one first.
        subprocess.run([binary, "init"], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), check=True)
        self.proc = subprocess.Popen(
            [binary, "serve", "--flight", "127.0.0.1:0", "--insecure-no-auth"],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(self.log, "wb"), start_new_session=True)
        self.uri = self._wait_listening(120)
        import adbc_driver_flightsql.dbapi as flight

        t = str(int(timeout))
        self.conn = flight.connect(self.uri, db_kwargs={
            "adbc.flight.sql.rpc.timeout_seconds.query": t,
            "adbc.flight.sql.rpc.timeout_seconds.fetch": t,
            "adbc.flight.sql.rpc.timeout_seconds.update": t,
        }, autocommit=True)
        self.dead = None
        self.prelude = []
        for sql in (SEGDB_PRELUDE if prelude else []):
            out = self.run(sql, timeout)
            self.prelude.append({"sql": sql, "outcome": out.kind, "error": out.error})

    def _wait_listening(self, secs: float) -> str:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + secs
        buf = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if sel.select(timeout=0.2):
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                m = re.search(rb"Flight SQL on (grpc://[0-9.]+:\d+)", buf)
                if m:
                    # keep draining stdout so the server never blocks on a full pipe
                    threading.Thread(target=self._drain, daemon=True).start()
                    return m.group(1).decode()
        self.stop()
        raise RuntimeError("segdb serve did not start: %s" % self.stderr_tail())

    def _drain(self):
        try:
            while os.read(self.proc.stdout.fileno(), 65536):
                pass
        except OSError:
            pass

    def stderr_tail(self, n: int = 15) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        keep = [l for l in lines if " INFO " not in l]
        return "\n".join(keep[-n:])

    def run(self, sql: str, timeout: float):
        import slt

        if self.dead:
            return slt.Output("error", error=self.dead)
        start = time.monotonic()
        cur = self.conn.cursor()
        try:
            cur.execute(sql)
            tbl = cur.fetch_arrow_table()
            out = _rows_or_complete(tbl.schema, tbl.to_batches(), self.root)
        except Exception as e:  # noqa: BLE001
            msg, code = flight_error_text(e)
            if self.proc.poll() is not None:
                self.dead = "segdb server exited with code %s" % self.proc.returncode
                out = slt.Output("error", error=self.dead)
            elif code == "DeadlineExceeded" or (time.monotonic() - start) > timeout:
                out = slt.Output("timeout", error="segdb: more than %ss (%s)" % (timeout, msg[:200]))
            else:
                if not msg.startswith("DataFusion error: "):
                    msg = "DataFusion error: " + msg
                out = slt.Output("error", error=msg)
        finally:
            try:
                cur.close()
            except Exception:  # noqa: BLE001
                pass
        out.millis = (time.monotonic() - start) * 1000
        return out

    def stop(self):
        try:
            if getattr(self, "conn", None) is not None:
                self.conn.close()
        except Exception:  # noqa: BLE001
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ---------------------------------------------------------------- one file (worker)

def run_records(engine, records, deadline, record_timeout, stop_at=None):
    """-> ({index: (Output, Verdict)}, note)."""
    import slt

    results = {}
    ht = 0
    for idx, rec in enumerate(records):
        if stop_at is not None and idx >= stop_at:
            break
        if rec.kind == "halt":
            break
        if rec.kind == "hash-threshold":
            ht = rec.threshold
            continue
        if rec.kind not in ("statement", "query") or rec.skipped():
            continue
        if time.monotonic() > deadline:
            return results, "file time-box hit before line %d" % rec.line
        out = engine.run(rec.sql, record_timeout)
        results[idx] = (out, slt.check(rec, out, ht))
        if getattr(engine, "broken", False):
            return results, "baseline timed out at line %d; rest of file not run" % rec.line
    return results, ""


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n] + "… (%d more chars)" % (len(s) - n)


def work_file(root: Path, rel: str, opts) -> dict:
    import slt

    path = root / "test_files" / rel
    t0 = time.monotonic()
    records = slt.parse(path.read_text())
    records = expand_includes(path, records)
    stem = Path(rel).stem
    res = {"file": rel, "status": "ok", "notes": []}
    base = Path(tempfile.mkdtemp(prefix="segdb-conf-"))
    try:
        deadline = time.monotonic() + opts.file_timeout
        bcwd, broot = _workspace(base / "b", stem)
        baseline = Baseline(bcwd, broot)
        bres, note = run_records(baseline, records, deadline, opts.record_timeout)
        if note:
            res["notes"].append(note)
        stop_at = (max(bres) + 1) if bres else 0
        tb = time.monotonic()
        scwd, sroot = _workspace(base / "s", stem)
        try:
            seg = Segdb(opts.segdb, base / "s", scwd, sroot, opts.record_timeout, not opts.no_prelude)
        except Exception as e:  # noqa: BLE001
            res["status"] = "segdb did not start"
            res["notes"].append(str(e)[:2000])
            seg = None
        sres = {}
        if seg is not None:
            try:
                res["prelude"] = seg.prelude
                sres, note = run_records(seg, records, deadline, opts.record_timeout, stop_at)
                if note:
                    res["notes"].append(note)
                if seg.dead:
                    res["status"] = "segdb exited"
                    res["notes"].append(seg.dead + "\n" + seg.stderr_tail())
            finally:
                seg.stop()
        res["baseline_secs"] = round(tb - t0, 2)
        res["segdb_secs"] = round(time.monotonic() - tb, 2)
        recs = []
        n_records = n_base = n_seg = 0
        segdb_only = []
        base_fail_reasons = {}
        base_failures = []
        for idx, (bout, bv) in sorted(bres.items()):
            rec = records[idx]
            n_records += 1
            sv = sres.get(idx)
            where = "%s:%d" % (rec.filename or rel, rec.line)
            if not bv.ok:
                base_fail_reasons[bv.reason] = base_fail_reasons.get(bv.reason, 0) + 1
                if len(base_failures) < 20:
                    base_failures.append({"where": where, "reason": bv.reason, "sql": _clip(rec.sql, 300),
                                          "expected": _clip(rec.expected_text(), 300), "got": _clip(bv.got, 300),
                                          "segdb_passes": bool(sv and sv[1].ok)})
                if sv and sv[1].ok:
                    segdb_only.append(where)
                continue
            n_base += 1
            if sv and sv[1].ok:
                n_seg += 1
                continue
            sout, svv = sv if sv else (slt.Output("error", error="not run (file stopped)"), slt.Verdict(False, "not_run"))
            recs.append({
                "where": where, "line": rec.line, "kind": rec.kind, "sql": _clip(rec.sql, 4000),
                "expected": _clip(rec.expected_text(), 4000), "reason": svv.reason,
                "got": _clip(svv.got, 4000), "segdb_ms": round(sout.millis, 1),
                "baseline_ms": round(bout.millis, 1), "expect": rec.expect,
                "error_kind": rec.error_kind, "baseline_arrow_types": bout.arrow_types,
                "segdb_arrow_types": sout.arrow_types,
            })
        res.update(records=n_records, baseline_pass=n_base, segdb_pass=n_seg, regressions=recs,
                   segdb_only_pass=segdb_only, baseline_fail_reasons=base_fail_reasons,
                   baseline_failures=base_failures)
    except Exception as e:  # noqa: BLE001
        res["status"] = "runner error"
        res["notes"].append("%s: %s" % (type(e).__name__, e))
        res.setdefault("records", 0)
        res.setdefault("baseline_pass", 0)
        res.setdefault("segdb_pass", 0)
        res.setdefault("regressions", [])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    res["secs"] = round(time.monotonic() - t0, 2)
    return res


# ---------------------------------------------------------------- categories

DELIBERATE = "deliberate"


def categorize(file_results) -> None:
    """Give every regression a `category` (and `cascade` when an earlier one in its file failed)."""
    for fr in file_results:
        seen_failed_stmt = False
        for r in fr.get("regressions", []):
            r["category"], r["deliberate"] = _category(r)
            r["cascade"] = seen_failed_stmt and _looks_like_cascade(r)
            if r["kind"] == "statement" and r["expect"] != "error":
                seen_failed_stmt = True


def _looks_like_cascade(r) -> bool:
    g = r["got"]
    return bool(re.search(r"not found|does not exist|No field named|Schema error", g))


def _category(r):
    """-> (cause, whether it follows from a deliberate segdb choice)."""
    got, exp, sql, reason = r["got"], r["expected"], r["sql"], r["reason"]
    low_sql = sql.lower().lstrip()
    catalog = "segdb" in got and re.search(r"datafusion\\?\.|datafusion ", exp)
    if reason == "timeout":
        return "timeout (> record time-box)", False
    if reason == "not_run":
        return "not run: file stopped early (time-box or server exit)", False
    if "segdb server exited" in got:
        return "segdb server exited mid-file", False
    if reason == "types_mismatch":
        m = re.match(r"types (\S*) \(expected (\S*)\)", got)
        if m and len(m.group(1)) == len(m.group(2)):
            diffs = [(g, e) for g, e in zip(m.group(1), m.group(2)) if g != e]
            bt = r.get("baseline_arrow_types") or []
            coded = [i for i, (g, e) in enumerate(zip(m.group(1), m.group(2))) if g != e
                     and i < len(bt) and re.match(r"dictionary|run_end_encoded", bt[i])]
            if diffs and len(coded) == len(diffs):
                return "dictionary / run-end-encoded column sent decoded (wire schema): type ? arrives as its value type", True
        return "column types differ", False
    if reason in ("unexpected_error", "error_mismatch"):
        if "arrow/ipc: unknown error while reading" in got:
            return "ADBC driver (arrow-go) cannot decode the result schema (FixedSizeList of size 0): client-side", False
        if re.search(r"PERMISSION_DENIED|permission|not allowed|refused", got, re.I):
            return "statement refused by segdb", True
        if re.search(r"[Ss]chema mismatch|schema.*(differ|does not match)|FlightInfo", got):
            return "stream schema differs from FlightInfo schema", False
        if catalog:
            return "default catalog is segdb, not datafusion", True
        if reason == "error_mismatch":
            if r["error_kind"] == "multiline":
                return "error message differs (multi-line expected)", False
            return "error message differs", False
        if re.search(r"\bexecute\b|\bprepare\b|\bdeallocate\b", low_sql):
            return "SQL PREPARE/EXECUTE state not kept", False
        if re.search(r"not found|does not exist", got):
            return "object not found (lost session state or earlier failure)", False
        if re.search(r"[Uu]nsupported|not supported|not implemented|UNIMPLEMENTED", got):
            return "not supported by segdb", False
        return "segdb error: " + _template(got), False
    if reason == "expected_error":
        if "information_schema" in exp:
            return "information_schema is on by default (DataFusion's runner leaves it off)", True
        return "segdb succeeds where DataFusion errors", False
    if reason in ("result_mismatch", "count_mismatch"):
        if catalog:
            return "default catalog is segdb, not datafusion", True
        if "information_schema" in low_sql or low_sql.startswith("show"):
            return "information_schema / SHOW output differs", False
        if low_sql.startswith("explain"):
            return "EXPLAIN output differs", False
        return "result differs", False
    return reason, False


def _template(msg: str) -> str:
    m = msg.replace("DataFusion error: ", "", 1).split("\n")[0]
    m = re.sub(r"'[^']*'|\"[^\"]*\"|`[^`]*`", "…", m)
    m = re.sub(r"\d+", "N", m)
    return m[:90]


# ---------------------------------------------------------------- report

def summarize(file_results, skipped, opts, elapsed):
    tot = {k: sum(f.get(k, 0) for f in file_results) for k in ("records", "baseline_pass", "segdb_pass")}
    regs = [dict(r, file=f["file"]) for f in file_results for r in f.get("regressions", [])]
    cats = {}
    for r in regs:
        c = cats.setdefault(r["category"], {"count": 0, "cascade": 0, "deliberate": r["deliberate"], "examples": []})
        c["count"] += 1
        c["cascade"] += int(r["cascade"])
        if len(c["examples"]) < 3 and not r["cascade"]:
            c["examples"].append(r)
    for name, c in cats.items():
        if not c["examples"]:  # only cascades: show them anyway
            c["examples"] = [r for r in regs if r["category"] == name][:3]
    rate = tot["segdb_pass"] / tot["baseline_pass"] if tot["baseline_pass"] else 0.0
    n_delib = sum(1 for r in regs if r["deliberate"])
    rate_nd = (tot["segdb_pass"] + n_delib) / tot["baseline_pass"] if tot["baseline_pass"] else 0.0
    prelude_failed = [f["file"] for f in file_results
                      if any(p["outcome"] == "error" for p in f.get("prelude", []))]
    return {
        "corpus": "%s %s test_files" % (CRATE, CRATE_VERSION),
        "baseline": "python datafusion (see requirements.txt), " + RUNNER_CONFIG,
        "segdb": opts.segdb,
        "segdb_prelude": [] if opts.no_prelude else SEGDB_PRELUDE,
        "with_includes": opts.with_includes,
        "files_run": len(file_results),
        "files_skipped": [{"file": f, "reason": r} for f, r in skipped],
        "totals": dict(tot, regressions=len(regs), pass_rate=rate, deliberate=n_delib,
                       pass_rate_counting_deliberate_as_pass=rate_nd,
                       segdb_only_pass=sum(len(f.get("segdb_only_pass", [])) for f in file_results)),
        "prelude_failed": prelude_failed,
        "categories": dict(sorted(cats.items(), key=lambda kv: -kv[1]["count"])),
        "files": file_results,
        "elapsed_secs": round(elapsed, 1),
        "jobs": opts.jobs,
        "record_timeout": opts.record_timeout,
        "file_timeout": opts.file_timeout,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - elapsed)),
    }


def _md_cell(s: str, n: int = 300) -> str:
    s = _clip(s, n).replace("|", "\\|").replace("\n", "⏎ ")
    return s


def write_markdown(summary, path: Path):
    t = summary["totals"]
    out = []
    out.append("# DataFusion sqllogictest conformance over Flight SQL\n")
    out.append("Generated by `scripts/conformance/run.py` on %s (%.0f s, %d jobs). Corpus: %s; "
               "baseline: %s; segdb: `%s` with one ADBC connection per file and the session prelude `%s`."
               % (summary["started"], summary["elapsed_secs"], summary["jobs"], summary["corpus"],
                  summary["baseline"], summary["segdb"], "; ".join(summary["segdb_prelude"])))
    out.append("")
    out.append("**%d of %d baseline-passing records pass over segdb (%.2f%%)**; %d regressions, %d of them "
               "from deliberate segdb choices (%.2f%% counting those as passes). %d records run in %d files "
               "(%d baseline-passing); %d files skipped%s. `--check` compares the first rate with `--min`."
               % (t["segdb_pass"], t["baseline_pass"], 100 * t["pass_rate"], t["regressions"], t["deliberate"],
                  100 * t["pass_rate_counting_deliberate_as_pass"], t["records"], summary["files_run"],
                  t["baseline_pass"], len(summary["files_skipped"]),
                  "" if summary.get("with_includes") else " (files using `include` among them: `--with-includes` runs them)"))
    out.append("")
    if summary.get("prelude_failed"):
        out.append("The session prelude failed in: %s.\n" % ", ".join(summary["prelude_failed"]))
    if t.get("segdb_only_pass"):
        out.append("%d records fail the baseline but pass over segdb (listed per file in the JSON as "
                   "`segdb_only_pass`).\n" % t["segdb_only_pass"])
    out.append("## Regressions by cause\n")
    out.append("Counts include records that probably only follow an earlier failure in the same file "
               "(\"cascade\": a later not-found/schema error after a failed statement).\n")
    out.append("| cause | records | of which cascade | deliberate segdb choice |")
    out.append("|---|---:|---:|---|")
    for name, c in summary["categories"].items():
        out.append("| %s | %d | %d | %s |" % (_md_cell(name, 120), c["count"], c["cascade"],
                                               "yes" if c["deliberate"] else ""))
    out.append("")
    for name, c in summary["categories"].items():
        out.append("### %s (%d)\n" % (name, c["count"]))
        for r in c["examples"]:
            out.append("- `%s` — `%s`  " % (r["where"], _md_cell(r["sql"], 200)))
            out.append("  expected: `%s`  " % _md_cell(r["expected"], 250))
            out.append("  got: `%s`" % _md_cell(r["got"], 250))
        out.append("")
    out.append("## Per file\n")
    out.append("| file | records | baseline pass | segdb pass | regressions | status | secs |")
    out.append("|---|---:|---:|---:|---:|---|---:|")
    for f in sorted(summary["files"], key=lambda f: f["file"]):
        out.append("| %s | %d | %d | %d | %d | %s | %.1f |" % (
            f["file"], f.get("records", 0), f.get("baseline_pass", 0), f.get("segdb_pass", 0),
            len(f.get("regressions", [])), f["status"] + ("; " + "; ".join(n.split("\n")[0] for n in f["notes"]) if f.get("notes") else ""),
            f.get("secs", 0)))
    out.append("| **total** | %d | %d | %d | %d | | |" % (t["records"], t["baseline_pass"], t["segdb_pass"], t["regressions"]))
    out.append("")
    out.append("## Records failing the baseline (not counted)\n")
    out.append("Mostly files whose Rust TestContext registers tables, UDFs or planners that the Python "
               "package cannot have (%s).\n" % ", ".join(sorted(RUST_CONTEXT_FILES)))
    out.append("| file | records failing the baseline | reasons | example |")
    out.append("|---|---:|---|---|")
    for f in sorted(summary["files"], key=lambda f: f["file"]):
        bf = f.get("baseline_failures", [])
        nbf = f.get("records", 0) - f.get("baseline_pass", 0)
        if bf:
            reasons = ", ".join("%s %d" % kv for kv in sorted(f.get("baseline_fail_reasons", {}).items()))
            ex = bf[0]
            out.append("| %s | %d | %s | `%s`: `%s` |" % (f["file"], nbf, reasons, ex["where"],
                                                        _md_cell(ex["got"], 120)))
    out.append("")
    out.append("## Skipped files\n")
    out.append("| file | reason |")
    out.append("|---|---|")
    for s in summary["files_skipped"]:
        out.append("| %s | %s |" % (s["file"], _md_cell(s["reason"], 200)))
    out.append("")
    path.write_text("\n".join(out) + "\n")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segdb", default=None, help="segdb binary (default: $SEGDB_BIN, else the cargo target dir's)")
    ap.add_argument("--jobs", type=int, default=2, help="files in parallel (at most 2)")
    ap.add_argument("--only", action="append", default=[], help="glob(s) over test_files-relative paths")
    ap.add_argument("--record-timeout", type=float, default=30.0)
    ap.add_argument("--file-timeout", type=float, default=300.0)
    ap.add_argument("--with-includes", action="store_true", help="also run files that use `include`")
    ap.add_argument("--out", default=str(REPO / "benches/results"), help="directory for conformance.{md,json}")
    ap.add_argument("--check", action="store_true", help="exit 1 if the pass rate is below --min")
    ap.add_argument("--min", type=float, default=0.99)
    ap.add_argument("--no-prelude", action="store_true",
                    help="don't SET the runner's target_partitions = 4 on the segdb session first")
    ap.add_argument("--list", action="store_true", help="print the selected and skipped files and exit")
    ap.add_argument("--worker", metavar="FILE", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    ensure_venv()
    sys.path.insert(0, str(HERE))
    opts.segdb = os.path.abspath(opts.segdb or default_segdb())
    opts.jobs = max(1, min(2, opts.jobs))
    root = corpus_dir()

    if opts.worker:
        res = work_file(root, opts.worker, opts)
        Path(opts.worker_out).write_text(json.dumps(res))
        sys.stdout.flush()
        os._exit(0)  # a timed-out baseline thread may still be running

    files, skipped = select_files(root, opts.with_includes)
    if opts.only:
        files = [f for f in files if any(fnmatch.fnmatch(f, g) for g in opts.only)]
    if opts.list:
        for f in files:
            print("run  ", f)
        for f, r in skipped:
            print("skip ", f, "--", r)
        print("%d to run, %d skipped" % (len(files), len(skipped)))
        return 0
    if not Path(opts.segdb).exists():
        raise SystemExit("segdb binary not found: %s (build it or pass --segdb)" % opts.segdb)
    print("== corpus %s: %d files to run, %d skipped; segdb %s; %d jobs"
          % (root, len(files), len(skipped), opts.segdb, opts.jobs), flush=True)

    start = time.monotonic()
    results = []
    lock = threading.Lock()
    tmp = Path(tempfile.mkdtemp(prefix="segdb-conf-out-"))

    def one(i_rel):
        i, rel = i_rel
        outp = tmp / ("%04d.json" % i)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", rel, "--worker-out", str(outp),
               "--segdb", opts.segdb, "--record-timeout", str(opts.record_timeout),
               "--file-timeout", str(opts.file_timeout)]
        if opts.with_includes:
            cmd.append("--with-includes")
        if opts.no_prelude:
            cmd.append("--no-prelude")
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=opts.file_timeout * 2 + 120, start_new_session=True)
            res = json.loads(outp.read_text()) if outp.exists() else {
                "file": rel, "status": "worker failed", "notes": [p.stdout.decode(errors="replace")[-2000:]],
                "records": 0, "baseline_pass": 0, "segdb_pass": 0, "regressions": []}
        except subprocess.TimeoutExpired as e:
            res = {"file": rel, "status": "worker killed (file time-box)", "notes": [], "records": 0,
                   "baseline_pass": 0, "segdb_pass": 0, "regressions": []}
        res.setdefault("secs", round(time.monotonic() - t0, 2))
        with lock:
            results.append(res)
            print("[%3d/%d] %-55s %5d rec  base %5d  segdb %5d  reg %4d  %6.1fs %s"
                  % (len(results), len(files), rel, res.get("records", 0), res.get("baseline_pass", 0),
                     res.get("segdb_pass", 0), len(res.get("regressions", [])), res["secs"],
                     "" if res["status"] == "ok" else "[%s]" % res["status"]), flush=True)
        return res

    with ThreadPoolExecutor(max_workers=opts.jobs) as ex:
        list(ex.map(one, list(enumerate(files))))
    shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - start
    results.sort(key=lambda f: f["file"])
    categorize(results)
    summary = summarize(results, skipped, opts, elapsed)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conformance.json").write_text(json.dumps(summary, indent=1) + "\n")
    write_markdown(summary, out / "conformance.md")
    t = summary["totals"]
    print("== %d/%d baseline-passing records pass over segdb (%.2f%%), %d regressions; %d records in %d files; "
          "total time %.0f s" % (t["segdb_pass"], t["baseline_pass"], 100 * t["pass_rate"], t["regressions"],
                                 t["records"], len(results), elapsed))
    for name, c in list(summary["categories"].items())[:15]:
        print("   %5d  %s%s" % (c["count"], name, " (deliberate)" if c["deliberate"] else ""))
    print("== wrote %s and %s" % (out / "conformance.md", out / "conformance.json"))
    if opts.check and t["pass_rate"] < opts.min:
        print("FAIL: pass rate %.4f is below --min %.4f" % (t["pass_rate"], opts.min))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
