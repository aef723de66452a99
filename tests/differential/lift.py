"""Differential test of holdout groups and lift: segdb vs an oracle in DuckDB and plain Python.

The scenario (deterministic from --seed) writes its own CSV inputs (~3600-3900 users with
profiles, 'ads' consent records from December 2025 and view/add_to_cart events in January 2026,
then ~500-700 more users and more events), drives the real `segdb` CLI and checks every answer
against an oracle written from DESIGN.md §8, §9 and §11 alone:

- three materialised segments with HOLDOUT 5, 10 and 50 PERCENT (the shares rotate over the
  definitions with the seed); one of them (the "lift segment", also chosen by the seed) is
  `FOR PURPOSE 'ads'` with every clause (FOR PURPOSE, COMMENT, REFRESH, HOLDOUT, KEEP; seeds 1, 2
  and 3 give it 5, 50 and 10 %), the others have no purpose. Created at t1 (version 1),
  refreshed at t2 after the second load (`REFRESH SEGMENT s AS OF t2`, version 2);
- split (versions 1 and 2): target (`segment_members`) and holdout (`segment_holdout`) are
  disjoint, their union is exactly the oracle's members (the definition evaluated in DuckDB over
  the same CSV files, with 'ads' consent for the lift segment), `segment_size` = |target|, and
  |holdout| lies within mean ± 4 sd of Binomial(members, n/100);
- history and changes: `segment_history` size/holdout per version (size + holdout = the members
  read at that version; for the FOR PURPOSE segment, both count members with consent at refresh
  time, like `size`), the REFRESH result; `segment_changes(s, 0, 1)` and `(s, 1, 2)` with
  `grp`; `segments.s` and `in_segment` mean the target group;
- stability: every member present in both versions keeps its group, and a fresh process reads
  the same groups;
- exports: `EXPORT SEGMENT` of the lift segment (its own purpose) and of a purpose-less segment
  `FOR PURPOSE 'ads'` write `<dir>/<s>-v2/part-00000.parquet` (read with DuckDB) equal to the
  target group (with 'ads' consent) and disjoint from the holdout, plus `_manifest.json`; an
  export with no purpose at all is refused;
- lift: conversion events generated *after* the groups were read from segdb: 'purchase' planted
  (exactly 25 % of the target and 10 % of the holdout convert within 14 days of t2), 'signup'
  null (exactly 12 % of both groups), 'trial' (3 + 2 converters: small-sample note), 'upgrade'
  (target only: lift NULL), 'refund' (only before as_of: nobody converts, p_value NULL), plus
  conversions before as_of, exactly at as_of (counts), exactly at as_of + days (does not count)
  and later, and by non-members. `segment_lift` for every segment (default days, days 14 and 3,
  version 1 and 2) is compared column by column (users/converters exactly, floats to 1e-9) with
  users/converters counted in DuckDB from the CSV files and the group lists, the statistics
  computed here from DESIGN.md §11 with math.erfc; the planted effect must be detected
  (ci_low > 0, p_value < 0.01), the null effect not (ci_low < 0 < ci_high);
- consent and erasure: FORGET USER of a target and a holdout converter (raw ids) and a later
  'ads' withdrawal of 5 members of the lift segment: reads, exports and every lift number follow
  (purpose-less segments lose only the forgotten users);
- `segdb report lift` (default and `--days 3 --version 1`): a well-formed SVG with two polylines,
  and the printed table equal to segment_lift's.

Members are compared as sets of pseudonyms, computed here with the DESIGN.md formula and the
keyring this test writes.

usage: lift.py --segdb BIN --work DIR [--seed N]
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import duckdb

from shared import iso, lit, ts_lit, write_csv

UTC = datetime.timezone.utc
JAN = datetime.datetime(2026, 1, 1, tzinfo=UTC)
DEC = datetime.datetime(2025, 12, 1, tzinfo=UTC)
DAY = datetime.timedelta(days=1)
COUNTRIES = ["DE", "FR", "US", "GB"]
PLANS = ["free", "plus", "premium"]
Z95 = 1.959963984540054
LIFT_COLUMNS = ["grp", "users", "converters", "rate", "lift", "ci_low", "ci_high", "p_value", "srm_p", "note"]
STAT_COLUMNS = ["lift", "ci_low", "ci_high", "p_value", "srm_p"]


def rand_time(rng, lo, hi, ms=0.2):
    """A uniformly random instant in [lo, hi), whole seconds, sometimes with milliseconds."""
    s = rng.randrange(int((hi - lo).total_seconds()))
    t = lo + datetime.timedelta(seconds=s)
    if rng.random() < ms:
        t += datetime.timedelta(milliseconds=rng.randrange(1, 1000))
    return t


def poisson(rng, lam):
    l, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= l:
            return k
        k += 1


# ---- segment definitions: segment-language text + independent SQL over E (events), P (profiles)

def did_sql(event, days):
    def sql(as_of):
        lo = as_of - datetime.timedelta(days=days)
        return (f"(SELECT DISTINCT user_id FROM E WHERE event = {lit(event)} "
                f"AND ts >= {ts_lit(lo)} AND ts < {ts_lit(as_of)})")
    return sql


DEFINITIONS = [
    # (name, segment text, oracle sql(as_of), windows for boundary events)
    ("recent_viewers", "DID 'view' IN THE LAST 10 DAYS",
     lambda t: did_sql("view", 10)(t), [("view", 10)]),
    ("eu_viewers", "DID 'view' IN THE LAST 14 DAYS AND PROFILE country IN ('DE', 'FR', 'GB')",
     lambda t: f"({did_sql('view', 14)(t)} INTERSECT (SELECT user_id FROM P WHERE country IN ('DE', 'FR', 'GB')))",
     [("view", 14)]),
    ("paid_or_cart", "PROFILE plan IN ('plus', 'premium') OR DID 'add_to_cart' IN THE LAST 7 DAYS",
     lambda t: f"((SELECT user_id FROM P WHERE plan IN ('plus', 'premium')) UNION {did_sql('add_to_cart', 7)(t)})",
     [("add_to_cart", 7)]),
]


# ---- input generation -----------------------------------------------------------------------

def consent_rows(rng, users):
    """'ads' records (and 'email' noise), all in December 2025: before every as_of of the test."""
    rows = []
    for u in users:
        if rng.random() >= 0.08:
            t0 = rand_time(rng, DEC, DEC + 19 * DAY)
            g = rng.random() < 0.9
            rows.append((u, "ads", "true" if g else "false", iso(t0)))
            if rng.random() < 0.15:  # a later record flips it
                t1 = t0 + datetime.timedelta(seconds=rng.randrange(3600, 10 * 86400))
                rows.append((u, "ads", "false" if g else "true", iso(t1)))
        if rng.random() < 0.3:
            rows.append((u, "email", "true" if rng.random() < 0.5 else "false", iso(rand_time(rng, DEC, JAN))))
    rng.shuffle(rows)
    return rows


def generate(rng, work):
    nb, nn = 3600 + rng.randrange(300), 500 + rng.randrange(200)
    base = [f"u{i}@example.com" for i in range(1, nb + 1)]
    new = [f"n{i}@example.com" for i in range(1, nn + 1)]
    t1 = JAN + 19 * DAY + datetime.timedelta(seconds=rng.randrange(2 * 3600, 22 * 3600))
    t1 += datetime.timedelta(milliseconds=rng.randrange(1, 1000))
    t2 = t1 + 9 * DAY + datetime.timedelta(seconds=rng.randrange(3600, 10 * 3600))

    write_csv(f"{work}/profiles_1.csv", ["user_id", "country", "plan"],
              [(u, rng.choice(COUNTRIES), rng.choice(PLANS)) for u in base])
    write_csv(f"{work}/profiles_2.csv", ["user_id", "country", "plan"],
              [(u, rng.choice(COUNTRIES), rng.choice(PLANS)) for u in new])
    write_csv(f"{work}/consent_1.csv", ["user_id", "purpose", "granted", "recorded_at"], consent_rows(rng, base))
    write_csv(f"{work}/consent_2.csv", ["user_id", "purpose", "granted", "recorded_at"], consent_rows(rng, new))

    windows = sorted({w for d in DEFINITIONS for w in d[3]})

    def boundary(at, users):
        out = []
        for event, days in windows:
            for u in rng.sample(users, 4):
                out.append((u, event, at - datetime.timedelta(days=days)))  # inside
            for u in rng.sample(users, 4):
                out.append((u, event, at))  # outside
        return out

    rows = []
    for u in base:
        for _ in range(poisson(rng, 3.0)):
            rows.append((u, "view", rand_time(rng, JAN, t1 + datetime.timedelta(hours=12))))
        for _ in range(poisson(rng, 0.6)):
            rows.append((u, "add_to_cart", rand_time(rng, JAN, t1 + datetime.timedelta(hours=12))))
    rows += boundary(t1, base)
    rng.shuffle(rows)
    write_csv(f"{work}/events_1.csv", ["user_id", "event", "ts"], [(u, e, iso(t)) for u, e, t in rows])

    rows = []
    for u in base:
        for _ in range(poisson(rng, 1.2)):
            rows.append((u, "view", rand_time(rng, t1, t2 + datetime.timedelta(hours=12))))
        for _ in range(poisson(rng, 0.3)):
            rows.append((u, "add_to_cart", rand_time(rng, t1, t2 + datetime.timedelta(hours=12))))
        if rng.random() < 0.03:  # late arrival: before t1, loaded after it
            rows.append((u, rng.choice(["view", "add_to_cart"]), rand_time(rng, t1 - 10 * DAY, t1)))
    for u in new:
        for _ in range(poisson(rng, 2.0)):
            rows.append((u, "view", rand_time(rng, t1 - 5 * DAY, t2 + datetime.timedelta(hours=12))))
        for _ in range(poisson(rng, 0.5)):
            rows.append((u, "add_to_cart", rand_time(rng, t1 - 5 * DAY, t2 + datetime.timedelta(hours=12))))
    rows += boundary(t2, base + new)
    rng.shuffle(rows)
    write_csv(f"{work}/events_2.csv", ["user_id", "event", "ts"], [(u, e, iso(t)) for u, e, t in rows])
    return base, new, t1, t2


def plant(rng, work, t2, target, holdout, others):
    """Post-campaign events, from the lift segment's groups (raw ids) as segdb reported them."""
    rows = []
    win_end = t2 + 14 * DAY
    tgt, hld = sorted(target), sorted(holdout)

    def converts(group, frac, event, boundary=True):
        chosen = rng.sample(group, round(frac * len(group)))
        for i, u in enumerate(chosen):
            if boundary and i < 3:
                t = t2  # exactly at as_of: counts
            elif boundary and i < 6:
                t = t2 + 3 * DAY  # counts within 14 days, not within 3
            else:
                t = rand_time(rng, t2, win_end)
            rows.append((u, event, t))
            if rng.random() < 0.2:  # a second conversion counts once
                rows.append((u, event, rand_time(rng, t2, win_end)))
        return chosen

    def outside(users, event, share):
        for u in users:
            if rng.random() < share:
                r = rng.random()
                if r < 0.35:
                    t = rand_time(rng, t2 - 8 * DAY, t2)
                elif r < 0.45:
                    t = t2 - datetime.timedelta(milliseconds=1)
                elif r < 0.6:
                    t = win_end  # exactly at as_of + 14 days: does not count
                else:
                    t = rand_time(rng, win_end, win_end + 10 * DAY)
                rows.append((u, event, t))

    converts(tgt, 0.25, "purchase")
    converts(hld, 0.10, "purchase")
    converts(tgt, 0.12, "signup", boundary=False)
    converts(hld, 0.12, "signup", boundary=False)
    outside(tgt + hld, "purchase", 0.15)
    outside(tgt + hld, "signup", 0.1)
    for u in rng.sample(tgt, 3) + rng.sample(hld, 2):
        rows.append((u, "trial", rand_time(rng, t2, win_end)))
    for u in rng.sample(tgt, 6):
        rows.append((u, "upgrade", rand_time(rng, t2, win_end)))
    for u in rng.sample(hld, 2):
        rows.append((u, "upgrade", win_end))
    for u in rng.sample(tgt + hld, 20):
        rows.append((u, "refund", rand_time(rng, t2 - 5 * DAY, t2)))
    # non-members of the lift segment (and users unknown so far) convert too
    for u in others:
        if rng.random() < 0.2:
            rows.append((u, "purchase", rand_time(rng, t2 - 10 * DAY, win_end + 5 * DAY)))
        if rng.random() < 0.1:
            rows.append((u, "signup", rand_time(rng, t2, win_end)))
    for i in range(1, 31):
        rows.append((f"x{i}@example.com", "purchase", rand_time(rng, t2, win_end)))
    rng.shuffle(rows)
    write_csv(f"{work}/events_post.csv", ["user_id", "event", "ts"], [(u, e, iso(t)) for u, e, t in rows])


# ---- segdb driver ---------------------------------------------------------------------------

class Segdb:
    def __init__(self, binary, work):
        self.binary = binary
        self.env = dict(os.environ, SEGDB_DATA=f"{work}/db", SEGDB_KEYRING=f"{work}/k.keyring")
        for v in ("SEGDB_FORMAT", "SEGDB_COMMAND", "SEGDB_FILE", "SEGDB_REFRESH_DUE"):
            self.env.pop(v, None)
        self.calls = 0

    def raw(self, *args):
        self.calls += 1
        return subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, timeout=300)

    def run(self, *args):
        p = self.raw(*args)
        if p.returncode != 0:
            print(f"segdb {' '.join(args)[:300]} failed with exit {p.returncode}:\n{p.stderr[-3000:]}")
            sys.exit(2)
        return p.stdout

    def ingest(self, kind, path):
        return self.run("ingest", kind, path)

    def sql(self, statements):
        """Run statements in one session; return one parsed JSON array per non-SET statement."""
        out = self.run("sql", "--format", "json", "-c", ";\n".join(statements))
        results = [json.loads(line) for line in out.splitlines() if line.strip()]
        expected = sum(1 for s in statements if not s.lstrip().upper().startswith("SET "))
        if len(results) != expected:
            print(f"expected {expected} results, got {len(results)} from:\n  " + "\n  ".join(statements) + f"\n{out[-2000:]}")
            sys.exit(2)
        return results

    def query(self, labelled):
        """[(label, statement)] in one session -> {label: rows}."""
        res = self.sql([s for _, s in labelled])
        return dict(zip([l for l, _ in labelled], res))


# ---- oracle ---------------------------------------------------------------------------------

class Oracle:
    def __init__(self, work):
        self.work = work
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET threads = 1")  # row_number() OVER () = file order
        self.ecols = "{'user_id': 'VARCHAR', 'event': 'VARCHAR', 'ts': 'TIMESTAMPTZ'}"
        self.ccols = "{'user_id': 'VARCHAR', 'purpose': 'VARCHAR', 'granted': 'BOOLEAN', 'recorded_at': 'TIMESTAMPTZ'}"
        pcols = "{'user_id': 'VARCHAR', 'country': 'VARCHAR', 'plan': 'VARCHAR'}"
        c = self.con
        c.execute("CREATE TABLE ev (user_id VARCHAR, event VARCHAR, ts TIMESTAMPTZ, batch INTEGER)")
        c.execute("CREATE TABLE prof (user_id VARCHAR, country VARCHAR, plan VARCHAR, load INTEGER, rn BIGINT)")
        c.execute("CREATE TABLE cons (user_id VARCHAR, purpose VARCHAR, granted BOOLEAN, recorded_at TIMESTAMPTZ, load INTEGER, rn BIGINT)")
        self.pcols = pcols
        self.forgotten = set()

    def load_events(self, path, batch):
        self.con.execute(f"INSERT INTO ev SELECT *, {batch} FROM read_csv('{path}', header = true, columns = {self.ecols})")

    def load_profiles(self, path, load):
        self.con.execute(f"INSERT INTO prof SELECT *, {load}, row_number() OVER () FROM read_csv('{path}', header = true, columns = {self.pcols})")

    def load_consent(self, path, load):
        self.con.execute(f"INSERT INTO cons SELECT *, {load}, row_number() OVER () FROM read_csv('{path}', header = true, columns = {self.ccols})")

    def forget(self, raw):
        self.forgotten.add(raw)

    def _state(self):
        forg = "(" + ", ".join(lit(f) for f in sorted(self.forgotten) or ["-none-"]) + ")"
        c = self.con
        c.execute(f"CREATE OR REPLACE TEMP TABLE E AS SELECT * FROM ev WHERE user_id NOT IN {forg}")
        c.execute(
            "CREATE OR REPLACE TEMP TABLE P AS SELECT user_id, country, plan FROM (SELECT *, row_number() OVER "
            f"(PARTITION BY user_id ORDER BY load DESC, rn DESC) AS r FROM prof WHERE user_id NOT IN {forg}) WHERE r = 1"
        )
        c.execute(f"CREATE OR REPLACE TEMP TABLE C AS SELECT * FROM cons WHERE user_id NOT IN {forg}")

    def definition(self, sql, as_of):
        self._state()
        return {r[0] for r in self.con.execute(sql(as_of)).fetchall()}

    def consent(self, at, purpose="ads"):
        """Users holding `purpose` at `at`: their latest record at or before `at` is a grant."""
        self._state()
        rows = self.con.execute(
            f"SELECT user_id FROM (SELECT user_id, granted, row_number() OVER (PARTITION BY user_id "
            f"ORDER BY recorded_at DESC, load DESC, rn DESC) AS r FROM C WHERE purpose = {lit(purpose)} "
            f"AND recorded_at <= {ts_lit(at)}) WHERE r = 1 AND granted"
        ).fetchall()
        return {r[0] for r in rows}

    def set_groups(self, groups):
        """groups: {(segment, version): (target raw ids, holdout raw ids)} -> table G."""
        c = self.con
        c.execute("CREATE OR REPLACE TABLE G (seg VARCHAR, ver INTEGER, user_id VARCHAR, grp VARCHAR)")
        vals = [f"({lit(s)}, {v}, {lit(u)}, {lit(g)})" for (s, v), (t, h) in sorted(groups.items())
                for g, us in (("target", t), ("holdout", h)) for u in sorted(us)]
        for i in range(0, len(vals), 5000):
            c.execute("INSERT INTO G VALUES " + ", ".join(vals[i:i + 5000]))

    def did_between(self, event, lo, hi):
        """Users (raw ids, current data) who did `event` in [lo, hi)."""
        self._state()
        return {r[0] for r in self.con.execute(
            f"SELECT DISTINCT user_id FROM E WHERE event = {lit(event)} AND ts >= {ts_lit(lo)} AND ts < {ts_lit(hi)}").fetchall()}

    def counts(self, seg, ver, event, as_of, days):
        """(users, converters) per group of G: members who did `event` in [as_of, as_of + days days)."""
        self._state()
        rows = self.con.execute(
            "SELECT grp, count(*), count(*) FILTER (WHERE conv) FROM (SELECT G.grp, EXISTS (SELECT 1 FROM E "
            f"WHERE E.user_id = G.user_id AND E.event = {lit(event)} AND E.ts >= {ts_lit(as_of)} "
            f"AND E.ts < {ts_lit(as_of)} + INTERVAL ({int(days)}) DAY) AS conv FROM G "
            f"WHERE G.seg = {lit(seg)} AND G.ver = {int(ver)}) GROUP BY grp"
        ).fetchall()
        got = {g: (n, k) for g, n, k in rows}
        return got.get("target", (0, 0)), got.get("holdout", (0, 0))


def lift_stats(t, h, pct):
    """DESIGN.md §11 for target t = (users, converters) and holdout h; returns the two rows."""
    (nt, ct), (nh, ch) = t, h
    rt = ct / nt if nt else None
    rh = ch / nh if nh else None
    row_t = {"grp": "target", "users": nt, "converters": ct, "rate": rt,
             "lift": None, "ci_low": None, "ci_high": None, "p_value": None, "srm_p": None}
    if rt is not None and rh is not None:
        if rh != 0:
            row_t["lift"] = (rt - rh) / rh
        se = math.sqrt(rt * (1 - rt) / nt + rh * (1 - rh) / nh)
        row_t["ci_low"], row_t["ci_high"] = rt - rh - Z95 * se, rt - rh + Z95 * se
        p = (ct + ch) / (nt + nh)
        se0 = math.sqrt(p * (1 - p) * (1 / nt + 1 / nh))
        if se0 > 0:
            row_t["p_value"] = math.erfc(abs((rt - rh) / se0) / math.sqrt(2))
    n = nt + nh
    if n > 0:
        eh = n * pct / 100
        et = n * (100 - pct) / 100
        chi2 = (nh - eh) ** 2 / eh + (nt - et) ** 2 / et
        row_t["srm_p"] = math.erfc(math.sqrt(chi2 / 2))
    small = not all(k >= 5 and m - k >= 5 for m, k in (t, h))
    row_h = {"grp": "holdout", "users": nh, "converters": ch, "rate": rh,
             "lift": None, "ci_low": None, "ci_high": None, "p_value": None, "srm_p": None}
    row_t["note"] = row_h["note"] = small  # True: a text expected
    return [row_t, row_h]


# ---- the test -------------------------------------------------------------------------------

class Checker:
    def __init__(self, pseudonym_of):
        self.raw_of = {v: k for k, v in pseudonym_of.items()}
        self.checks = 0
        self.failures = []

    def name(self, p):
        return f"{p}({self.raw_of.get(p, '?')})"

    def fail(self, what, msg):
        self.failures.append(what)
        print(f"MISMATCH {what}\n{msg}")
        return False

    def eq(self, what, got, want):
        self.checks += 1
        if got != want:
            return self.fail(what, f"  expected: {want!r}\n  got:      {got!r}")
        return True

    def true(self, what, cond, detail=""):
        self.checks += 1
        if not cond:
            return self.fail(what, f"  {detail}")
        return True

    def sets(self, what, got, want):
        self.checks += 1
        if got != want:
            only_s, only_o = sorted(got - want), sorted(want - got)
            return self.fail(what, f"  segdb {len(got)} vs oracle {len(want)};"
                             f" only in segdb ({len(only_s)}): {', '.join(map(self.name, only_s[:10]))}"
                             f"\n  only in oracle ({len(only_o)}): {', '.join(map(self.name, only_o[:10]))}")
        return True

    def lift_rows(self, what, got, want):
        """segment_lift's rows vs the oracle's: counts exactly, floats to 1e-9, note NULL or text."""
        self.checks += 1
        problems = []
        if len(got) != 2:
            problems.append(f"{len(got)} rows instead of 2")
        for g, w in zip(got, want):
            if list(g.keys()) != LIFT_COLUMNS:
                problems.append(f"columns {list(g.keys())} instead of {LIFT_COLUMNS}")
            for c in LIFT_COLUMNS:
                gv, wv = g.get(c), w.get(c)
                if c == "note":
                    ok = (isinstance(gv, str) and gv != "") if wv else gv is None
                elif c in ("grp", "users", "converters"):
                    ok = gv == wv
                elif wv is None or gv is None:
                    ok = gv is None and wv is None
                else:
                    ok = isinstance(gv, (int, float)) and abs(gv - wv) <= 1e-9 * max(1.0, abs(wv) if c in ("rate", "lift") else 1.0)
                if not ok:
                    want_s = ("a text" if wv else "NULL") if c == "note" else repr(wv)
                    problems.append(f"{w.get('grp')}.{c}: expected {want_s}, got {gv!r}")
        if problems:
            return self.fail(what, "  " + "\n  ".join(problems)
                             + f"\n  expected rows: {want}\n  got rows:      {got}")
        return True


def parse_table(text):
    """The rows of an arrow pretty-printed table: [{column: text or None}]."""
    lines = [l for l in text.splitlines() if l.startswith("|")]
    if not lines:
        return []
    cells = lambda l: [c.strip() for c in l.strip().strip("|").split("|")]
    head = cells(lines[0])
    out = []
    for l in lines[1:]:
        out.append({h: (v if v != "" else None) for h, v in zip(head, cells(l))})
    return head, out


def typed(rows):
    """Report table cells as segment_lift's JSON would have them."""
    out = []
    for r in rows:
        o = {}
        for c, v in r.items():
            if v is None or c in ("grp", "note"):
                o[c] = v
            elif c in ("users", "converters"):
                o[c] = int(v)
            else:
                try:
                    o[c] = float(v)
                except ValueError:
                    o[c] = v
        out.append(o)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segdb", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SEGDB_DIFF_SEED", "1")))
    args = ap.parse_args()
    started = time.time()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    for stale in ("db", "out", "out2"):
        shutil.rmtree(f"{work}/{stale}", ignore_errors=True)
    rng = random.Random(args.seed)

    key = bytes(rng.randrange(256) for _ in range(32))
    with open(f"{work}/k.keyring", "w") as f:
        json.dump({"keys": {"user": base64.b64encode(key).decode()}}, f)
    os.chmod(f"{work}/k.keyring", 0o600)

    def pseudonym(raw):
        mac = hmac.new(key, b"segdb/v1\x00user\x00" + raw.encode(), hashlib.sha256).digest()[:16]
        return "p1_" + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    base, new, t1, t2 = generate(rng, work)
    everyone = base + new + [f"x{i}@example.com" for i in range(1, 31)]
    pseudonym_of = {u: pseudonym(u) for u in everyone}
    raw_of = {p: u for u, p in pseudonym_of.items()}
    P = lambda raws: {pseudonym_of[r] for r in raws}
    chk = Checker(pseudonym_of)
    db = Segdb(args.segdb, work)
    oracle = Oracle(work)
    far = datetime.datetime(2100, 1, 1, tzinfo=UTC)  # "now" for consent: after every record

    pcts = [5, 10, 50]
    rng.shuffle(pcts)
    lift_i = pcts.index([5, 50, 10][(args.seed - 1) % 3])  # seeds 1, 2, 3 measure 5, 50, 10 %
    segs = []  # (name, text, sql, pct, purpose)
    for i, (name, text, sql, _) in enumerate(DEFINITIONS):
        segs.append((name, text, sql, pcts[i], "ads" if i == lift_i else None))
    L = segs[lift_i][0]
    plain = [s for s in segs if s[4] is None]

    def create_stmt(name, text, pct, purpose, i):
        if purpose:
            return (f"CREATE MATERIALIZED SEGMENT {name} FOR PURPOSE '{purpose}' COMMENT 'lift test' "
                    f"REFRESH MANUAL HOLDOUT {pct} PERCENT KEEP 10 VERSIONS AS {text}")
        if i % 2:
            return f"CREATE MATERIALIZED SEGMENT {name} REFRESH MANUAL HOLDOUT {pct} PERCENT AS {text}"
        return f"CREATE MATERIALIZED SEGMENT {name} HOLDOUT {pct} PERCENT AS {text}"

    # ---- load 1, create at t1 (version 1) ----
    db.ingest("profiles", f"{work}/profiles_1.csv")
    db.ingest("consent", f"{work}/consent_1.csv")
    db.ingest("events", f"{work}/events_1.csv")
    oracle.load_profiles(f"{work}/profiles_1.csv", 1)
    oracle.load_consent(f"{work}/consent_1.csv", 1)
    oracle.load_events(f"{work}/events_1.csv", 1)
    created = db.sql([f"SET segdb.as_of = '{iso(t1)}'"] + [create_stmt(n, t, p, pu, i) for i, (n, t, _, p, pu) in enumerate(segs)])

    # oracle members per version (raw ids, after purposes); all consent records predate t1, so
    # consent at t1, t2 and "now" (before the withdrawal) agree
    members = {1: {}, 2: {}}
    pre = {1: {}, 2: {}}
    cons_t1 = oracle.consent(t1)
    chk.true("all consent records predate t1 (scenario premise)", cons_t1 == oracle.consent(far))
    for name, _, sql, _, purpose in segs:
        pre[1][name] = oracle.definition(sql, t1)
        members[1][name] = pre[1][name] & cons_t1 if purpose else set(pre[1][name])

    def read_groups(as_of=None):
        """{segment: (target, holdout)} as pseudonym sets, plus sizes, in one fresh process."""
        a = f", '{iso(as_of)}'" if as_of else ""
        q = []
        for name, *_ in segs:
            q.append((f"{name} t", f"SELECT user_id FROM segment_members('{name}'{a})"))
            q.append((f"{name} h", f"SELECT user_id FROM segment_holdout('{name}'{a})"))
            q.append((f"{name} n", f"SELECT segment_size('{name}'{a}) AS n"))
        r = db.query(q)
        groups = {name: ({x["user_id"] for x in r[f"{name} t"]}, {x["user_id"] for x in r[f"{name} h"]}) for name, *_ in segs}
        sizes = {name: [x["n"] for x in r[f"{name} n"]] for name, *_ in segs}
        dups = {name: len(r[f"{name} t"]) + len(r[f"{name} h"]) - len(groups[name][0]) - len(groups[name][1]) for name, *_ in segs}
        return groups, sizes, dups

    def check_split(v, groups, sizes, dups, label):
        for name, _, _, pct, purpose in segs:
            tg, hd = groups[name]
            want = P(members[v][name])
            chk.eq(f"{label}: {name} target/holdout lists have no duplicate rows", dups[name], 0)
            chk.true(f"{label}: {name} target and holdout are disjoint", not (tg & hd),
                     f"in both: {', '.join(map(chk.name, sorted(tg & hd)[:10]))}")
            chk.sets(f"{label}: {name} target ∪ holdout = the oracle's members (HOLDOUT {pct} PERCENT{', FOR PURPOSE ads' if purpose else ''})", tg | hd, want)
            chk.eq(f"{label}: segment_size('{name}') = |segment_members|", sizes[name], [len(tg)])
            m = len(want)
            mean, sd = m * pct / 100, math.sqrt(m * pct / 100 * (1 - pct / 100))
            chk.true(f"{label}: {name} holdout size within Binomial({m}, {pct / 100}) mean ± 4 sd",
                     abs(len(hd) - mean) <= 4 * sd, f"holdout {len(hd)}, expected {mean:.1f} ± {4 * sd:.1f}")

    g1, sz1, dup1 = read_groups()
    check_split(1, g1, sz1, dup1, "version 1")
    chk.eq("CREATE results' sizes", [[r.get("size") for r in c] for c in created], [[len(g1[n][0])] for n, *_ in segs])

    # ---- load 2 (new users, more events), refresh at t2 (version 2) ----
    db.ingest("profiles", f"{work}/profiles_2.csv")
    db.ingest("consent", f"{work}/consent_2.csv")
    db.ingest("events", f"{work}/events_2.csv")
    oracle.load_profiles(f"{work}/profiles_2.csv", 2)
    oracle.load_consent(f"{work}/consent_2.csv", 2)
    oracle.load_events(f"{work}/events_2.csv", 2)
    refreshed = db.query([(name, f"REFRESH SEGMENT {name} AS OF '{iso(t2)}'") for name, *_ in segs]
                         + [(f"{name} t", f"SELECT user_id FROM segment_members('{name}')") for name, *_ in segs]
                         + [(f"{name} h", f"SELECT user_id FROM segment_holdout('{name}')") for name, *_ in segs])
    cons_t2 = oracle.consent(t2)
    for name, _, sql, _, purpose in segs:
        pre[2][name] = oracle.definition(sql, t2)
        members[2][name] = pre[2][name] & cons_t2 if purpose else set(pre[2][name])
    g2, sz2, dup2 = read_groups()
    check_split(2, g2, sz2, dup2, "version 2")

    # stability: same group in both versions; the refreshing process and a fresh one agree;
    # version 1 read again (by as_of) is unchanged
    g1_again, sz1_again, _ = read_groups(t1 + datetime.timedelta(hours=1))
    for name, *_ in segs:
        (t_1, h_1), (t_2, h_2) = g1[name], g2[name]
        moved = sorted((t_1 & h_2) | (h_1 & t_2))
        both = (t_1 | h_1) & (t_2 | h_2)
        chk.true(f"{name}: every member of versions 1 and 2 ({len(both)}) keeps its group", not moved,
                 f"{len(moved)} changed group: {', '.join(map(chk.name, moved[:10]))}")
        chk.true(f"{name}: versions 1 and 2 overlap and differ (scenario is not vacuous)",
                 len(both) > 100 and (t_1 | h_1) != (t_2 | h_2), f"overlap {len(both)}")
        chk.eq(f"{name}: groups read by the refreshing process = by a fresh process",
               ({x["user_id"] for x in refreshed[f"{name} t"]}, {x["user_id"] for x in refreshed[f"{name} h"]}) == g2[name], True)
        chk.eq(f"{name}: version 1 groups (as of t1 + 1h) read again in a later process", g1_again[name] == g1[name], True)
        r = refreshed[name]
        chk.eq(f"REFRESH SEGMENT {name} AS OF t2 result",
               [{c: x.get(c) for c in ("version", "size", "entered", "exited")} for x in r],
               [{"version": 2, "size": len(t_2), "entered": len(t_2 - t_1), "exited": len(t_1 - t_2)}])

    # history, changes (with grp), segments.<name>, in_segment
    q = []
    for name, *_ in segs:
        q.append((f"{name} hist", f"SELECT version, size, holdout FROM segment_history('{name}') ORDER BY version"))
        q.append((f"{name} ch01", f"SELECT user_id, change, grp FROM segment_changes('{name}', 0, 1)"))
        q.append((f"{name} ch12", f"SELECT user_id, change, grp FROM segment_changes('{name}', 1, 2)"))
        q.append((f"{name} table", f"SELECT count(*) AS n, count(DISTINCT user_id) AS d FROM segments.{name}"))
        q.append((f"{name} in_t", f"SELECT count(*) AS n FROM segment_members('{name}') m WHERE in_segment('{name}', m.user_id)"))
        q.append((f"{name} in_h", f"SELECT count(*) AS n FROM segment_holdout('{name}') h WHERE in_segment('{name}', h.user_id)"))
    r = db.query(q)
    for name, _, _, _, purpose in segs:
        got = [{c: x.get(c) for c in ("version", "size", "holdout")} for x in r[f"{name} hist"]]
        want = [{"version": v, "size": len(g[name][0]), "holdout": len(g[name][1])} for v, g in ((1, g1), (2, g2))]
        if not chk.eq(f"segment_history('{name}') version/size/holdout", got, want) and purpose:
            extra = [(v, len(pre[v][name] - members[v][name])) for v in (1, 2)]
            print(f"  note: '{name}' is FOR PURPOSE 'ads'; size counts the target with consent at refresh time, so "
                  f"size + holdout should be the members with consent ({[len(members[v][name]) for v in (1, 2)]}); "
                  f"members without 'ads' consent per version: {extra} — a holdout count above the expected one "
                  f"(by at most that many) counts held-out members without consent")
        g1t, g1h = g1[name]
        g2t, g2h = g2[name]
        want01 = {(u, "entered", "target") for u in g1t} | {(u, "entered", "holdout") for u in g1h}
        grp_of = {u: "target" for u in g1t | g2t} | {u: "holdout" for u in g1h | g2h}
        a, b = g1t | g1h, g2t | g2h
        want12 = {(u, "entered", grp_of[u]) for u in b - a} | {(u, "exited", grp_of[u]) for u in a - b}
        for lbl, w in (("ch01", want01), ("ch12", want12)):
            rows = r[f"{name} {lbl}"]
            got = {(x["user_id"], x["change"], x.get("grp")) for x in rows}
            chk.eq(f"segment_changes('{name}', {lbl[2]}, {lbl[3]}) has no duplicate rows", len(rows), len(got))
            chk.sets(f"segment_changes('{name}', {lbl[2]}, {lbl[3]}) (user_id, change, grp)", got, w)
        chk.eq(f"segments.{name}: the target group", r[f"{name} table"], [{"n": len(g2t), "d": len(g2t)}])
        chk.eq(f"in_segment('{name}', ·) true for every target member", r[f"{name} in_t"], [{"n": len(g2t)}])
        chk.eq(f"in_segment('{name}', ·) false for every holdout member", r[f"{name} in_h"], [{"n": 0}])

    # ---- exports ----
    def check_export(label, out_dir, name, want_target, holdout, stmt, version=2):
        res = db.sql([stmt])[0]
        part = f"{out_dir}/{name}-v{version}/part-00000.parquet"
        manifest = f"{out_dir}/{name}-v{version}/_manifest.json"
        chk.true(f"{label}: {part} and _manifest.json written", os.path.exists(part) and os.path.exists(manifest),
                 f"files: {sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else 'no ' + out_dir}")
        if not os.path.exists(part):
            return
        try:
            with open(manifest) as f:
                json.load(f)
            ok = True
        except (OSError, ValueError) as e:
            ok = False
            print(f"  manifest: {e}")
        chk.true(f"{label}: _manifest.json is JSON", ok)
        con = duckdb.connect()
        cols = [d[0] for d in con.execute(f"SELECT * FROM read_parquet('{part}') LIMIT 0").description]
        rows = [x[0] for x in con.execute(f"SELECT user_id FROM read_parquet('{part}')").fetchall()]
        chk.eq(f"{label}: parquet columns", cols, ["user_id"])
        chk.eq(f"{label}: no duplicate user_id", len(rows), len(set(rows)))
        chk.sets(f"{label}: exported = the target group", set(rows), want_target)
        chk.true(f"{label}: no holdout member exported", not (set(rows) & holdout),
                 f"exported holdout members: {', '.join(map(chk.name, sorted(set(rows) & holdout)[:10]))}")
        chk.eq(f"{label}: result rows/version", [(x.get("rows"), x.get("version")) for x in res], [(len(want_target), version)])

    cons_now = P(oracle.consent(far))
    out = f"{work}/out"
    check_export(f"EXPORT SEGMENT {L} (FOR PURPOSE 'ads' segment)", out, L, g2[L][0], g2[L][1],
                 f"EXPORT SEGMENT {L} TO '{out}'")
    pl = plain[0][0]
    check_export(f"EXPORT SEGMENT {pl} FOR PURPOSE 'ads' (purpose-less segment)", out, pl, g2[pl][0] & cons_now, g2[pl][1],
                 f"EXPORT SEGMENT {pl} TO '{out}' FOR PURPOSE 'ads'")
    p = db.raw("sql", "--format", "json", "-c", f"EXPORT SEGMENT {plain[1][0]} TO '{work}/out'")
    chk.true(f"EXPORT SEGMENT {plain[1][0]} without any purpose is refused",
             p.returncode != 0 and "purpose" in p.stderr.lower() and not os.path.exists(f"{out}/{plain[1][0]}-v2"),
             f"exit {p.returncode}, stderr {p.stderr[-500:]!r}")

    # ---- post-campaign events, planted from the groups segdb reported ----
    tgt_raw = {raw_of[u] for u in g2[L][0]}
    hld_raw = {raw_of[u] for u in g2[L][1]}
    others = [u for u in base + new if u not in tgt_raw and u not in hld_raw]
    plant(rng, work, t2, tgt_raw, hld_raw, others)
    db.ingest("events", f"{work}/events_post.csv")
    oracle.load_events(f"{work}/events_post.csv", 3)

    # groups as the oracle expects them now, raw ids: {(segment, version): (target, holdout)}
    groups_raw = {}
    for name, *_ in segs:
        for v, g in ((1, g1), (2, g2)):
            groups_raw[(name, v)] = ({raw_of[u] for u in g[name][0]}, {raw_of[u] for u in g[name][1]})

    as_of = {1: t1, 2: t2}
    pct_of = {s[0]: s[3] for s in segs}
    # (label, segment, event, days argument or None, version argument or None, effective days, version)
    cases = [
        ("default days, latest version", L, "purchase", None, None, 14, 2),
        ("days 14", L, "purchase", 14, None, 14, 2),
        ("days 14, version 2", L, "purchase", 14, 2, 14, 2),
        ("days 3", L, "purchase", 3, None, 3, 2),
        ("days 14, version 1", L, "purchase", 14, 1, 14, 1),
        ("days 3, version 1", L, "purchase", 3, 1, 3, 1),
        ("null effect", L, "signup", None, None, 14, 2),
        ("small groups", L, "trial", 14, None, 14, 2),
        ("no holdout converter", L, "upgrade", None, None, 14, 2),
        ("nobody converts in the window", L, "refund", 30, None, 30, 2),
    ]
    for name, *_ in plain:
        cases += [(f"default", name, "purchase", None, None, 14, 2),
                  (f"days 7, version 1", name, "signup", 7, 1, 7, 1)]

    def case_sql(seg, event, days, version):
        a = "".join(f", {x}" for x in (days, version) if x is not None)
        return f"SELECT * FROM segment_lift('{seg}', '{event}'{a})"

    def run_lifts(phase):
        res = db.query([(i, case_sql(seg, ev, d, v)) for i, (_, seg, ev, d, v, _, _) in enumerate(cases)]
                       + [("types", f"SELECT arrow_typeof(users) AS u, arrow_typeof(converters) AS c, arrow_typeof(rate) AS r FROM segment_lift('{L}', 'purchase')")])
        wants = {}
        oracle.set_groups(groups_raw)
        for i, (label, seg, ev, d, v, days, ver) in enumerate(cases):
            want = lift_stats(*oracle.counts(seg, ver, ev, as_of[ver], days), pct_of[seg])
            wants[i] = want
            chk.lift_rows(f"{phase}: {case_sql(seg, ev, d, v)} ({label})", res[i], want)
        chk.eq(f"{phase}: segment_lift column types", res["types"], [{"u": "UInt64", "c": "UInt64", "r": "Float64"}] * 2)
        # properties of the scenario, on the oracle's numbers (and segdb's, when they differ)
        for src, rows in (("oracle", wants), ("segdb", res)):
            first = lambda k: rows[k][0] if len(rows[k]) == 2 else {}
            plant_t, null_t = first(0), first(6)
            d3, d14 = rows[3], rows[0]
            ci_low, p_value = plant_t.get("ci_low"), plant_t.get("p_value")
            chk.true(f"{phase} ({src}): the planted effect is detected (ci_low > 0, p_value < 0.01)",
                     ci_low is not None and ci_low > 0 and p_value is not None and p_value < 0.01,
                     f"target row: {plant_t}")
            lo, hi = null_t.get("ci_low"), null_t.get("ci_high")
            ok = lo is not None and hi is not None and lo < 0 < hi
            chk.true(f"{phase} ({src}): the null effect is not detected (ci_low < 0 < ci_high)", ok,
                     f"target row: {null_t}" + ("" if src == "oracle" else
                                                "  (identical rates by construction: a detection is a segdb error, not chance)"))
            chk.true(f"{phase} ({src}): days_after 3 counts fewer converters than 14 in each group",
                     all(isinstance(a.get("converters"), int) and a["converters"] < b.get("converters", -1) for a, b in zip(d3, d14)),
                     f"days 3: {[a.get('converters') for a in d3]}, days 14: {[b.get('converters') for b in d14]}")
        return res

    lifts_before = run_lifts("before FORGET/withdrawal")
    p = db.raw("sql", "--format", "json", "-c", f"SELECT * FROM segment_lift('{L}', 'purchase', 14, 3)")
    chk.true(f"segment_lift('{L}', 'purchase', 14, 3): version 3 does not exist, an error", p.returncode != 0,
             f"exit {p.returncode}, stdout {p.stdout[-500:]!r}")

    # ---- report (before the changes) ----
    def check_report(phase, extra, want_rows, tag):
        svg = f"{work}/lift_{tag}.svg"
        if os.path.exists(svg):
            os.remove(svg)
        p = db.raw("report", "lift", L, "purchase", "--out", svg, *extra)
        label = f"{phase}: segdb report lift {L} purchase {' '.join(extra)}".rstrip()
        if not chk.true(f"{label} exits 0", p.returncode == 0, f"exit {p.returncode}: {p.stderr[-1500:]}"):
            return
        try:
            root = ET.parse(svg).getroot()
            ok = True
        except (OSError, ET.ParseError) as e:
            root, ok = None, False
            print(f"  svg: {e}")
        if chk.true(f"{label}: writes a well-formed SVG", ok and root.tag in ("{http://www.w3.org/2000/svg}svg", "svg"),
                    f"root {getattr(root, 'tag', None)}"):
            lines = [e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "polyline"]
            chk.eq(f"{label}: number of polylines", len(lines), 2)
            pts_ok = True
            for e in lines:
                try:
                    pts = [tuple(map(float, xy.split(","))) for xy in e.get("points", "").split()]
                    xs = [x for x, _ in pts]
                    pts_ok &= len(pts) >= 2 and xs == sorted(xs) and all(map(math.isfinite, [c for xy in pts for c in xy]))
                except ValueError:
                    pts_ok = False
            chk.true(f"{label}: each polyline has ≥ 2 finite points, x increasing", pts_ok,
                     f"points: {[e.get('points', '')[:200] for e in lines]}")
        parsed = parse_table(p.stdout)
        head, rows = parsed if parsed else ([], [])
        chk.eq(f"{label}: printed table columns", head, LIFT_COLUMNS)
        chk.lift_rows(f"{label}: printed table = segment_lift", typed(rows),
                      [dict(r, note=r.get("note") is not None) for r in want_rows])

    check_report("before FORGET/withdrawal", [], lifts_before[0], "1")
    check_report("before FORGET/withdrawal", ["--days", "3", "--version", "1"], lifts_before[5], "2")

    # ---- consent and erasure ----
    conv = oracle.did_between("purchase", t2, t2 + 14 * DAY)
    t_conv, h_conv = sorted(tgt_raw & conv), sorted(hld_raw & conv)
    t_non, h_non = sorted(tgt_raw - conv), sorted(hld_raw - conv)
    ft, fh = rng.choice(t_conv), rng.choice(h_conv)
    wt = rng.sample([u for u in t_conv if u != ft], 2) + rng.sample(t_non, 1)
    wh = rng.sample([u for u in h_conv if u != fh], 1) + rng.sample(h_non, 1)
    withdrawn = wt + wh
    w_at = t2 + 20 * DAY + datetime.timedelta(minutes=rng.randrange(1, 600))
    write_csv(f"{work}/consent_3.csv", ["user_id", "purpose", "granted", "recorded_at"],
              [(u, "ads", "false", iso(w_at)) for u in withdrawn])
    db.sql([f"FORGET USER '{ft}'", f"FORGET USER '{fh}'"])
    db.ingest("consent", f"{work}/consent_3.csv")
    oracle.forget(ft)
    oracle.forget(fh)
    oracle.load_consent(f"{work}/consent_3.csv", 3)
    for k in list(groups_raw):
        t, h = groups_raw[k]
        drop = {ft, fh} | (set(withdrawn) if k[0] == L else set())
        groups_raw[k] = (t - drop, h - drop)
    chk.true("oracle: the lift segment's consent now excludes exactly the withdrawn users (premise)",
             (tgt_raw | hld_raw) - {ft, fh} - oracle.consent(far) == set(withdrawn))

    g_after, sz_after, dup_after = read_groups()
    for name, *_ in segs:
        t, h = groups_raw[(name, 2)]
        chk.sets(f"after FORGET/withdrawal: segment_members('{name}')", g_after[name][0], P(t))
        chk.sets(f"after FORGET/withdrawal: segment_holdout('{name}')", g_after[name][1], P(h))
        chk.eq(f"after FORGET/withdrawal: segment_size('{name}')", sz_after[name], [len(t)])
    g1_after, _, _ = read_groups(t1)
    for name, *_ in segs:
        t, h = groups_raw[(name, 1)]
        chk.sets(f"after FORGET/withdrawal: segment_members('{name}', t1)", g1_after[name][0], P(t))
        chk.sets(f"after FORGET/withdrawal: segment_holdout('{name}', t1)", g1_after[name][1], P(h))
    out2 = f"{work}/out2"
    check_export(f"after FORGET/withdrawal: EXPORT SEGMENT {L}", out2, L, P(groups_raw[(L, 2)][0]), g2[L][1],
                 f"EXPORT SEGMENT {L} TO '{out2}'")

    lifts_after = run_lifts("after FORGET/withdrawal")
    b, a = lifts_before[0], lifts_after[0]
    chk.eq(f"after FORGET/withdrawal: segment_lift('{L}', 'purchase') users/converters drop by (4, 3) and (3, 2)",
           [(x.get("users"), x.get("converters")) for x in a],
           [(b[0].get("users", 0) - 4, b[0].get("converters", 0) - 3), (b[1].get("users", 0) - 3, b[1].get("converters", 0) - 2)])
    check_report("after FORGET/withdrawal", [], lifts_after[0], "3")

    summary = {
        "test": "lift",
        "seed": args.seed,
        "segments": {s[0]: {"holdout_percent": s[3], "purpose": s[4], "definition": s[1],
                            "v1": [len(g1[s[0]][0]), len(g1[s[0]][1])], "v2": [len(g2[s[0]][0]), len(g2[s[0]][1])]}
                     for s in segs},
        "lift_segment": L,
        "as_of": [iso(t1), iso(t2)],
        "planted": {k: [(x.get("users"), x.get("converters")) for x in lifts_before[i]] for k, i in (("purchase", 0), ("signup", 6))},
        "forgotten": [pseudonym_of[ft], pseudonym_of[fh]],
        "withdrawn": [pseudonym_of[u] for u in withdrawn],
        "checks": chk.checks,
        "failed": len(chk.failures),
        "segdb_calls": db.calls,
        "seconds": round(time.time() - started, 1),
        "ok": not chk.failures,
    }
    print(json.dumps(summary))
    sys.exit(1 if chk.failures else 0)


if __name__ == "__main__":
    main()
