"""The Python package against the engine, with DuckDB as the oracle on the same files.

Run by scripts/test after `pip install ./python` (built with the tests' profile and target dir).
"""

import datetime as dt
import decimal
import random
import threading

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import segdb

EVENTS = ["view", "add_to_cart", "purchase", "app_open"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Seeded random events and profiles as CSV files, and a database loaded from them."""
    root = tmp_path_factory.mktemp("segdb")
    rng = random.Random(20261207)
    users = ["user.{}@example.com".format(i) for i in range(400)]
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    lines = ["user_id,event,ts,price"]
    for _ in range(6000):
        u = rng.choice(users)
        e = rng.choice(EVENTS)
        ts = start + dt.timedelta(seconds=rng.randrange(30 * 86400))
        price = "{:.2f}".format(rng.uniform(1, 200)) if e == "purchase" else ""
        lines.append("{},{},{},{}".format(u, e, ts.strftime("%Y-%m-%dT%H:%M:%SZ"), price))
    events = root / "events.csv"
    events.write_text("\n".join(lines) + "\n")
    plines = ["user_id,country,plan"]
    for u in users:
        plines.append("{},{},{}".format(u, rng.choice(["DE", "US", "FR"]), rng.choice(["free", "plus"])))
    profiles = root / "profiles.csv"
    profiles.write_text("\n".join(plines) + "\n")
    db = segdb.connect(root / "db", keyring=root / "k.keyring")
    r = db.ingest("profiles", profiles)
    assert r["rows_loaded"] == len(users) and r["rejected"] == []
    r = db.ingest("events", [str(events)])
    assert r["rows_loaded"] == 6000 and r["rejected"] == []
    yield {"db": db, "root": root, "events": events, "profiles": profiles, "users": users}
    db.close()


def oracle(sql):
    return duckdb.sql(sql).fetchall()


def test_connect_creates_like_the_library_or_refuses_with_create_false(tmp_path):
    with pytest.raises(segdb.ProgrammingError, match="is not a segdb database.*create=False"):
        segdb.connect(tmp_path / "typo", keyring=tmp_path / "k.keyring", create=False)
    assert not (tmp_path / "typo").exists() and not (tmp_path / "k.keyring").exists()
    db = segdb.connect(tmp_path / "new", keyring=tmp_path / "k.keyring")
    assert db.sql("SELECT count(*) FROM events").fetchall() == [(0,)]
    db.close()
    # Opened again, strictly: it exists now.
    with segdb.connect(tmp_path / "new", keyring=tmp_path / "k.keyring", create=False) as again:
        assert again.sql("SELECT 1 AS one").fetchall() == [(1,)]
    assert again.closed


def test_counts_match_duckdb_on_the_same_file(data):
    got = data["db"].sql(
        "SELECT event, count(*), count(DISTINCT user_id), round(sum(price), 2) "
        "FROM events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    want = oracle(
        "SELECT event, count(*), count(DISTINCT user_id), round(sum(price), 2) "
        "FROM read_csv('{}') GROUP BY 1 ORDER BY 1".format(data["events"])
    )
    assert [(e, n, u) for e, n, u, _ in got] == [(e, n, u) for e, n, u, _ in want]
    for (_, _, _, a), (_, _, _, b) in zip(got, want):
        assert (a is None and b is None) or abs(float(a) - float(b)) < 1e-6


def test_segment_language_matches_duckdb(data):
    db = data["db"]
    size = db.sql(
        "CREATE OR REPLACE SEGMENT buyers_de AS "
        "DID 'purchase' AT LEAST 2 TIMES BETWEEN '2026-11-05' AND '2026-11-25' "
        "AND PROFILE country = 'DE'"
    ).fetchall()
    want = oracle(
        """
        SELECT count(*) FROM (
          SELECT e.user_id FROM read_csv('{e}') e JOIN read_csv('{p}') p USING (user_id)
          WHERE e.event = 'purchase' AND e.ts >= TIMESTAMPTZ '2026-11-05 00:00:00+00'
            AND e.ts < TIMESTAMPTZ '2026-11-25 00:00:00+00' AND p.country = 'DE'
          GROUP BY e.user_id HAVING count(*) >= 2)
        """.format(e=data["events"], p=data["profiles"])
    )[0][0]
    assert want > 0
    assert size == [("buyers_de", want)]
    assert db.sql("SELECT segment_size('buyers_de')").fetchone() == (want,)
    members = db.sql(
        "SELECT count(*) FROM profiles WHERE in_segment('buyers_de', user_id)"
    ).fetchone()
    assert members == (want,)


def test_results_as_arrow_pandas_polars_and_tuples(data):
    r = data["db"].sql("SELECT event, count(*) AS n FROM events GROUP BY 1 ORDER BY 1")
    t = r.arrow()
    assert isinstance(t, pa.Table)
    assert t.schema.names == ["event", "n"]
    assert t.schema.field("event").type == pa.string()
    assert t.schema.field("n").type == pa.int64()
    # The Arrow stream protocol: any consumer takes the result itself.
    assert pa.table(r).equals(t)
    assert pa.RecordBatchReader.from_stream(r).read_all().equals(t)
    df = r.df()
    assert isinstance(df, pd.DataFrame) and list(df["event"]) == sorted(EVENTS)
    p = r.pl()
    assert isinstance(p, pl.DataFrame) and p["n"].sum() == 6000
    assert pl.DataFrame(r).equals(p)
    rows = r.fetchall()
    assert rows == list(zip(df["event"], df["n"]))
    assert len(r) == 4 and r.columns == ["event", "n"]


def test_a_statement_without_rows_is_an_empty_result_of_its_schema(data):
    db = data["db"]
    r = db.sql("SET segdb.as_of = '2026-12-01T00:00:00Z'")
    assert r.fetchall() == [] and len(r) == 0
    assert r.arrow().num_rows == 0
    r = db.sql("SELECT user_id, ts FROM events WHERE false")
    t = r.arrow()
    assert t.num_rows == 0 and t.schema.names == ["user_id", "ts"]
    assert t.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert r.df().empty and r.pl().shape == (0, 2)
    db.sql("RESET segdb.as_of")


def test_ids_are_pseudonyms_and_pseudonymize_finds_a_person(data):
    db = data["db"]
    stored = [u for (u,) in db.sql("SELECT DISTINCT user_id FROM profiles").fetchall()]
    assert len(stored) == 400
    assert not any("@" in u for u in stored)
    one = db.sql(
        "SELECT count(*) FROM events WHERE user_id = pseudonymize('user.7@example.com')"
    ).fetchone()[0]
    want = oracle(
        "SELECT count(*) FROM read_csv('{}') WHERE user_id = 'user.7@example.com'".format(
            data["events"]
        )
    )[0][0]
    assert one == want > 0


def test_qmark_parameters(data):
    db = data["db"]
    n = db.sql(
        "SELECT count(*) FROM events WHERE event = ? AND ts >= ? AND ts < ?",
        ["purchase", dt.date(2026, 11, 10), dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)],
    ).fetchone()[0]
    want = oracle(
        "SELECT count(*) FROM read_csv('{}') WHERE event = 'purchase' "
        "AND ts >= TIMESTAMPTZ '2026-11-10 00:00:00+00' AND ts < TIMESTAMPTZ '2026-11-20 00:00:00+00'".format(
            data["events"]
        )
    )[0][0]
    assert n == want > 0
    assert db.sql("SELECT ? + 1, ?, ?, ?", [41, "a'b", None, 2.5]).fetchone() == (42, "a'b", None, 2.5)
    # A Decimal is compared as a number (as text, '150.25' > '20.00' would be false).
    above = db.sql("SELECT count(*) FROM events WHERE price > ?", [decimal.Decimal("150.25")]).fetchone()[0]
    want = oracle(
        "SELECT count(*) FROM read_csv('{}') WHERE price > 150.25".format(data["events"])
    )[0][0]
    assert above == want > 0
    with pytest.raises(segdb.ProgrammingError, match="sequence"):
        db.sql("SELECT ?", {"a": 1})
    with pytest.raises(TypeError):
        db.sql("SELECT ?", [object()])
    with pytest.raises(segdb.ProgrammingError, match="one statement"):
        db.sql("SELECT ?; SELECT ?", [1, 2])


def test_dbapi_cursor(data):
    assert segdb.apilevel == "2.0" and segdb.paramstyle == "qmark"
    conn = data["db"]
    cur = conn.cursor()
    cur.execute("SELECT event, count(*) AS n FROM events WHERE event = ? GROUP BY 1", ["view"])
    assert [d[0] for d in cur.description] == ["event", "n"]
    assert cur.description[0][1] == segdb.STRING and cur.description[1][1] == segdb.NUMBER
    assert cur.rowcount == 1
    row = cur.fetchone()
    assert row[0] == "view" and cur.fetchone() is None
    cur.execute("SELECT DISTINCT event FROM events ORDER BY 1")
    assert cur.fetchmany(3) == [("add_to_cart",), ("app_open",), ("purchase",)]
    assert cur.fetchall() == [("view",)]
    cur.execute("SELECT DISTINCT event FROM events ORDER BY 1")
    assert [r[0] for r in cur] == sorted(EVENTS)
    assert conn.execute("SELECT 2").fetchall() == [(2,)]
    conn.commit()
    with pytest.raises(segdb.NotSupportedError):
        conn.rollback()
    cur.close()
    with pytest.raises(segdb.ProgrammingError):
        cur.execute("SELECT 1")


def test_errors_are_classes_of_their_kind(data):
    db = data["db"]
    for cls in (segdb.ProgrammingError, segdb.OperationalError, segdb.InternalError, segdb.DataError):
        assert issubclass(cls, segdb.DatabaseError) and issubclass(cls, segdb.Error)
    with pytest.raises(segdb.ProgrammingError, match="SELEC"):
        db.sql("SELEC 1")
    with pytest.raises(segdb.ProgrammingError, match="segment .nope. does not exist"):
        db.sql("SELECT segment_size('nope')")
    with pytest.raises(segdb.ProgrammingError, match="written only by ingest"):
        db.sql("INSERT INTO events (user_id, event, ts) VALUES ('raw@example.com', 'x', now())")
    with pytest.raises(segdb.ProgrammingError, match="cannot load"):
        db.ingest("people", data["events"])
    # A raw id in a failing statement is not echoed back.
    with pytest.raises(segdb.Error) as e:
        db.sql("SELECT * FROM events WHERE user_id = pseudonymize('canary.9@example.com') AND nope = 1")
    assert "canary.9@example.com" not in str(e.value)


def test_html_is_escaped(data):
    html = data["db"].sql("SELECT '<script>x</script>' AS \"<b>\"")._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html
    # Two columns of one name both show.
    twice = data["db"].sql("SELECT * FROM (SELECT 1 AS a) x CROSS JOIN (SELECT 2 AS a) y")
    assert twice.fetchall() == [(1, 2)]
    assert "<td>1</td><td>2</td>" in twice._repr_html_()


def test_statements_run_without_the_gil(data):
    db = data["db"]
    out = []
    done = threading.Event()

    def work():
        # A self-join of every user's events: long enough to watch.
        out.append(
            db.sql(
                "SELECT count(*) FROM events a JOIN events b ON a.user_id = b.user_id "
                "JOIN events c ON b.user_id = c.user_id"
            ).fetchone()[0]
        )
        done.set()

    t = threading.Thread(target=work)
    t.start()
    spins = 0
    while not done.is_set():
        spins += 1  # runs only while the statement does not hold the GIL
    t.join()
    assert out and out[0] > 6000
    assert spins > 1000, spins
    threads = [threading.Thread(target=lambda: out.append(db.sql("SELECT count(*) FROM events").fetchone()[0])) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert out[1:] == [6000] * 4


def test_the_readme_notebook_example_runs_on_the_demo_database(tmp_path, monkeypatch):
    """The README's Python example, as written, on what `segdb demo` loads (the plot goes to a
    recording pandas plotting backend instead of matplotlib)."""
    import os
    import pathlib
    import subprocess
    import sys
    import types

    root = pathlib.Path(__file__).resolve().parents[2]
    binary = os.environ.get("SEGDB_BIN") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/segdb-target")), "debug", "segdb"
    )
    assert os.path.exists(binary), "build segdb first (cargo build): " + binary
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGDB_")}
    subprocess.run([binary, "demo", "--users", "1000"], cwd=tmp_path, env=env, check=True, capture_output=True)
    readme = (root / "README.md").read_text()
    section = readme.split("\n## Python (notebooks)\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    plotted = []
    backend = types.ModuleType("segdb_test_plot")
    backend.plot = lambda data, kind, **kw: plotted.append((data.copy(), kind, kw))
    monkeypatch.setitem(sys.modules, "segdb_test_plot", backend)
    pd.set_option("plotting.backend", "segdb_test_plot")
    monkeypatch.chdir(tmp_path)
    scope = {}
    try:
        exec(compile(code, "README.md", "exec"), scope)
    finally:
        pd.reset_option("plotting.backend")
        if "db" in scope:
            scope["db"].close()
    sizes = scope["sizes"]
    assert len(sizes) == 21
    # The demo's activity ends today: every day of the last three weeks has abandoners.
    assert (sizes["size"] > 0).all(), sizes
    assert plotted and plotted[0][2]["y"] == "size"
