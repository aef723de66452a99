#!/usr/bin/env python3
"""Apache Superset 6.1 against `segdb serve`, end to end, through Superset's REST API.

    python3 tests/superset/run.py --segdb BIN [--keep]

1. venv: creates or reuses ~/.cache/segdb-superset-venv (SEGDB_SUPERSET_VENV) with the pinned
   packages of requirements.txt (+ constraints.txt) and clients/python (segdb-sqlalchemy);
   each part is reinstalled only when its files change.
2. segdb: a temp database (`generate --users 2000 --days 30`, ingest of profiles, events and
   consent), a user `alice` (analyst), the segment `buyers` created with the CLI, and
   `segdb serve --flight 127.0.0.1:0`.
3. Superset: a temp SUPERSET_HOME with a sqlite metadata DB and a fresh SECRET_KEY
   (`superset db upgrade`, `fab create-admin`, `init`), then `superset run` on a free port.
   superset_config.py holds nothing about segdb: the recipe needs no config line.
4. Checks through the REST API: the engine list offers segdb with its connection form;
   test_connection with the right password, a wrong one, and a closed port; the README's old
   `datafusion+flightsql://` URI (fails) and `datafusion://` (works) for comparison; the database
   is created with the recipe's URI; schemas, tables (segments included) and columns with their
   types; SQL Lab queries (counts, segment functions, a table function, `SET segdb.as_of`, a
   segment created, described and dropped from SQL Lab, an unknown table, a statement beyond
   the role) and a chart's weekly counts (time grain, time range filter), compared with the
   same queries run by `BIN sql --format csv`; then a second server with a self-signed TLS
   certificate for the URI's TLS parameters.

Prints the time of each phase and `N passed, M failed`; exits 1 on any failure. Superset and
segdb are always stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import http.cookiejar
import io
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLIENT = REPO / "clients" / "python"
VENV = Path(os.environ.get("SEGDB_SUPERSET_VENV", Path.home() / ".cache/segdb-superset-venv"))
AS_OF = "2026-02-01T00:00:00Z"  # the generated data ends here (generate's default --end)
EARLIER = "2026-01-15T00:00:00Z"
PASSWORD = "s3cret-" + secrets.token_hex(4)
ADMIN_PW = "admin-" + secrets.token_hex(4)


# ---------------------------------------------------------------- bookkeeping

class Run:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.t0 = time.monotonic()

    def phase(self, name: str, fn: Callable[[], Any]) -> Any:
        print(f"== {name}", flush=True)
        t = time.monotonic()
        try:
            return fn()
        finally:
            print(f"   {name}: {time.monotonic() - t:.1f} s", flush=True)

    def check(self, name: str, fn: Callable[[], Any]) -> Any:
        """One assertion group: counts as passed or failed; a failure does not stop the run."""
        t = time.monotonic()
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - reported, counted, run continues
            self.failed.append(name)
            print(f"   FAIL {name} ({time.monotonic() - t:.1f} s): {e}", flush=True)
            if not isinstance(e, AssertionError):
                traceback.print_exc()
            return None
        self.passed += 1
        print(f"   ok   {name} ({time.monotonic() - t:.1f} s)", flush=True)
        return out


def expect(cond: Any, msg: Any) -> None:
    if not cond:
        raise AssertionError(msg)


# ---------------------------------------------------------------- venv

def tree_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc" or ".egg-info" in str(f):
                continue
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if sys.version_info < (3, 10):
        raise SystemExit("Superset 6.1 needs Python >= 3.10 for its venv")
    pip = [str(py), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    if not py.exists():
        print(f"   creating {VENV}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    deps = tree_hash([HERE / "requirements.txt", HERE / "constraints.txt"]) + version
    stamp = VENV / ".segdb-superset-deps"
    if not stamp.exists() or stamp.read_text() != deps:
        print("   installing requirements.txt (first run: a few minutes)", flush=True)
        subprocess.check_call(pip + ["install", "-r", str(HERE / "requirements.txt"),
                                     "-c", str(HERE / "constraints.txt")])
        stamp.write_text(deps)
        (VENV / ".segdb-superset-client").unlink(missing_ok=True)
    client = tree_hash([CLIENT / "pyproject.toml", CLIENT / "README.md", CLIENT / "src"])
    stamp = VENV / ".segdb-superset-client"
    if not stamp.exists() or stamp.read_text() != client:
        print("   installing clients/python (segdb-sqlalchemy)", flush=True)
        # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
        with tempfile.TemporaryDirectory(prefix="segdb-sqlalchemy-") as d:
            src = Path(d) / "python"
            shutil.copytree(CLIENT, src, ignore=shutil.ignore_patterns(
                "build", "dist", "*.egg-info", "__pycache__"))
            subprocess.check_call(pip + ["install", "--no-deps", "--force-reinstall", str(src)],
                                  cwd=d)
        stamp.write_text(client)
    return VENV / "bin"


# ---------------------------------------------------------------- processes

class Proc:
    """A child we started: stopped by its pid with SIGTERM, SIGKILL after a timeout."""

    def __init__(self, name: str, argv: list[str], env: dict, log: Path, stdout_pipe=False):
        self.name = name
        self.log = log
        self.logf = open(log, "wb")
        self.p = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self.logf, stderr=self.logf,
        )

    def stop(self, timeout: float = 15) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"   {self.name} ignored SIGTERM for {timeout} s: SIGKILL", flush=True)
                self.p.kill()
                self.p.wait(10)
        self.logf.close()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_segdb(bin_: str, env: dict, cfg: Path, tmp: Path) -> tuple[Proc, int]:
    proc = Proc("segdb serve", [bin_, "serve", "--flight", "127.0.0.1:0", "--config", str(cfg)],
                env, tmp / "segdb-serve.log", stdout_pipe=True)
    line: list[str] = []

    def read() -> None:
        for raw in proc.p.stdout:  # type: ignore[union-attr]
            text = raw.decode(errors="replace").strip()
            if text.startswith("segdb serve: Flight SQL on") and not line:
                line.append(text)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while not line:
        if proc.p.poll() is not None:
            raise RuntimeError(f"segdb serve exited with {proc.p.returncode}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"segdb serve printed no address in 60 s:\n{proc.tail()}")
        time.sleep(0.05)
    port = int(line[0].rsplit(":", 1)[1])
    return proc, port


# ---------------------------------------------------------------- segdb CLI

class Cli:
    def __init__(self, bin_: str, env: dict):
        self.bin = bin_
        self.env = env

    def run(self, *args: str, stdin: str | None = None) -> str:
        r = subprocess.run([self.bin, *args], env=self.env, input=stdin, capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"segdb {' '.join(args)}: exit {r.returncode}\n{r.stderr}")
        return r.stdout

    def rows(self, sql: str, as_of: str = AS_OF) -> list[dict[str, str]]:
        out = self.run("sql", "--format", "csv", "-c", f"SET segdb.as_of = '{as_of}'; {sql}")
        return list(csv.DictReader(io.StringIO(out)))

    def scalar(self, sql: str, as_of: str = AS_OF) -> int:
        rows = self.rows(sql, as_of)
        expect(len(rows) == 1, f"CLI {sql!r}: {rows}")
        return int(next(iter(rows[0].values())))


def setup_segdb(cli: Cli, tmp: Path, cfg: Path) -> None:
    gen = tmp / "gen"
    cli.run("generate", "--users", "2000", "--days", "30", "--out", str(gen))
    cli.run("ingest", "profiles", str(gen / "profiles.parquet"))
    cli.run("ingest", "events", *sorted(str(p) for p in gen.glob("events-*.parquet")))
    cli.run("ingest", "consent", str(gen / "consent.parquet"))
    cli.run("user", "add", "alice", "--role", "analyst", "--config", str(cfg),
            stdin=PASSWORD + "\n")
    cli.run("sql", "-c", f"SET segdb.as_of = '{AS_OF}'; "
            "CREATE SEGMENT buyers AS DID 'purchase' IN THE LAST 30 DAYS")


# ---------------------------------------------------------------- Superset

SUPERSET_CONFIG = """\
# Generated by tests/superset/run.py. Nothing here is about segdb.
SECRET_KEY = {secret!r}
SQLALCHEMY_DATABASE_URI = {db!r}
TALISMAN_ENABLED = False
RATELIMIT_ENABLED = False
"""


def superset_env(bin_dir: Path, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGDB_", "SUPERSET_"))}
    env.update(
        SUPERSET_HOME=str(home),
        SUPERSET_CONFIG_PATH=str(home / "superset_config.py"),
        FLASK_APP="superset",
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONWARNINGS="ignore",
        SQLALCHEMY_SILENCE_UBER_WARNING="1",
    )
    return env


def superset_cmd(bin_dir: Path, env: dict, log: Path, *args: str) -> None:
    with open(log, "ab") as f:
        f.write(f"\n$ superset {' '.join(args)}\n".encode())
        f.flush()
        r = subprocess.run([str(bin_dir / "superset"), *args], env=env, stdout=f,
                           stderr=subprocess.STDOUT, timeout=300)
    if r.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"superset {args[0]} failed ({r.returncode}):\n{tail}")


def init_superset(bin_dir: Path, home: Path) -> dict:
    home.mkdir(parents=True)
    (home / "superset_config.py").write_text(SUPERSET_CONFIG.format(
        secret=secrets.token_urlsafe(48), db=f"sqlite:///{home / 'superset.db'}"))
    env = superset_env(bin_dir, home)
    log = home / "init.log"
    superset_cmd(bin_dir, env, log, "db", "upgrade")
    superset_cmd(bin_dir, env, log, "fab", "create-admin", "--username", "admin",
                 "--firstname", "Ad", "--lastname", "Min", "--email", "admin@example.com",
                 "--password", ADMIN_PW)
    superset_cmd(bin_dir, env, log, "init")
    return env


def start_superset(bin_dir: Path, env: dict, home: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc("superset", [str(bin_dir / "superset"), "run", "-h", "127.0.0.1", "-p", str(port),
                             "--with-threads"], env, home / "web.log")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.p.poll() is not None:
            raise RuntimeError(f"superset run exited with {proc.p.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as r:
                if r.status == 200:
                    return proc, base
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"superset not healthy in 120 s:\n{proc.tail()}")
        time.sleep(0.3)


class Api:
    """Superset's REST API: JWT from /security/login, CSRF token with the session cookie."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token: str | None = None
        self.csrf: str | None = None

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120):
        headers = {"Accept": "application/json", "Referer": self.base}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        if self.csrf:
            headers["X-CSRFToken"] = self.csrf
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with self.opener.open(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw or b"{}")
        except ValueError:
            return status, raw.decode(errors="replace")[:2000]

    def login(self, user: str, password: str) -> None:
        s, b = self.call("POST", "/api/v1/security/login",
                         {"username": user, "password": password, "provider": "db",
                          "refresh": True})
        expect(s == 200 and "access_token" in b, f"login: {s} {b}")
        self.token = b["access_token"]
        s, b = self.call("GET", "/api/v1/security/csrf_token/")
        expect(s == 200 and b.get("result"), f"csrf_token: {s} {b}")
        self.csrf = b["result"]

    def rison(self, path: str, q: str) -> tuple[int, Any]:
        return self.call("GET", f"{path}?q={urllib.parse.quote(q)}")


# ---------------------------------------------------------------- the checks

def sqllab(api: Api, db_id: int, sql: str, schema: str = "public") -> dict:
    client_id = "".join(secrets.choice(string.ascii_letters) for _ in range(10))
    s, b = api.call("POST", "/api/v1/sqllab/execute/", {
        "database_id": db_id, "sql": sql, "schema": schema, "runAsync": False,
        "client_id": client_id, "tab": "segdb test", "select_as_cta": False,
        "ctas_method": "TABLE", "tmp_table_name": "",
    })
    if not isinstance(b, dict):
        b = {"raw": b}
    b["_http"] = s
    return b


def ok_rows(res: dict, sql: str) -> list[dict]:
    expect(res["_http"] == 200 and res.get("status") == "success",
           f"SQL Lab {sql!r}: HTTP {res['_http']} {json.dumps(res)[:800]}")
    return res["data"]


def col_types(res: dict) -> dict[str, tuple[str, bool]]:
    return {c["column_name"]: (c.get("type"), c.get("is_dttm")) for c in res.get("columns", [])}


def parse_ts(v: str) -> datetime:
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


def checks(run: Run, api: Api, cli: Cli, flight_port: int) -> None:
    host = f"127.0.0.1:{flight_port}"
    uri = f"segdb://alice:{PASSWORD}@{host}?as_of={AS_OF}"

    def test_connection(sqlalchemy_uri: str) -> tuple[int, Any]:
        return api.call("POST", "/api/v1/database/test_connection/",
                        {"sqlalchemy_uri": sqlalchemy_uri, "database_name": "segdb-probe"})

    old_uri = f"datafusion+flightsql://alice:{PASSWORD}@{host}?insecure=true"

    def old_recipe():
        # The README's old URI: SQLAlchemy finds no entry point `datafusion.flightsql`;
        # flightsql-dbapi registers that name only when flightsql.sqlalchemy is imported.
        s, b = test_connection(old_uri)
        expect(s == 422 and "Could not load database driver for: datafusion"
               in json.dumps(b), f"datafusion+flightsql:// unexpectedly: {s} {b}")
        # Its entry point is `datafusion`: that URI works without any import.
        s, b = test_connection(f"datafusion://alice:{PASSWORD}@{host}?insecure=true")
        expect(s == 200 and b.get("message") == "OK", f"datafusion:// (flightsql-dbapi): {s} {b}")

    run.check("old README URI fails, flightsql-dbapi's datafusion:// works", old_recipe)

    def available():
        s, b = api.call("GET", "/api/v1/database/available/")
        expect(s == 200, f"available: {s} {b}")
        seg = [d for d in b["databases"] if d.get("engine") == "segdb"]
        expect(seg, "segdb is not among the available engines (engine spec not loaded)")
        d = seg[0]
        expect(d["default_driver"] == "adbc" and "adbc" in d["available_drivers"], d)
        props = set(d.get("parameters", {}).get("properties", {}))
        expect({"host", "port", "username", "password", "encryption"} <= props,
               f"connection form fields: {props}")
        expect(d["engine_information"]["supports_file_upload"] is False, d)

    run.check("engine list offers segdb with its connection form", available)

    def after_available():
        # Loading the `datafusion` entry point (the datafusion:// test above; /available/ loads
        # every dialect entry point too) imports flightsql.sqlalchemy, which registers
        # `datafusion.flightsql`: from then on this Superset process accepts the old URI. So
        # the old recipe works or fails depending on what the process did before.
        s, b = test_connection(old_uri)
        expect(s == 200 and b.get("message") == "OK", f"{s} {b}")

    run.check("old README URI works once flightsql.sqlalchemy got imported", after_available)

    def right_password():
        s, b = test_connection(uri)
        expect(s == 200 and b.get("message") == "OK", f"test_connection: {s} {b}")

    run.check("test_connection, right password", right_password)

    def wrong_password():
        s, b = test_connection(f"segdb://alice:not-the-password@{host}")
        expect(s in (400, 422), f"a wrong password was accepted: {s} {b}")
        err = b["errors"][0]
        expect(err["error_type"] == "CONNECTION_ACCESS_DENIED_ERROR", err)
        expect("Wrong user name or password" in err["message"], err)

    run.check("test_connection, wrong password fails", wrong_password)

    def closed_port():
        s, b = test_connection(f"segdb://alice:{PASSWORD}@127.0.0.1:{free_port()}")
        expect(s in (400, 422), f"a closed port was accepted: {s} {b}")
        expect(b["errors"][0]["error_type"] == "CONNECTION_HOST_DOWN_ERROR", b)

    run.check("test_connection, closed port fails", closed_port)

    def tls_to_plain():
        s, b = test_connection(f"segdb://alice:{PASSWORD}@{host}?tls=true")
        expect(s in (400, 422), f"TLS to a plain server was accepted: {s} {b}")
        expect("does not serve TLS" in b["errors"][0]["message"], b)

    run.check("test_connection, tls=true against a plain server fails, saying why",
              tls_to_plain)

    def form():
        s, b = api.call("POST", "/api/v1/database/validate_parameters/", {
            "engine": "segdb", "configuration_method": "dynamic_form",
            "parameters": {"host": "127.0.0.1", "port": flight_port, "username": "alice",
                           "password": PASSWORD, "query": {"as_of": AS_OF}},
        })
        expect(s == 200, f"validate_parameters: {s} {b}")

    run.check("connection form parameters validate", form)

    db_id = None

    def create():
        nonlocal db_id
        s, b = api.call("POST", "/api/v1/database/", {
            "database_name": "segdb", "sqlalchemy_uri": uri, "expose_in_sqllab": True,
            "allow_dml": True,
        })
        expect(s == 201, f"create database: {s} {b}")
        db_id = b["id"]
        expect(b["result"]["driver"] == "adbc", b)
        s, b = api.call("GET", f"/api/v1/database/{db_id}")
        expect(s == 200 and b["result"]["backend"] == "segdb", f"{s} {b}")

    run.check("create the database with the recipe's URI", create)
    if db_id is None:
        return

    def schemas():
        s, b = api.call("GET", f"/api/v1/database/{db_id}/schemas/")
        expect(s == 200, f"{s} {b}")
        expect({"public", "segments"} <= set(b["result"]), b["result"])

    run.check("schemas include public and segments", schemas)

    def tables(schema: str, force: bool = False) -> dict[str, str]:
        s, b = api.rison(f"/api/v1/database/{db_id}/tables/",
                         f"(schema_name:{schema},force:{'!t' if force else '!f'})")
        expect(s == 200, f"tables {schema}: {s} {b}")
        return {t["value"]: t["type"] for t in b["result"]}

    def public_tables():
        t = tables("public")
        expect({"events", "profiles", "consent", "identity"} <= set(t), t)

    run.check("tables of public: events, profiles, consent, identity", public_tables)

    def segment_tables():
        t = tables("segments")
        expect(t.get("buyers") == "table", t)

    run.check("segment buyers is a table of schema segments", segment_tables)

    def metadata(name: str, schema: str) -> dict:
        s, b = api.call("GET", f"/api/v1/database/{db_id}/table_metadata/?"
                        + urllib.parse.urlencode({"name": name, "schema": schema}))
        expect(s == 200, f"table_metadata {schema}.{name}: {s} {b}")
        return b

    def events_columns():
        b = metadata("events", "public")
        cols = {c["name"]: c["type"] for c in b["columns"]}
        want = [r["column_name"] for r in cli.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = 'events' ORDER BY ordinal_position")]
        expect(list(cols) == want, f"columns {list(cols)} != CLI's {want}")
        expect(cols["user_id"] == "VARCHAR" and cols["event"] == "VARCHAR", cols)
        expect(cols["ts"] == "TIMESTAMP" and cols["uid"] == "BIGINT", cols)
        expect(cols["price"] == "DOUBLE", cols)
        expect("FROM public.events" in b["selectStar"], b["selectStar"])

    run.check("columns of events, with types", events_columns)

    def segment_columns():
        b = metadata("buyers", "segments")
        expect([(c["name"], c["type"]) for c in b["columns"]] == [("user_id", "VARCHAR")], b)
        expect("DID 'purchase' IN THE LAST 30 DAYS" in (b.get("comment") or ""), b)

    run.check("columns and definition of segments.buyers", segment_columns)

    def functions():
        s, b = api.call("GET", f"/api/v1/database/{db_id}/function_names/")
        expect(s == 200, f"{s} {b}")
        expect({"segment_size", "segment_members", "in_segment", "date_trunc"}
               <= set(b["function_names"]), b)

    run.check("SQL Lab autocomplete knows segdb's functions", functions)

    # --- SQL Lab, compared with the CLI ---------------------------------------------------

    def same_scalar(sql: str, as_of: str = AS_OF, prefix: str = "", type_: str | None = None):
        res = sqllab(api, db_id, prefix + sql)
        rows = ok_rows(res, prefix + sql)
        expect(len(rows) == 1 and list(rows[0]) == ["n"], rows)
        got = rows[0]["n"]
        want = cli.scalar(sql, as_of)
        expect(got == want, f"{sql!r}: Superset {got} != CLI {want}")
        if type_:
            expect(col_types(res)["n"] == (type_, False), col_types(res))
        return got

    values: dict[str, int] = {}
    values["events"] = run.check("count(*) FROM events", lambda: same_scalar(
        "SELECT count(*) AS n FROM events", type_="BIGINT")) or 0
    values["buyers"] = run.check("segment_size('buyers') at the URI's as_of", lambda: same_scalar(
        "SELECT segment_size('buyers') AS n", type_="BIGINT UNSIGNED")) or 0
    run.check("count(*) FROM segments.buyers", lambda: same_scalar(
        "SELECT count(*) AS n FROM segments.buyers"))
    run.check("segment_members('buyers') (table function)", lambda: same_scalar(
        "SELECT count(*) AS n FROM segment_members('buyers')"))
    run.check("in_segment('buyers', user_id)", lambda: same_scalar(
        "SELECT count(*) AS n FROM profiles WHERE in_segment('buyers', user_id)"))

    def nonzero():
        expect(values["events"] > 0 and values["buyers"] > 0, values)

    run.check("the data is not empty", nonzero)

    def set_as_of():
        earlier = same_scalar("SELECT segment_size('buyers') AS n", as_of=EARLIER,
                              prefix=f"SET segdb.as_of = '{EARLIER}';\n")
        expect(earlier != values["buyers"], f"SET segdb.as_of changed nothing: {earlier}")
        # The next run is a new connection: the SET of the last one does not leak into it.
        again = ok_rows(sqllab(api, db_id, "SELECT segment_size('buyers') AS n"), "again")
        expect(again[0]["n"] == values["buyers"], f"{again} != {values['buyers']}")

    run.check("SET segdb.as_of in a SQL Lab script, not leaking", set_as_of)

    def group_by():
        sql = ("SELECT event, count(*) AS n, round(sum(price), 2) AS revenue FROM events "
               "GROUP BY event ORDER BY event")
        res = sqllab(api, db_id, sql)
        got = ok_rows(res, sql)
        want = cli.rows(sql)
        expect(len(got) == len(want) > 1, f"{len(got)} rows, CLI {len(want)}")
        for g, w in zip(got, want):
            expect(g["event"] == w["event"] and g["n"] == int(w["n"]), (g, w))
            if w["revenue"] == "":
                expect(g["revenue"] is None, (g, w))
            else:
                expect(abs(g["revenue"] - float(w["revenue"])) < 0.005, (g, w))
        types = col_types(res)
        expect(types["event"][0] == "VARCHAR" and types["n"][0] == "BIGINT"
               and types["revenue"][0] == "DOUBLE", types)

    run.check("GROUP BY event: every row equals the CLI's", group_by)

    def timestamps():
        sql = "SELECT min(ts) AS first_ts, max(ts) AS last_ts FROM events"
        res = sqllab(api, db_id, sql)
        got = ok_rows(res, sql)[0]
        want = cli.rows(sql)[0]
        for k in ("first_ts", "last_ts"):
            expect(parse_ts(got[k]) == parse_ts(want[k]), (k, got[k], want[k]))
        expect(col_types(res)["first_ts"] == ("TIMESTAMP", True), col_types(res))

    run.check("timestamps equal the CLI's, typed TIMESTAMP", timestamps)

    def chart():
        # A dataset and the chart-data endpoint: the engine spec's time grain (date_trunc) and
        # timestamp literals (the time range filter) in the SQL Superset generates.
        s, b = api.call("POST", "/api/v1/dataset/",
                        {"database": db_id, "schema": "public", "table_name": "events"})
        expect(s == 201, f"create dataset: {s} {b}")
        ds = b["id"]
        s, b = api.call("POST", "/api/v1/chart/data", {
            "datasource": {"id": ds, "type": "table"}, "force": True,
            "result_format": "json", "result_type": "full",
            "queries": [{
                "columns": [{"timeGrain": "P1W", "columnType": "BASE_AXIS", "label": "ts",
                             "sqlExpression": "ts", "expressionType": "SQL"}],
                "metrics": ["count"], "orderby": [], "row_limit": 100, "extras": {},
                "filters": [{"col": "ts", "op": "TEMPORAL_RANGE",
                             "val": "2026-01-05T00:00:00 : 2026-01-26T00:00:00"}],
            }],
        })
        expect(s == 200, f"chart data: {s} {json.dumps(b)[:800]}")
        res = b["result"][0]
        expect("date_trunc('week', ts)" in res["query"], res["query"])
        got = {int(r["ts"]): r["count"] for r in res["data"]}
        want = {int(parse_ts(r["w"]).timestamp() * 1000): int(r["n"]) for r in cli.rows(
            "SELECT date_trunc('week', ts) AS w, count(*) AS n FROM events "
            "WHERE ts >= '2026-01-05' AND ts < '2026-01-26' GROUP BY 1 ORDER BY 1")}
        expect(got == want and len(want) == 3, f"weekly counts {got} != CLI {want}")

    run.check("chart data: weekly counts over a time range equal the CLI's", chart)

    def segment_ddl():
        sql = "CREATE SEGMENT sqllab_carts AS DID 'add_to_cart' IN THE LAST 7 DAYS"
        rows = ok_rows(sqllab(api, db_id, sql), sql)
        expect(rows and rows[0].get("segment") == "sqllab_carts", rows)
        size = rows[0]["size"]
        want = cli.scalar("SELECT segment_size('sqllab_carts')")
        expect(size == want and size > 0, f"CREATE SEGMENT size {size}, CLI {want}")
        expect("sqllab_carts" in tables("segments", force=True), "not in the schema browser")
        sql = "SELECT * FROM segment_overlap('buyers', 'sqllab_carts')"
        got = ok_rows(sqllab(api, db_id, sql), sql)
        want_rows = cli.rows(sql)
        expect(len(got) == len(want_rows) == 1, (got, want_rows))
        expect(got[0]["both"] == int(want_rows[0]["both"])
               and got[0]["size_a"] == values["buyers"], (got, want_rows))
        rows = ok_rows(sqllab(api, db_id, "DROP SEGMENT sqllab_carts"), "DROP SEGMENT")
        names = [r["name"] for r in cli.rows("SHOW SEGMENTS")]
        expect("sqllab_carts" not in names and "buyers" in names, names)

    run.check("CREATE / DROP SEGMENT from SQL Lab, seen by the CLI", segment_ddl)

    def unknown_table():
        res = sqllab(api, db_id, "SELECT * FROM no_such_table")
        expect(res["_http"] != 200 and res.get("errors"), f"no error: {json.dumps(res)[:500]}")
        err = res["errors"][0]
        expect(err["error_type"] == "TABLE_DOES_NOT_EXIST_ERROR"
               and "no_such_table" in err["message"], err)

    run.check("an unknown table is a readable error", unknown_table)

    def describe_segment():
        sql = "DESCRIBE SEGMENT buyers"
        rows = ok_rows(sqllab(api, db_id, sql), sql)
        expect(len(rows) == 1 and rows[0]["name"] == "buyers"
               and rows[0]["definition"] == "DID 'purchase' IN THE LAST 30 DAYS", rows)

    run.check("DESCRIBE SEGMENT from SQL Lab", describe_segment)

    def role_refusal():
        res = sqllab(api, db_id, "FORGET USER 'someone@example.com'")
        expect(res["_http"] != 200 and res.get("errors"), f"no error: {json.dumps(res)[:500]}")
        err = res["errors"][0]
        expect(err["error_type"] == "DATABASE_SECURITY_ACCESS_ERROR", err)

    run.check("a statement beyond the analyst role is refused as such", role_refusal)


def tls_checks(run: Run, api: Api, bin_: str, env: dict, cfg: Path, tmp: Path) -> None:
    """A second server with a self-signed certificate: the recipe's TLS parameters."""
    if not shutil.which("openssl"):
        run.failed.append("TLS: openssl is not installed")
        return
    crt, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(crt), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    proc = Proc("segdb serve (TLS)", [bin_, "serve", "--flight", "127.0.0.1:0", "--config",
                                      str(cfg), "--tls-cert", str(crt), "--tls-key", str(key)],
                env, tmp / "segdb-serve-tls.log", stdout_pipe=True)
    try:
        line = proc.p.stdout.readline().decode().strip()  # type: ignore[union-attr]
        expect(line.startswith("segdb serve: Flight SQL on grpc+tls://"), line)
        base = f"segdb://alice:{PASSWORD}@{line.rsplit('//', 1)[1]}"

        def probe(query: str) -> tuple[int, Any]:
            return api.call("POST", "/api/v1/database/test_connection/",
                            {"sqlalchemy_uri": f"{base}?{query}", "database_name": "tls-probe"})

        def trusted():
            s, b = probe(f"tls=true&tls_root_certs={crt}")
            expect(s == 200 and b.get("message") == "OK", f"{s} {b}")
            s, b = probe("tls=true&tls_skip_verify=true")
            expect(s == 200 and b.get("message") == "OK", f"{s} {b}")

        run.check("TLS with tls_root_certs / tls_skip_verify", trusted)

        def untrusted():
            s, b = probe("tls=true")
            expect(s in (400, 422) and "tls_root_certs" in b["errors"][0]["message"], f"{s} {b}")
            s, b = probe("as_of=2026-02-01")  # plain gRPC against a TLS server
            expect(s in (400, 422) and "add tls=true" in b["errors"][0]["message"], f"{s} {b}")

        run.check("TLS: an untrusted certificate and plain gRPC fail, saying why", untrusted)
    finally:
        proc.stop()


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segdb", required=True, help="the segdb binary")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = ap.parse_args()
    bin_ = str(Path(args.segdb).resolve())
    run = Run()
    tmp = Path(tempfile.mkdtemp(prefix="segdb-superset-"))
    procs: list[Proc] = []
    try:
        bin_dir = run.phase("venv", ensure_venv)
        keys = tmp / "keys"
        keys.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGDB_")}
        env.update(SEGDB_DATA=str(tmp / "data"), SEGDB_KEYRING=str(keys / "segdb.keyring"))
        cli = Cli(bin_, env)
        cfg = tmp / "segdb.toml"
        run.phase("segdb data, user, segment", lambda: setup_segdb(cli, tmp, cfg))
        seg, port = run.phase("segdb serve", lambda: start_segdb(bin_, env, cfg, tmp))
        procs.append(seg)
        print(f"   Flight SQL on 127.0.0.1:{port}", flush=True)
        sup_env = run.phase("superset db upgrade, create-admin, init",
                            lambda: init_superset(bin_dir, tmp / "superset"))
        sup, base = run.phase("superset run", lambda: start_superset(
            bin_dir, sup_env, tmp / "superset"))
        procs.append(sup)
        api = Api(base)
        run.phase("login", lambda: api.login("admin", ADMIN_PW))
        run.phase("REST API checks", lambda: checks(run, api, cli, port))
        run.phase("TLS", lambda: tls_checks(run, api, bin_, env, cfg, tmp))
    except Exception as e:  # noqa: BLE001 - a setup failure is a failure
        run.failed.append(f"setup: {e}")
        traceback.print_exc()
    finally:
        for p in reversed(procs):
            p.stop()
        if run.failed:
            for p in procs:
                print(f"-- last lines of {p.log}:\n{p.tail(25)}", flush=True)
        if args.keep or run.failed:
            print(f"   kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"== total {time.monotonic() - run.t0:.1f} s", flush=True)
    for name in run.failed:
        print(f"FAILED: {name}")
    print(f"{run.passed} passed, {len(run.failed)} failed")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
