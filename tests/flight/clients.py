"""Real Flight SQL clients against a running `segdb serve` (started by tests/it/flight.rs).

Usage: clients.py HOST:PORT ADMIN_PW ANALYST_PW READER_PW CANARY

Drives the ADBC Flight SQL driver (connect with user/password, execute, fetch Arrow,
adbc_get_objects down to columns, adbc_get_table_schema, adbc_execute_schema, a prepared
statement with parameters, bulk ingest with adbc_ingest, segment statements, role and error
codes) and flightsql-dbapi through SQLAlchemy (the Superset path: reflect tables and columns, run
a query). Every check asserts; the last line printed is a JSON summary the Rust test reads.
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
import flightsql.sqlalchemy  # noqa: F401  registers the datafusion+flightsql dialect
import sqlalchemy
from adbc_driver_manager import AdbcStatusCode

addr, admin_pw, analyst_pw, reader_pw, canary = sys.argv[1:6]
uri = f"grpc://{addr}"
summary = {}


def connect(user, pw):
    return flight_sql.connect(uri, db_kwargs={"username": user, "password": pw})


def scalar(cur, sql, params=None):
    cur.execute(sql, parameters=params)
    t = cur.fetch_arrow_table()
    return t.column(0)[0].as_py()


def expect_error(fn, code, needle=None):
    try:
        fn()
    except adbc_driver_manager.Error as e:
        assert e.status_code == code, f"expected {code}, got {e.status_code}: {e}"
        if needle:
            assert needle.lower() in str(e).lower(), f"{needle!r} not in {e}"
        return str(e)
    raise AssertionError(f"expected an error with {code}")


# --- admin over ADBC -----------------------------------------------------------------------
with connect("admin", admin_pw) as conn, conn.cursor() as cur:
    events = scalar(cur, "SELECT count(*) FROM events")
    assert events > 0
    summary["events"] = events

    # Fetch Arrow: the schema of the stream equals what execute_schema reports.
    cur.execute("SELECT user_id, event, ts FROM events ORDER BY ts LIMIT 5")
    t = cur.fetch_arrow_table()
    assert t.num_rows == 5 and t.column_names == ["user_id", "event", "ts"]
    assert all(u.startswith("p1_") for u in t.column("user_id").to_pylist())
    s = cur.adbc_execute_schema("SELECT user_id, event, ts FROM events")
    assert s.names == ["user_id", "event", "ts"], s
    assert s.field("ts").type == t.schema.field("ts").type

    # Prepared statement with a parameter equals the literal query.
    by_literal = scalar(cur, "SELECT count(*) FROM events WHERE event = 'purchase'")
    by_param = scalar(cur, "SELECT count(*) FROM events WHERE event = ?", ("purchase",))
    assert by_literal == by_param and by_param > 0, (by_literal, by_param)
    # Re-executing the same prepared statement with another value.
    cur.adbc_prepare("SELECT count(*) FROM events WHERE event = ?")
    assert scalar(cur, "SELECT count(*) FROM events WHERE event = ?", ("page_view",)) == scalar(
        cur, "SELECT count(*) FROM events WHERE event = 'page_view'"
    )
    summary["purchases"] = by_param

    # Metadata: get_objects down to columns, table schema.
    objs = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    cat = [c for c in objs if c["catalog_name"] == "segdb"]
    assert cat, objs
    schemas = {s["db_schema_name"]: s for s in cat[0]["catalog_db_schemas"]}
    assert "public" in schemas, schemas.keys()
    tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
    for name in ["events", "profiles", "consent"]:
        assert name in tables, tables.keys()
        assert tables[name]["table_type"] == "TABLE"
    cols = [c["column_name"] for c in tables["events"]["table_columns"]]
    assert {"user_id", "event", "ts"} <= set(cols), cols
    ts = conn.adbc_get_table_schema("events")
    assert "user_id" in ts.names and "ts" in ts.names
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "segdb", info
    summary["vendor_version"] = info.get("vendor_version")
    types = conn.adbc_get_table_types()
    assert "TABLE" in types and "VIEW" in types, types

    # Segment statements go through the prepare path too.
    cur.execute("CREATE OR REPLACE SEGMENT flight_buyers AS DID 'purchase'")
    cur.fetchall()
    size = scalar(cur, "SELECT segment_size('flight_buyers')")
    buyers = scalar(cur, "SELECT count(DISTINCT user_id) FROM events WHERE event = 'purchase'")
    assert size == buyers, (size, buyers)
    cur.execute("SHOW SEGMENTS")
    names = [r[0] for r in cur.fetchall()]
    assert "flight_buyers" in names, names
    summary["segment_size"] = size
    assert scalar(cur, "SELECT count(*) FROM segments.flight_buyers") == size
    objs = conn.adbc_get_objects(depth="tables", db_schema_filter="segments").read_all().to_pylist()
    seg_tables = [t["table_name"] for c in objs for s in c["catalog_db_schemas"]
                  for t in (s["db_schema_tables"] or [])]
    assert "flight_buyers" in seg_tables, objs

    # Bulk ingest: raw ids are pseudonymised at the door; the count grows by what was sent.
    before = scalar(cur, "SELECT count(*) FROM events")
    batch = pa.table(
        {
            "user_id": [canary, canary, "flight.other@example.com"],
            "event": ["page_view", "purchase", "page_view"],
            "ts": pa.array(
                ["2026-01-30T10:00:00Z", "2026-01-30T10:05:00Z", "2026-01-30T11:00:00Z"]
            ),
        }
    )
    n = cur.adbc_ingest("events", batch, mode="append")
    assert n == 3, n
    after = scalar(cur, "SELECT count(*) FROM events")
    assert after == before + 3, (before, after)
    stored = scalar(cur, "SELECT count(*) FROM events WHERE user_id = pseudonymize(?)", (canary,))
    assert stored == 2, stored
    raw = scalar(cur, "SELECT count(*) FROM events WHERE user_id = ?", (canary,))
    assert raw == 0, raw
    # A bad batch is refused whole, with the row named and nothing loaded.
    bad = pa.table({"user_id": ["x@example.com"], "event": ["page_view"], "ts": ["not a time"]})
    msg = expect_error(lambda: cur.adbc_ingest("events", bad, mode="append"),
                       AdbcStatusCode.INVALID_ARGUMENT, "row 1")
    assert "x@example.com" not in msg, msg
    assert scalar(cur, "SELECT count(*) FROM events") == after
    expect_error(lambda: cur.adbc_ingest("not_a_table", batch, mode="append"),
                 AdbcStatusCode.INVALID_ARGUMENT, "events, profiles, consent or links")
    summary["ingested"] = n
    # Personal columns: undeclared ones refuse the load whole; declared ones are stored only as
    # their match keys (the raw e-mail is then in no byte under the data dir).
    email = canary.replace("@", ".mail@")
    prof = pa.table({"user_id": [canary], "email": [email], "plan": ["plus"]})
    msg = expect_error(lambda: cur.adbc_ingest("profiles", prof, mode="append"),
                       AdbcStatusCode.INVALID_ARGUMENT, "looks personal")
    assert email not in msg, msg
    cur.execute("ALTER TABLE profiles SET PII (email AS EMAIL)")
    assert cur.adbc_ingest("profiles", prof, mode="append") == 1
    assert scalar(cur, "SELECT count(*) FROM profiles WHERE email_sha256 = hash_email(?)", (email,)) == 1
    # Identity links through bulk ingest: a cookie id tied to the canary stitches into its
    # profile (the canary's id came first, so it is canonical); a placeholder is refused whole.
    cookie = "flight-cookie-" + canary
    links = pa.table({"user_id": [canary], "linked_id": [cookie], "id_type": ["cookie"]})
    assert cur.adbc_ingest("links", links, mode="append") == 1
    assert scalar(cur, "SELECT identity_of(pseudonymize(?))", (cookie,)) == \
        scalar(cur, "SELECT pseudonymize(?)", (canary,))
    junk = pa.table({"user_id": [canary], "linked_id": ["undefined"]})
    expect_error(lambda: cur.adbc_ingest("links", junk, mode="append"),
                 AdbcStatusCode.INVALID_ARGUMENT, "placeholder")

    # Malformed SQL: InvalidArgument carrying the parse error.
    msg = expect_error(lambda: cur.execute("SELEC 1"), AdbcStatusCode.INVALID_ARGUMENT)
    summary["parse_error"] = msg.splitlines()[0][:120]
    expect_error(lambda: cur.execute("SELECT * FROM no_such_table"),
                 AdbcStatusCode.INVALID_ARGUMENT, "no_such_table")

# --- roles -------------------------------------------------------------------------------------
with connect("reader", reader_pw) as conn, conn.cursor() as cur:
    assert scalar(cur, "SELECT count(*) FROM profiles") > 0
    # One more buyer since the segment was created: the ingested canary's purchase.
    assert scalar(cur, "SELECT segment_size('flight_buyers')") == summary["segment_size"] + 1
    for sql in [
        "CREATE SEGMENT r1 AS DID 'purchase'",
        "DROP SEGMENT flight_buyers",
        "FORGET USER 'someone@example.com'",
        "VACUUM",
        "CREATE VIEW v AS SELECT 1",
        "INSERT INTO events VALUES (1)",
    ]:
        expect_error(lambda: cur.execute(sql), AdbcStatusCode.UNAUTHORIZED, "may not")
    expect_error(lambda: cur.adbc_ingest("events", batch, mode="append"),
                 AdbcStatusCode.UNAUTHORIZED)
    info = conn.adbc_get_info()
    summary["reader_info_ok"] = True

with connect("analyst", analyst_pw) as conn, conn.cursor() as cur:
    cur.execute("CREATE OR REPLACE SEGMENT analyst_seg AS DID 'page_view'")
    cur.fetchall()
    assert scalar(cur, "SELECT segment_size('analyst_seg')") > 0
    expect_error(lambda: cur.execute("FORGET USER 'someone@example.com'"),
                 AdbcStatusCode.UNAUTHORIZED)
    cur.execute("DROP SEGMENT analyst_seg")
    cur.fetchall()

# Wrong password.
expect_error(lambda: connect("admin", "wrong-password").cursor().execute("SELECT 1"),
             AdbcStatusCode.UNAUTHENTICATED)
expect_error(lambda: connect("nobody", "x").cursor().execute("SELECT 1"),
             AdbcStatusCode.UNAUTHENTICATED)

# --- flightsql-dbapi through SQLAlchemy (what Superset does) -----------------------------------
host, port = addr.rsplit(":", 1)
engine = sqlalchemy.create_engine(
    f"datafusion+flightsql://admin:{admin_pw}@{host}:{port}?insecure=true"
)
insp = sqlalchemy.inspect(engine)
schemas = insp.get_schema_names()
assert "public" in schemas, schemas
tables = insp.get_table_names(schema="public")
assert {"events", "profiles", "consent"} <= set(tables), tables
cols = {c["name"] for c in insp.get_columns("profiles", schema="public")}
assert "user_id" in cols, cols
with engine.connect() as c:
    n = c.execute(sqlalchemy.text("SELECT count(*) AS n FROM events")).scalar()
    assert n == summary["events"] + 3, (n, summary["events"])
    rows = c.execute(
        sqlalchemy.text("SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event")
    ).fetchall()
    assert len(rows) > 1
summary["sqlalchemy_tables"] = sorted(tables)

print(json.dumps(summary))
