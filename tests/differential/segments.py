"""Differential test of the segment language: segdb vs plain SQL in DuckDB on the same files.

The oracle here is written independently of segdb's compiler: every segment expression is a small
Python tree, rendered once as segment-language text (for segdb, with minimal parentheses so the
NOT > AND > OR precedence is exercised) and once as plain SQL over the raw input files (for DuckDB).
Members are compared as sets of pseudonyms: DuckDB's raw ids are pseudonymised here with the
DESIGN.md formula and the test key.

usage: segments.py SEGDB_BIN DATA_DIR KEYRING INPUT_DIR SEED CASES
"""

import base64
import datetime
import hashlib
import hmac
import json
import random
import subprocess
import sys

import duckdb

SEGDB, DATA, KEYRING, INPUT, SEED, CASES = sys.argv[1:7]
SEED, CASES = int(SEED), int(CASES)
KEY = base64.b64decode(json.load(open(KEYRING))["keys"]["user"])
DAY_US = 86_400_000_000
EVENTS = ["page_view", "view_item", "add_to_cart", "begin_checkout", "purchase", "newsletter_signup", "app_open", "search"]
UNITS = {"MINUTES": 60, "HOURS": 3600, "DAYS": 86400, "WEEKS": 7 * 86400}
AS_OFS = ["2026-02-01T00:00:00Z", "2026-01-28T00:00:00Z", "2026-01-25T13:30:00Z", "2026-01-31T23:59:59Z"]


def pseudonym(raw):
    mac = hmac.new(KEY, b"segdb/v1\x00user\x00" + raw.encode(), hashlib.sha256).digest()[:16]
    return "p1_" + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


# ---- expression trees -------------------------------------------------------------------------

class Leaf:
    def __init__(self, seg, sql):
        self.seg, self.sql = seg, sql


class Not:
    def __init__(self, x):
        self.x = x


class And:
    def __init__(self, a, b):
        self.a, self.b = a, b


class Or:
    def __init__(self, a, b):
        self.a, self.b = a, b


def seg_text(e):
    """Segment-language text with the fewest parentheses the precedence allows."""
    if isinstance(e, Leaf):
        return e.seg
    if isinstance(e, Not):
        inner = seg_text(e.x)
        return f"NOT {inner}" if isinstance(e.x, (Leaf, Not)) else f"NOT ({inner})"
    if isinstance(e, And):
        side = lambda x: f"({seg_text(x)})" if isinstance(x, Or) else seg_text(x)
        return f"{side(e.a)} AND {side(e.b)}"
    return f"{seg_text(e.a)} OR {seg_text(e.b)}"


def oracle_sql(e):
    """Plain SQL returning raw user_ids, fully parenthesised."""
    if isinstance(e, Leaf):
        return e.sql
    if isinstance(e, Not):
        return f"(SELECT user_id FROM universe EXCEPT {oracle_sql(e.x)})"
    op = "INTERSECT" if isinstance(e, And) else "UNION"
    return f"({oracle_sql(e.a)} {op} {oracle_sql(e.b)})"


def ts_sql(us):
    return f"make_timestamptz({us}::BIGINT)"


def window(rng, as_of_us):
    kind = rng.choice(["none", "last", "last", "since", "between"])
    if kind == "none":
        return "", f"ts < {ts_sql(as_of_us)}"
    if kind == "last":
        unit = rng.choice(["DAYS", "DAYS", "HOURS", "WEEKS", "MINUTES"])
        n = {"DAYS": rng.randint(1, 20), "HOURS": rng.randint(1, 200), "WEEKS": rng.randint(1, 3), "MINUTES": rng.randint(30, 5000)}[unit]
        lo = as_of_us - n * UNITS[unit] * 1_000_000
        return f" IN THE LAST {n} {unit}", f"ts >= {ts_sql(lo)} AND ts < {ts_sql(as_of_us)}"
    if kind == "since":
        day = rng.randint(10, 30)
        hour = rng.choice([0, 0, 6, 18])
        txt = f"2026-01-{day:02d}T{hour:02d}:00:00Z"
        lo = (1767225600 + (day - 1) * 86400 + hour * 3600) * 1_000_000
        return f" SINCE '{txt}'", f"ts >= {ts_sql(lo)} AND ts < {ts_sql(as_of_us)}"
    d1 = rng.randint(10, 28)
    d2 = rng.randint(d1, 31)
    lo = (1767225600 + (d1 - 1) * 86400) * 1_000_000
    hi = (1767225600 + (d2 - 1) * 86400 + 86399) * 1_000_000 + 999_999
    return f" BETWEEN '2026-01-{d1:02d}' AND '2026-01-{d2:02d}T23:59:59.999999Z'", f"ts >= {ts_sql(lo)} AND ts < {ts_sql(hi)}"


def freq(rng):
    kind = rng.choice(["none", "none", "least", "most", "exactly", "between"])
    if kind == "none":
        return "", "c >= 1"
    if kind == "least":
        n = rng.randint(0, 4)
        return f" AT LEAST {n} TIMES", f"c >= {n}"
    if kind == "most":
        n = rng.randint(0, 3)
        return f" AT MOST {n} TIMES", f"c <= {n}"
    if kind == "exactly":
        n = rng.randint(0, 3)
        return f" EXACTLY {n} TIMES", f"c = {n}"
    a = rng.randint(0, 3)
    b = rng.randint(a, a + 3)
    return f" BETWEEN {a} AND {b} TIMES", f"c BETWEEN {a} AND {b}"


def did_leaf(rng, as_of_us):
    ev = rng.choice(EVENTS + ["ANY"])
    ev_seg = "ANY EVENT" if ev == "ANY" else f"'{ev}'"
    ev_sql = "TRUE" if ev == "ANY" else f"event = '{ev}'"
    where_seg, where_sql = "", "TRUE"
    if rng.random() < 0.25:
        p = rng.choice([5, 20, 50, 120])
        where_seg, where_sql = f" WHERE price > {p}", f"price > {p}"
    elif rng.random() < 0.1:
        where_seg, where_sql = " WHERE category IN ('shoes', 'books')", "category IN ('shoes', 'books')"
    f_seg, f_cond = freq(rng)
    w_seg, w_cond = window(rng, as_of_us)
    seg = f"DID {ev_seg}{where_seg}{f_seg}{w_seg}"
    sql = (
        f"(SELECT u.user_id FROM universe u LEFT JOIN (SELECT user_id, count(*) AS c FROM events "
        f"WHERE ({ev_sql}) AND ({where_sql}) AND {w_cond} GROUP BY user_id) x ON u.user_id = x.user_id "
        f"WHERE {f_cond.replace('c', 'coalesce(x.c, 0)', 1)})"
    )
    return Leaf(seg, sql)


def seq_leaf(rng, as_of_us):
    a, b = rng.choice(EVENTS), rng.choice(EVENTS)
    w_seg, w_cond = window(rng, as_of_us)
    within_seg, within_cond = "", ""
    if rng.random() < 0.6:
        unit = rng.choice(["MINUTES", "HOURS", "DAYS"])
        n = {"MINUTES": rng.randint(1, 30), "HOURS": rng.randint(1, 24), "DAYS": rng.randint(1, 5)}[unit]
        within_seg = f" WITHIN {n} {unit}"
        within_cond = f" AND y.ts <= x.ts + INTERVAL {n * UNITS[unit]} SECOND"
    seg = f"DID '{a}' THEN '{b}'{within_seg}{w_seg}"
    sql = (
        f"(SELECT DISTINCT x.user_id FROM (SELECT user_id, ts FROM events WHERE event = '{a}' AND {w_cond}) x "
        f"JOIN (SELECT user_id, ts FROM events WHERE event = '{b}' AND {w_cond}) y "
        f"ON x.user_id = y.user_id AND x.ts < y.ts{within_cond})"
    )
    return Leaf(seg, sql)


PROFILES = [
    ("country = 'DE'", "country = 'DE'"),
    ("plan IN ('plus', 'premium')", "plan IN ('plus', 'premium')"),
    ("device = 'mobile' AND age_band = '25-34'", "device = 'mobile' AND age_band = '25-34'"),
    ("country = 'US' OR country = 'GB'", "country = 'US' OR country = 'GB'"),
    ("signup_date >= DATE '2025-06-01'", "signup_date >= DATE '2025-06-01'"),
]


def leaf(rng, as_of_us):
    r = rng.random()
    if r < 0.45:
        return did_leaf(rng, as_of_us)
    if r < 0.6:
        return seq_leaf(rng, as_of_us)
    if r < 0.8:
        seg, sql = rng.choice(PROFILES)
        return Leaf(f"PROFILE {seg}", f"(SELECT user_id FROM profiles WHERE {sql})")
    if r < 0.87:
        return Leaf("ALL USERS", "(SELECT user_id FROM universe)")
    if r < 0.94:
        return Leaf("IN SEGMENT base", "(SELECT user_id FROM base)")
    return Leaf(
        "USERS IN (SELECT user_id FROM profiles WHERE plan = 'premium')",
        "(SELECT user_id FROM profiles WHERE plan = 'premium')",
    )


def expr(rng, as_of_us, depth):
    if depth == 0 or rng.random() < 0.3:
        return leaf(rng, as_of_us)
    r = rng.random()
    if r < 0.2:
        return Not(expr(rng, as_of_us, depth - 1))
    if r < 0.6:
        return And(expr(rng, as_of_us, depth - 1), expr(rng, as_of_us, depth - 1))
    return Or(expr(rng, as_of_us, depth - 1), expr(rng, as_of_us, depth - 1))


def micros(iso):
    t = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def main():
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{INPUT}/events-*.parquet')")
    con.execute(f"CREATE VIEW profiles AS SELECT * FROM read_parquet('{INPUT}/profiles.parquet')")
    con.execute(
        f"CREATE TABLE universe AS SELECT user_id FROM profiles UNION SELECT user_id FROM events "
        f"UNION SELECT user_id FROM read_parquet('{INPUT}/consent.parquet')"
    )
    # The base segment used by IN SEGMENT leaves.
    base_seg = "DID 'purchase' IN THE LAST 20 DAYS OR PROFILE plan = 'premium'"
    rng = random.Random(SEED)
    cases = []
    for i in range(CASES):
        as_of = AS_OFS[i % len(AS_OFS)]
        as_of_us = micros(as_of)
        # base is evaluated at this as_of too
        con.execute("DROP TABLE IF EXISTS base")
        e = expr(rng, as_of_us, 3)
        cases.append((as_of, as_of_us, e))

    script = []
    for i, (as_of, as_of_us, e) in enumerate(cases):
        script.append(f"SET segdb.as_of = '{as_of}';")
        if i == 0:
            script.append(f"CREATE OR REPLACE SEGMENT base AS {base_seg};")
        script.append(f"CREATE OR REPLACE SEGMENT c{i} AS {seg_text(e)};")
        script.append(f"SELECT user_id FROM segment_members('c{i}') ORDER BY user_id;")
    sql_file = f"{DATA}.cases.sql"
    with open(sql_file, "w") as f:
        f.write("\n".join(script) + "\n")
    out = subprocess.run(
        [SEGDB, "--data", DATA, "--keyring", KEYRING, "sql", "--format", "json", "-f", sql_file],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        print("segdb failed:", out.stderr[-3000:])
        sys.exit(1)
    results = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    # Output per case: CREATE (1 row) then SELECT (rows); the first case adds base's CREATE.
    it = iter(results)
    failures = 0
    interesting = 0
    universe = con.execute("SELECT count(*) FROM universe").fetchone()[0]
    for i, (as_of, as_of_us, e) in enumerate(cases):
        if i == 0:
            next(it)
        created = next(it)
        members = next(it)
        got = {r["user_id"] for r in members}
        con.execute("DROP TABLE IF EXISTS base")
        base_leaf = Or(did_base(as_of_us), Leaf("", "(SELECT user_id FROM profiles WHERE plan = 'premium')"))
        con.execute(f"CREATE TABLE base AS {oracle_sql(base_leaf)}")
        want = {pseudonym(r[0]) for r in con.execute(oracle_sql(e)).fetchall()}
        assert created[0]["size"] == len(got), (created, len(got))
        if 0 < len(want) < universe:
            interesting += 1
        if got != want:
            failures += 1
            print(f"MISMATCH seed={SEED} case={i} as_of={as_of}\n  segment: {seg_text(e)}\n  segdb {len(got)} vs duckdb {len(want)};"
                  f" only segdb: {len(got - want)}, only duckdb: {len(want - got)}")
    # Guard against a vacuous run: most cases must select a proper, non-empty subset.
    if interesting * 2 < len(cases):
        print(f"only {interesting} of {len(cases)} cases selected a proper non-empty subset")
        failures += 1
    print(f"{len(cases) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


def did_base(as_of_us):
    lo = as_of_us - 20 * DAY_US
    return Leaf("", f"(SELECT DISTINCT user_id FROM events WHERE event = 'purchase' AND ts >= {ts_sql(lo)} AND ts < {ts_sql(as_of_us)})")


if __name__ == "__main__":
    main()
