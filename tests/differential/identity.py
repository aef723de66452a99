"""Differential test of identity stitching and computed traits: segdb vs an independent oracle.

The scenario (deterministic from --seed) writes its own CSV inputs: ~80 people ("components") of
1-6 raw ids each (CRM e-mails, app ids, web cookie ids that appear in events only as
`anonymous_id`), linked by a links file and by event rows carrying both a `user_id` and an
`anonymous_id`; events over Oct-Nov 2026 with a numeric `price` (sometimes empty = NULL) and a
text `category`, with some same-`ts` ties inside a component and events exactly on every window
boundary used; a few components whose ids first appear together in one events or links row (so
the user_id-before-anonymous_id and user_id-before-linked_id rules decide their canonical id); a
profiles file loaded twice (the later load's row wins); 'ads' consent records spread over the ids
of a component. It drives the
real `segdb` CLI through the loads

    profiles_1, consent, [checks], events_1, [checks], links, events_2, profiles_2

and checks every answer against an oracle written from DESIGN.md §4, §5 and §10 alone: its own
union-find over the links (ordinals in order of first appearance across loads, canonical id =
smallest ordinal), plain DuckDB SQL over the same CSV files for segments and traits (with the tie
rules written out explicitly):

- before any link exists, `segdb.identity = 'auto'` evaluates over raw ids;
- after events_1, whose rows with both ids are the only links so far, 'auto' is stitched;
- `identity_of(p)` for every id, after events_1 (partial components) and after every load: every
  id of a component maps to one pseudonym, that pseudonym is one of the component's ids, and it is
  the id that appeared first in the loads;
- links rows holding a placeholder ('', 'null', 'undefined', ' none ', '[object Object]', ...)
  are rejected and reported; placeholder `anonymous_id`s never link and never become ids;
- segments (DID with AT LEAST / EXACTLY / AT MOST / BETWEEN counts and every window form, DID
  WHERE, PROFILE, TRAIT, NOT, FOR PURPOSE 'ads') at several random as_of values, stitched
  ('auto' and explicit 'stitched') and raw: members compared as a set of components (every profile
  once, exactly the oracle's components) and as canonical pseudonyms; `segment_size`,
  `segments.<name>`, `segment_members(name, as_of)`, `in_segment` and `has_consent` for every id;
- the `traits` table (COUNT, SUM, MIN, MAX, FIRST, LAST, MOST_FREQUENT, COUNT DISTINCT, with and
  without WHERE, every window form, on numeric and text columns) at the same as_of values,
  stitched and raw: one row per profile, types of the counts, every value (floats with a
  tolerance); SHOW TRAITS and DROP TRAIT;
- the events table: one row per input event, owned by the user_id or else the anonymous id;
- FORGET USER of a non-canonical raw id of one component, and of a non-canonical pseudonym of
  another, forgets each whole component: no id of them in segment members (stitched and raw),
  traits, events, profiles or consent, in_segment and has_consent false for each; everybody else
  unchanged (the oracle without those components); after `segdb vacuum` no byte of any of their
  pseudonyms in any file of the data directory (Parquet files also decoded), and no raw id
  anywhere;
- `[identity] max_ids_per_profile = 3` (a separate database, `--config`): the links (links rows
  and events rows with both ids) that would grow a component past 3 ids are refused and counted
  ("refused N link(s)"), and the components are the ones the cap leaves.

usage: identity.py --segdb BIN --work DIR [--seed N]
"""

import argparse
import base64
import csv
import datetime
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

import duckdb

from shared import iso, lit, ts_lit, write_csv, Leaf, Not, And, Or, seg_text, leaves

UTC = datetime.timezone.utc
START = datetime.datetime(2026, 10, 1, tzinfo=UTC)
END = datetime.datetime(2026, 12, 1, tzinfo=UTC)
DAY = datetime.timedelta(days=1)
COUNTRIES = ["DE", "FR", "US", "GB"]
PLANS = ["free", "plus", "premium"]
CATEGORIES = ["bags", "hats", "shirts", "shoes", "socks"]
PRICES = [4.99, 9.99, 19.99, 25.0, 49.5, 99.0, 120.0, 250.0]
EVENT_WEIGHTS = [("view", 0.6), ("add_to_cart", 0.25), ("purchase", 0.15)]
N_COMPONENTS = 80
# compared trimmed and case-insensitively (the contract's list)
PLACEHOLDERS = {"", "null", "nil", "none", "undefined", "anonymous", "unknown", "n/a", "nan", "0", "-1",
                "[object object]", "guest"}
PLACEHOLDER_SPELLINGS = ["undefined", "NULL", "null", " none ", "None", "Anonymous", "unknown", "N/A", "NaN",
                         "0", "-1", "[object Object]", "guest", "Guest ", "nil", "UNDEFINED", " Unknown"]
ID_TYPE = {"crm": "email", "app": "device", "web": "cookie"}


def is_placeholder(v):
    return v is None or v.strip().lower() in PLACEHOLDERS


def rand_time(rng, lo, hi, ms=0.2):
    """A uniformly random instant in [lo, hi), whole seconds, sometimes with milliseconds."""
    t = lo + datetime.timedelta(seconds=rng.randrange(int((hi - lo).total_seconds())))
    if rng.random() < ms:
        t += datetime.timedelta(milliseconds=rng.randrange(1, 1000))
    return t


# ---- windows, segment expressions -------------------------------------------------------------

UNIT = {"DAYS": DAY, "HOURS": datetime.timedelta(hours=1)}


def gen_window(rng, kind):
    if kind == "none":
        return None
    if kind == "days":
        return ("last", rng.randint(3, 45), "DAYS")
    if kind == "hours":
        return ("last", rng.randint(12, 240), "HOURS")
    if kind == "since":
        return ("since", rand_time(rng, START + 14 * DAY, START + 40 * DAY, ms=0.5))
    # BETWEEN ends before every as_of this test uses (as_of >= Nov 12)
    a = rand_time(rng, START, START + 24 * DAY, ms=0.5)
    return ("between", a, a + datetime.timedelta(days=rng.randint(5, 17), hours=rng.randint(0, 23)))


def window_text(w):
    if w is None:
        return ""
    if w[0] == "last":
        return f" IN THE LAST {w[1]} {w[2]}"
    if w[0] == "since":
        return f" SINCE '{iso(w[1])}'"
    return f" BETWEEN '{iso(w[1])}' AND '{iso(w[2])}'"


def window_sql(w, as_of):
    """[lo, hi) as SQL over column ts; no window = every event before as_of."""
    if w is None:
        return f"ts < {ts_lit(as_of)}"
    if w[0] == "last":
        lo = as_of - w[1] * UNIT[w[2]]
        return f"ts >= {ts_lit(lo)} AND ts < {ts_lit(as_of)}"
    if w[0] == "since":
        return f"ts >= {ts_lit(w[1])} AND ts < {ts_lit(as_of)}"
    return f"ts >= {ts_lit(w[1])} AND ts < {ts_lit(w[2])}"


def boundaries(window, as_of):
    """(inside, outside) instants at the edges of a window's half-open [lo, hi)."""
    if window is None:
        return [], [as_of]
    if window[0] == "last":
        return [as_of - window[1] * UNIT[window[2]]], [as_of]
    if window[0] == "since":
        return [window[1]], [as_of]
    return [window[1]], [window[2]]


def oracle_sql(e, as_of):
    """Over temp tables U(key), E(key, event, ts, price, category), P(key, country, plan), T(key, traits…)."""
    if isinstance(e, Leaf):
        return e.sql(as_of)
    if isinstance(e, Not):
        return f"(SELECT key FROM U EXCEPT {oracle_sql(e.x, as_of)})"
    op = " INTERSECT " if isinstance(e, And) else " UNION "
    return "(" + op.join(oracle_sql(x, as_of) for x in e.xs) + ")"


FREQ_TEXT = {"least": " AT LEAST {0} TIMES", "most": " AT MOST {0} TIMES", "exactly": " EXACTLY {0} TIMES",
             "between": " BETWEEN {0} AND {1} TIMES"}
FREQ_SQL = {"least": "c >= {0}", "most": "c <= {0}", "exactly": "c = {0}", "between": "c BETWEEN {0} AND {1}"}


def did(event, freq, window, where=None):
    text = f"DID '{event}'" + (f" WHERE {where}" if where else "")
    cond = "c >= 1"
    if freq:
        text += FREQ_TEXT[freq[0]].format(*freq[1:])
        cond = FREQ_SQL[freq[0]].format(*freq[1:])
    text += window_text(window)

    def sql(as_of):
        pred = f" AND ({where})" if where else ""
        return (f"(SELECT key FROM (SELECT U.key, coalesce(x.c, 0) AS c FROM U LEFT JOIN (SELECT key, count(*) AS c "
                f"FROM E WHERE event = {lit(event)}{pred} AND {window_sql(window, as_of)} GROUP BY key) x "
                f"ON U.key = x.key) WHERE {cond})")

    return Leaf(text, sql, did=(event, window))


def profile(pred):
    return Leaf(f"PROFILE {pred}", lambda as_of: f"(SELECT key FROM P WHERE {pred})")


def trait(pred):
    return Leaf(f"TRAIT {pred}", lambda as_of: f"(SELECT key FROM T WHERE {pred})")


# ---- traits -----------------------------------------------------------------------------------

class Trait:
    def __init__(self, name, agg, col, event, where, window):
        self.name, self.agg, self.col, self.event, self.where, self.window = name, agg, col, event, where, window

    def text(self):
        a = "COUNT" if self.agg == "COUNT" else f"{self.agg}({self.col})"
        return (f"CREATE TRAIT {self.name} AS {a} OF EVENT '{self.event}'"
                + (f" WHERE {self.where}" if self.where else "") + window_text(self.window))

    def is_count(self):
        return self.agg in ("COUNT", "COUNT DISTINCT")

    def sql(self, as_of):
        """(key, v) for the keys with a value; the tie rules spelled out."""
        pred = f" AND ({self.where})" if self.where else ""
        f = (f"SELECT key, ts, {self.col or 'NULL'} AS v FROM E WHERE event = {lit(self.event)}{pred} "
             f"AND {window_sql(self.window, as_of)}")
        a = self.agg
        if a == "COUNT":
            return f"SELECT key, count(*) AS v FROM ({f}) GROUP BY key"
        if a == "COUNT DISTINCT":
            return f"SELECT key, count(DISTINCT v) AS v FROM ({f}) GROUP BY key"
        if a in ("SUM", "MIN", "MAX"):
            return f"SELECT key, {a.lower()}(v) AS v FROM ({f}) WHERE v IS NOT NULL GROUP BY key"
        if a in ("FIRST", "LAST"):
            order = "ts ASC, v ASC" if a == "FIRST" else "ts DESC, v ASC"
            return (f"SELECT key, v FROM (SELECT key, v, row_number() OVER (PARTITION BY key ORDER BY {order}) AS r "
                    f"FROM ({f}) WHERE v IS NOT NULL) WHERE r = 1")
        assert a == "MOST_FREQUENT"
        return (f"SELECT key, v FROM (SELECT key, v, row_number() OVER (PARTITION BY key ORDER BY count(*) DESC, v ASC) "
                f"AS r FROM ({f}) WHERE v IS NOT NULL GROUP BY key, v) WHERE r = 1")


def gen_traits(rng):
    kinds = ["none", "days", "days", "hours", "since", "between"]
    w = lambda: gen_window(rng, rng.choice(kinds))
    ts = [
        Trait("views", "COUNT", None, "view", None, gen_window(rng, rng.choice(["none", "days", "since"]))),
        Trait("bag_hat_carts", "COUNT", None, "add_to_cart", "category IN ('bags', 'hats')", w()),
        Trait("spend", "SUM", "price", "purchase", None, gen_window(rng, rng.choice(["none", "days"]))),
        Trait("cheapest_shoe_cart", "MIN", "price", "add_to_cart", "category = 'shoes'", w()),
        Trait("max_purchase", "MAX", "price", "purchase", None, w()),
        Trait("first_view_cat", "FIRST", "category", "view", None, w()),
        Trait("last_purchase_cat", "LAST", "category", "purchase", None, w()),
        Trait("first_cart_price", "FIRST", "price", "add_to_cart", None, w()),
        Trait("last_view_price", "LAST", "price", "view", "price > 10.005", w()),
        Trait("fav_category", "MOST_FREQUENT", "category", "view", None, gen_window(rng, rng.choice(["none", "days"]))),
        Trait("fav_price", "MOST_FREQUENT", "price", "view", None, w()),
        Trait("n_categories", "COUNT DISTINCT", "category", "view", rng.choice([None, "price > 20.005"]), w()),
        Trait("min_cart_cat", "MIN", "category", "add_to_cart", None, w()),
        Trait("max_view_cat", "MAX", "category", "view", "price IS NOT NULL", w()),
        Trait("n_prices", "COUNT DISTINCT", "price", "purchase", None, w()),
    ]
    return ts


def gen_segments(rng):
    kinds = ["days", "hours", "since", "between"]
    w = lambda *ks: gen_window(rng, rng.choice(ks or kinds))
    c = rng.choice(COUNTRIES)
    return [
        ("s_purchase", None, did("purchase", None, w("days"))),
        ("s_views", None, did("view", ("least", rng.randint(2, 5)), w("days", "since"))),
        ("s_cart_exact", None, did("add_to_cart", ("exactly", rng.randint(0, 2)), w("since", "days"))),
        ("s_view_most", None, did("view", ("most", rng.randint(0, 2)), w("between", "days"))),
        ("s_purchase_between", None, did("purchase", ("between", 1, rng.randint(2, 3)), w())),
        ("s_profile", None, And(profile(f"country = '{c}'"), Not(profile("plan = 'free'")))),
        ("s_where", None, Or(did("purchase", None, w("days"), where=f"price > {rng.choice([20, 45, 90])}.005"),
                             profile("plan = 'premium'"))),
        ("s_ads", "ads", did("view", None, w("days"))),
        ("s_trait_big", None, And(trait(f"spend > {rng.randint(40, 200)}.005"), did("purchase", None, ("last", 30, "DAYS")))),
        ("s_trait_mix", None, Or(trait(f"fav_category = '{rng.choice(CATEGORIES)}'"), Not(trait(f"views >= {rng.randint(2, 6)}")))),
        ("s_not_cart", None, Not(did("add_to_cart", None, w("days", "hours")))),
        ("s_ads_combo", "ads", And(Or(did("add_to_cart", ("least", 2), w("days")), trait("n_categories >= 2")),
                                   Not(profile("country = 'US'")))),
    ]


STAGE0_SEGMENTS = [
    ("s0_ads_plan", "ads", Not(profile("plan = 'free'"))),
    ("s0_not_de", None, Not(profile("country = 'DE'"))),
]


# ---- input generation -------------------------------------------------------------------------

def generate(rng, work, edges_at):
    """edges_at: [(event, instant)] to place events exactly on window boundaries."""
    used = set()

    def new_id(kind, n):
        while True:
            if kind == "crm":
                v = f"crm.{n:04d}.{rng.randrange(16 ** 4):04x}@example.com"
            elif kind == "app":
                v = f"app-{rng.randrange(16 ** 10):010x}"
            else:
                v = f"web-{rng.randrange(16 ** 16):016x}"
            if v not in used:
                used.add(v)
                return v

    comps, kind_of = [], {}
    for c in range(N_COMPONENTS):
        size = rng.choices([1, 2, 3, 4, 5, 6], [26, 25, 20, 13, 10, 6])[0]
        kinds = ["crm"] if rng.random() < 0.7 else []
        while len(kinds) < size:
            kinds.append("app" if kinds.count("app") < 2 and rng.random() < 0.4 else "web")
        ids = [new_id(k, c) for k in kinds]
        for i, k in zip(ids, kinds):
            kind_of[i] = k
        comps.append(ids)
    # components whose ids first appear together in one row: an events row with both ids at the top
    # of events_1 (user_id gets its ordinal before anonymous_id), or links rows (user_id before
    # linked_id) between ids whose own events come only in events_2; no profile_1 or consent rows
    special = {}
    for mode in ("both", "both", "link", "link"):
        c = len(comps)
        kinds = ["app", "web"] if mode == "both" else rng.choice([["crm", "web"], ["crm", "web", "app"], ["web", "app", "web"]])
        ids = [new_id(k, c) for k in kinds]
        for i, k in zip(ids, kinds):
            kind_of[i] = k
        comps.append(ids)
        special[c] = mode

    # edges: a random spanning tree per component, sometimes an extra (cycle) edge; each edge is an
    # events row with both ids (non-web user_id + web anonymous_id) or a links row
    both_rows = {1: [], 2: []}  # (user_id, anonymous_id)
    link_rows = []
    first_rows = []
    for ci, ids in enumerate(comps):
        if special.get(ci) == "both":
            first_rows.append((ids[0], ids[1]))
            continue
        if special.get(ci) == "link":
            for a, b in zip(ids, ids[1:]):
                u, l = (a, b) if rng.random() < 0.5 else (b, a)
                link_rows.append((u, l, ID_TYPE[kind_of[l]]))
            continue
        order = ids[:]
        rng.shuffle(order)
        edges = [(order[i], order[rng.randrange(i)]) for i in range(1, len(order))]
        if len(ids) >= 3 and rng.random() < 0.3:
            a, b = rng.sample(ids, 2)
            edges.append((a, b))
        for a, b in edges:
            webs = [x for x in (a, b) if kind_of[x] == "web"]
            if len(webs) == 1 and rng.random() < 0.6:
                web = webs[0]
                other = b if web == a else a
                f = rng.choice([1, 2])
                both_rows[f].append((other, web))
                if rng.random() < 0.3:
                    both_rows[rng.choice([1, 2])].append((other, web))
            else:
                u, l = (a, b) if rng.random() < 0.5 else (b, a)
                link_rows.append((u, l, ID_TYPE[kind_of[l]] if rng.random() < 0.8 else ""))
                if rng.random() < 0.1:
                    link_rows.append((l, u, ID_TYPE[kind_of[u]]))

    # profiles: at most one row per component per load (no same-load ties between a component's ids)
    prof1, prof2, prof1_id = [], [], {}
    for ci, ids in enumerate(comps):
        cands = [i for i in ids if kind_of[i] != "web"] or ids
        if ci not in special and rng.random() < 0.8:
            i = rng.choice(cands)
            prof1_id[ci] = i
            prof1.append((i, rng.choice(COUNTRIES), rng.choice(PLANS)))
        if rng.random() < 0.4:
            prof2.append((rng.choice(ids), rng.choice(COUNTRIES), rng.choice(PLANS)))
    rng.shuffle(prof1)
    rng.shuffle(prof2)
    write_csv(f"{work}/profiles_1.csv", ["user_id", "country", "plan"], prof1)
    write_csv(f"{work}/profiles_2.csv", ["user_id", "country", "plan"], prof2)

    # consent: 'ads' records on 1-2 ids of most components, every recorded_at distinct
    crow, seen_t = [], set()

    def uniq_time():
        while True:
            t = rand_time(rng, START - 10 * DAY, END + 2 * DAY, ms=0.3)
            if t not in seen_t:
                seen_t.add(t)
                return t

    for ci, ids in enumerate(comps):
        if ci in special or rng.random() < 0.15:
            continue
        for i in rng.sample(ids, min(len(ids), rng.choice([1, 1, 2]))):
            for _ in range(rng.choice([1, 1, 2, 3])):
                crow.append((i, "ads", "true" if rng.random() < 0.7 else "false", iso(uniq_time())))
            if rng.random() < 0.3:
                crow.append((i, "email", "true" if rng.random() < 0.5 else "false", iso(uniq_time())))
    rng.shuffle(crow)
    write_csv(f"{work}/consent.csv", ["user_id", "purpose", "granted", "recorded_at"], crow)

    # events
    names, ew = zip(*EVENT_WEIGHTS)

    def attrs():
        p = "" if rng.random() < 0.15 else (f"{rng.choice(PRICES):.2f}" if rng.random() < 0.7 else f"{rng.uniform(1, 300):.2f}")
        cat = "" if rng.random() < 0.05 else rng.choice(CATEGORIES)
        return p, cat

    def as_row(owner):
        if kind_of[owner] == "web":
            return ("", owner)
        return (owner, rng.choice(PLACEHOLDER_SPELLINGS) if rng.random() < 0.1 else "")

    ev = {1: [], 2: []}
    for ci, ids in enumerate(comps):
        pick_file = (lambda: 2) if special.get(ci) == "link" else (lambda: rng.choice([1, 2]))
        mine = []
        for i in ids:
            n = max(1, round(rng.lognormvariate(0, 0.7) * 8))
            if kind_of[i] == "crm" and prof1_id.get(ci) == i and rng.random() < 0.2:
                n = 0  # known from its profile only
            for _ in range(n):
                u, a = as_row(i)
                p, cat = attrs()
                row = (u, a, rng.choices(names, ew)[0], rand_time(rng, START, END), p, cat)
                ev[pick_file()].append(row)
                mine.append(row)
        if mine and rng.random() < 0.25:  # same-ts ties inside the component (FIRST/LAST tie rule)
            for _ in range(rng.randint(1, 3)):
                base = rng.choice(mine)
                u, a = as_row(rng.choice(ids))
                p, cat = attrs()
                ev[pick_file()].append((u, a, base[2], base[3], p, cat))
    plain = [i for ci, ids in enumerate(comps) if ci not in special for i in ids]
    for event, t in edges_at:
        for i in rng.sample(plain, 2):
            u, a = as_row(i)
            p, cat = attrs()
            ev[rng.choice([1, 2])].append((u, a, event, t, p, cat))
    for f in (1, 2):
        for u, a in both_rows[f]:
            p, cat = attrs()
            ev[f].append((u, a, rng.choices(names, ew)[0], rand_time(rng, START, END), p, cat))
        rng.shuffle(ev[f])
        if f == 1:
            for u, a in reversed(first_rows):
                p, cat = attrs()
                ev[f].insert(0, (u, a, rng.choices(names, ew)[0], rand_time(rng, START, END), p, cat))
        write_csv(f"{work}/events_{f}.csv", ["user_id", "anonymous_id", "event", "ts", "price", "category"],
                  [(u, a, e, iso(t), p, c) for u, a, e, t, p, c in ev[f]])

    # links: valid rows, plus placeholder rows (rejected) whose valid side is known before this load
    known_before = {r[0] for r in prof1} | {r[0] for r in crow} | {r[0] or r[1] for r in ev[1]} | \
        {r[1] for r in ev[1] if not is_placeholder(r[1])}
    pool = sorted(known_before)
    bad = []
    for s in rng.sample(PLACEHOLDER_SPELLINGS, 7):
        v = rng.choice(pool)
        bad.append((v, s, "cookie") if rng.random() < 0.5 else (s, v, "email"))
    bad.append(("", rng.choice(pool), "email"))
    bad.append(("null", "undefined", ""))
    links = link_rows + bad
    rng.shuffle(links)
    write_csv(f"{work}/links.csv", ["user_id", "linked_id", "id_type"], links)

    return {"comps": comps, "kind_of": kind_of, "n_bad_links": len(bad), "n_events": {f: len(ev[f]) for f in (1, 2)},
            "placeholders_used": sorted({r[1] for f in (1, 2) for r in ev[f] if r[1] and is_placeholder(r[1])})}


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Identity:
    """Ordinals by first appearance, links by union-find: replays the loads from the files."""

    def __init__(self):
        self.ordinal = {}
        self.parent = {}

    def see(self, v):
        if v not in self.ordinal:
            self.ordinal[v] = len(self.ordinal)
            self.parent[v] = v

    def find(self, v):
        while self.parent[v] != v:
            self.parent[v] = self.parent[self.parent[v]]
            v = self.parent[v]
        return v

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def load(self, kind, path):
        rows = read_rows(path)
        if kind in ("profiles", "consent"):
            for r in rows:
                self.see(r["user_id"])
        elif kind == "events":
            for r in rows:
                u, a = r["user_id"], r.get("anonymous_id", "")
                if u:
                    self.see(u)
                if not is_placeholder(a):
                    self.see(a)
                    if u:
                        self.union(u, a)
        else:
            for r in rows:
                u, l = r["user_id"], r["linked_id"]
                if is_placeholder(u) or is_placeholder(l):
                    continue
                self.see(u)
                self.see(l)
                self.union(u, l)

    def components(self):
        """raw id -> canonical raw id (the smallest ordinal of its component)."""
        groups = {}
        for v in self.ordinal:
            groups.setdefault(self.find(v), []).append(v)
        canon = {}
        for members in groups.values():
            c = min(members, key=self.ordinal.get)
            for v in members:
                canon[v] = c
        return canon


# ---- segdb driver -----------------------------------------------------------------------------

def silent(statement):
    """SET and DROP print no result (not even an empty one)."""
    return statement.lstrip().upper().startswith(("SET ", "DROP "))


class Segdb:
    def __init__(self, binary, work, data="db"):
        self.binary = binary
        self.env = dict(os.environ, SEGDB_DATA=f"{work}/{data}", SEGDB_KEYRING=f"{work}/k.keyring")
        for v in ("SEGDB_FORMAT", "SEGDB_COMMAND", "SEGDB_FILE", "SEGDB_INGEST_STRICT", "SEGDB_INGEST_FORMAT"):
            self.env.pop(v, None)
        self.calls = 0

    def run(self, *args):
        self.calls += 1
        p = subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            print(f"segdb {' '.join(args)[:300]} failed with exit {p.returncode}:\n{p.stderr[-3000:]}")
            sys.exit(2)
        return p

    def ingest(self, kind, path, *extra):
        return self.run("ingest", *extra, kind, path)

    def sql(self, statements):
        """Run statements in one session; return one parsed JSON array per statement with a result."""
        out = self.run("sql", "--format", "json", "-c", ";\n".join(statements)).stdout
        results = [json.loads(line) for line in out.splitlines() if line.strip()]
        expected = sum(1 for s in statements if not silent(s))
        if len(results) != expected:
            print(f"expected {expected} results, got {len(results)} from:\n  " + "\n  ".join(statements)[:3000] + f"\n{out[-2000:]}")
            sys.exit(2)
        return results


class Batch:
    """Statements for one `segdb sql` call, with labels for the results."""

    def __init__(self):
        self.stmts, self.labels = [], []

    def q(self, label, s):
        self.stmts.append(s)
        if not silent(s):
            self.labels.append(label)

    def run(self, db):
        return dict(zip(self.labels, db.sql(self.stmts)))


def values(pseudonyms):
    return "(VALUES " + ", ".join(f"({lit(p)})" for p in pseudonyms) + ")"


# ---- oracle -----------------------------------------------------------------------------------

class Oracle:
    def __init__(self, work):
        c = self.con = duckdb.connect()
        c.execute("SET TimeZone = 'UTC'")
        c.execute("SET threads = 1")  # row_number() OVER () = file order
        ecols = ("{'user_id': 'VARCHAR', 'anonymous_id': 'VARCHAR', 'event': 'VARCHAR', 'ts': 'TIMESTAMPTZ', "
                 "'price': 'DOUBLE', 'category': 'VARCHAR'}")
        c.execute("CREATE TABLE ev AS " + " UNION ALL ".join(
            f"SELECT *, CASE WHEN user_id IS NOT NULL AND user_id <> '' THEN user_id ELSE anonymous_id END AS owner, "
            f"{k} AS file FROM read_csv('{work}/events_{k}.csv', header = true, quote = '\"', columns = {ecols})"
            for k in (1, 2)))
        pcols = "{'user_id': 'VARCHAR', 'country': 'VARCHAR', 'plan': 'VARCHAR'}"
        c.execute("CREATE TABLE prof AS " + " UNION ALL ".join(
            f"SELECT *, {k} AS load, row_number() OVER () AS rn FROM read_csv('{work}/profiles_{k}.csv', header = true, columns = {pcols})"
            for k in (1, 2)))
        ccols = "{'user_id': 'VARCHAR', 'purpose': 'VARCHAR', 'granted': 'BOOLEAN', 'recorded_at': 'TIMESTAMPTZ'}"
        c.execute(f"CREATE TABLE cons AS SELECT *, row_number() OVER () AS rn FROM read_csv('{work}/consent.csv', header = true, columns = {ccols})")
        c.execute("CREATE TABLE ids (raw VARCHAR, ord INTEGER)")

    def set_ordinals(self, ordinal):
        self.con.execute("DELETE FROM ids")
        self.con.executemany("INSERT INTO ids VALUES (?, ?)", sorted(ordinal.items()))

    def state(self, keymap, ev_files, prof_loads):
        """keymap: raw id -> key (the component's canonical raw id, or the raw id itself) for every
        known, non-forgotten id. Builds U, E, P, C over keys."""
        c = self.con
        c.execute("CREATE OR REPLACE TEMP TABLE M (raw VARCHAR, key VARCHAR)")
        c.executemany("INSERT INTO M VALUES (?, ?)", sorted(keymap.items()))
        c.execute("CREATE OR REPLACE TEMP TABLE U AS SELECT DISTINCT key FROM M")
        files = "(" + ", ".join(map(str, ev_files or [0])) + ")"
        c.execute(f"CREATE OR REPLACE TEMP TABLE E AS SELECT M.key, ev.event, ev.ts, ev.price, ev.category "
                  f"FROM ev JOIN M ON ev.owner = M.raw WHERE ev.file IN {files}")
        loads = "(" + ", ".join(map(str, prof_loads)) + ")"
        # the most recently loaded row among the key's ids; same load: smallest ordinal; same id: later row
        c.execute(f"CREATE OR REPLACE TEMP TABLE P AS SELECT key, country, plan FROM (SELECT M.key, p.country, p.plan, "
                  f"row_number() OVER (PARTITION BY M.key ORDER BY p.load DESC, ids.ord ASC, p.rn DESC) AS r "
                  f"FROM prof p JOIN M ON p.user_id = M.raw JOIN ids ON ids.raw = p.user_id WHERE p.load IN {loads}) WHERE r = 1")
        c.execute("CREATE OR REPLACE TEMP TABLE C AS SELECT M.key, cons.* FROM cons JOIN M ON cons.user_id = M.raw")

    def consent(self, at):
        """Keys whose latest 'ads' record (across their ids) at or before `at` grants."""
        rows = self.con.execute(
            f"SELECT key FROM (SELECT key, granted, row_number() OVER (PARTITION BY key ORDER BY recorded_at DESC, rn DESC) AS r "
            f"FROM C WHERE purpose = 'ads' AND recorded_at <= {ts_lit(at)}) WHERE r = 1 AND granted").fetchall()
        return {r[0] for r in rows}

    def traits(self, traits, as_of):
        """Builds T(key, one column per trait) and returns {key: {name: value}}."""
        sel = ["U.key"]
        joins = []
        for i, t in enumerate(traits):
            v = f"t{i}.v"
            sel.append(f"coalesce({v}, 0) AS {t.name}" if t.is_count() else f"{v} AS {t.name}")
            joins.append(f"LEFT JOIN ({t.sql(as_of)}) t{i} ON t{i}.key = U.key")
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE T AS SELECT {', '.join(sel)} FROM U {' '.join(joins)}")
        cur = self.con.execute("SELECT * FROM T")
        cols = [d[0] for d in cur.description]
        return {r[0]: dict(zip(cols[1:], r[1:])) for r in cur.fetchall()}

    def segment(self, expr, purpose, as_of):
        keys = {r[0] for r in self.con.execute(oracle_sql(expr, as_of)).fetchall()}
        if purpose:
            keys &= self.consent(as_of)
        return keys

    def event_counts(self):
        return dict(self.con.execute("SELECT owner, count(*) FROM ev GROUP BY owner").fetchall())


# ---- checks -----------------------------------------------------------------------------------

def same(got, want):
    if want is None or got is None:
        return got is None and want is None
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and abs(got - want) <= 1e-6 * max(1.0, abs(want))
    return got == want


class Checker:
    def __init__(self, pseudonym_of):
        self.raw_of = {v: k for k, v in pseudonym_of.items()}
        self.pseudonym_of = pseudonym_of
        self.canon = {}
        self.checks = 0
        self.failures = []

    def name(self, p):
        return f"{p}({self.raw_of.get(p, '?')})"

    def comp_desc(self, key):
        members = sorted(r for r, c in self.canon.items() if c == key)
        return f"[{', '.join(members)}]" if len(members) > 1 else f"[{key}]"

    def fail(self, what, msg):
        self.failures.append(what)
        print(f"MISMATCH {what}\n  {msg}")

    def ok(self, what, cond, msg):
        self.checks += 1
        if not cond:
            self.fail(what, msg)
        return cond

    def eq(self, what, got, want):
        return self.ok(what, got == want, f"expected: {want!r}\n  got:      {got!r}")

    def raw_sets(self, what, got, want_raw):
        """Raw mode: got = pseudonyms, want = raw ids."""
        self.checks += 1
        want = {self.pseudonym_of[r] for r in want_raw}
        if got != want:
            only_s, only_o = sorted(got - want), sorted(want - got)
            self.fail(what, f"segdb {len(got)} vs oracle {len(want)}; only in segdb ({len(only_s)}): "
                            f"{', '.join(map(self.name, only_s[:8]))}\n  only in oracle ({len(only_o)}): {', '.join(map(self.name, only_o[:8]))}")
            return False
        return True

    def components(self, what, got_list, want_keys):
        """Stitched: got_list = returned pseudonyms. Checks (1) every profile once and exactly the
        oracle's components, (2) each is the canonical pseudonym. Returns the mapped set."""
        self.checks += 2
        unknown = [p for p in got_list if p not in self.raw_of or self.raw_of[p] not in self.canon]
        comps = [self.canon[self.raw_of[p]] for p in got_list if p not in unknown]
        dup = sorted({c for c in comps if comps.count(c) > 1})
        got = set(comps)
        good = True
        if unknown or dup or got != want_keys:
            only_s, only_o = sorted(got - want_keys), sorted(want_keys - got)
            msg = f"segdb {len(got_list)} rows / {len(got)} components vs oracle {len(want_keys)} components"
            if unknown:
                msg += f"; unknown pseudonyms: {unknown[:5]}"
            if dup:
                msg += f"; components returned more than once: {[self.comp_desc(c) for c in dup[:5]]}"
            msg += (f"\n  only in segdb ({len(only_s)}): {'; '.join(map(self.comp_desc, only_s[:6]))}"
                    f"\n  only in oracle ({len(only_o)}): {'; '.join(map(self.comp_desc, only_o[:6]))}")
            self.fail(what + " [as components]", msg)
            good = False
        wrong = [(p, self.raw_of[p]) for p in got_list if p not in unknown
                 and self.canon[self.raw_of[p]] != self.raw_of[p]]
        if wrong:
            self.fail(what + " [canonical pseudonyms]",
                      f"{len(wrong)} returned pseudonym(s) are not their component's first-seen id, e.g. "
                      + "; ".join(f"{self.name(p)} for {self.comp_desc(self.canon[r])} (first seen: {self.canon[r]})" for p, r in wrong[:4]))
        return good  # the grouping is right (the canonical choice is checked and reported on its own)

    def absent(self, what, pseudonyms, outputs):
        self.checks += 1
        for label, vals in outputs:
            hit = sorted(set(pseudonyms) & set(vals))
            if hit:
                self.fail(what, f"{', '.join(map(self.name, hit[:5]))} appear(s) in {label}")
                return False
        return True


def check_traits(chk, what, rows, want, traits, stitched):
    """rows: segdb's `SELECT * FROM traits`; want: {key: {name: value}}."""
    names = [t.name for t in traits]
    cols = sorted(rows[0].keys()) if rows else None
    if rows and not chk.eq(f"{what}: columns", cols, sorted(["user_id"] + names)):
        return
    got_ps = [r.get("user_id") for r in rows]
    if stitched:
        if not chk.components(f"{what}: user_id", got_ps, set(want)):
            return
        by_key = {chk.canon[chk.raw_of[r["user_id"]]]: r for r in rows}
    else:
        if not chk.raw_sets(f"{what}: user_id", set(got_ps), set(want)) or not chk.eq(f"{what}: one row per id", len(rows), len(want)):
            return
        by_key = {chk.raw_of[r["user_id"]]: r for r in rows}
    for t in traits:
        bad = []
        for k in sorted(want):
            g, w = by_key[k].get(t.name), want[k][t.name]
            if not same(g, w) or (t.is_count() and not (isinstance(g, int) and not isinstance(g, bool))):
                bad.append((k, g, w))
        chk.ok(f"{what}: {t.name} = {t.text()[len('CREATE TRAIT '):]}", not bad,
               f"{len(bad)} of {len(want)} profiles differ, e.g.\n  " + "\n  ".join(
                   f"{chk.comp_desc(k) if stitched else k}: expected {w!r}, got {g!r}" for k, g, w in bad[:6]))


def scan_dir(con, root, needles):
    """needle -> files under root whose bytes (or, for Parquet, decoded values) contain it."""
    hits = {n: [] for n in needles}
    undecoded = []
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                texts = [fh.read().decode("latin-1")]
            if f.endswith(".parquet"):
                try:
                    rows = con.execute(f"SELECT CAST(t AS VARCHAR) FROM read_parquet({lit(p)}) t").fetchall()
                    texts.append("\n".join(r[0] or "" for r in rows))
                except duckdb.Error:
                    undecoded.append(p)
            for n in needles:
                if any(n in t for t in texts):
                    hits[n].append(os.path.relpath(p, root))
    return hits, undecoded


# ---- the test ---------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segdb", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SEGDB_DIFF_SEED", "1")))
    args = ap.parse_args()
    started = time.time()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    for stale in ("db", "db_cap"):
        shutil.rmtree(f"{work}/{stale}", ignore_errors=True)
    rng = random.Random(args.seed)

    key = bytes(rng.randrange(256) for _ in range(32))
    with open(f"{work}/k.keyring", "w") as f:
        json.dump({"keys": {"user": base64.b64encode(key).decode()}}, f)
    os.chmod(f"{work}/k.keyring", 0o600)

    def pseudonym(raw):
        mac = hmac.new(key, b"segdb/v1\x00user\x00" + raw.encode(), hashlib.sha256).digest()[:16]
        return "p1_" + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    traits = gen_traits(rng)
    segments = gen_segments(rng)
    as_ofs = [rand_time(rng, datetime.datetime(2026, 11, 12, tzinfo=UTC), datetime.datetime(2026, 12, 3, tzinfo=UTC), ms=0.6)
              for _ in range(3)]
    as_ofs = [t + datetime.timedelta(seconds=1) if t.hour == t.minute == t.second == 0 and not t.microsecond else t
              for t in as_ofs]
    windows = {(t.event, t.window) for t in traits}
    windows |= {l.did for _, _, e in segments for l in leaves(e) if l.did}
    edges_at = sorted({(ev, x) for ev, w in windows for t in as_ofs for side in boundaries(w, t) for x in side},
                      key=lambda p: (p[0], p[1]))
    gen = generate(rng, work, edges_at)
    all_ids = [i for ids in gen["comps"] for i in ids]
    pseudonym_of = {i: pseudonym(i) for i in all_ids}
    chk = Checker(pseudonym_of)
    db = Segdb(args.segdb, work)
    oracle = Oracle(work)
    ident = Identity()

    def load(kind, name, *extra):
        p = db.ingest(kind, f"{work}/{name}", *extra)
        ident.load(kind, f"{work}/{name}")
        return p

    def raw_keymap():
        return {r: r for r in ident.ordinal}

    def identity_batch(b, label, ids):
        b.q(label, f"SELECT column1 AS p, identity_of(column1) AS c FROM {values([pseudonym_of[i] for i in ids])}")

    def check_identity(what, rows, ids, canon):
        got = {r["p"]: r["c"] for r in rows}
        bad_map = [(i, got.get(pseudonym_of[i])) for i in ids if got.get(pseudonym_of[i]) != pseudonym_of[canon[i]]]
        # the weaker properties, reported separately to tell a wrong choice from a wrong grouping
        groups = {}
        for i in ids:
            groups.setdefault(canon[i], set()).add(got.get(pseudonym_of[i]))
        split = [c for c, s in groups.items() if len(s) != 1]
        outside = [c for c, s in groups.items() if len(s) == 1 and next(iter(s)) not in
                   {pseudonym_of[r] for r in ids if canon[r] == c}]
        chk.ok(f"{what}: every id of a component maps to one pseudonym", not split,
               f"{len(split)} component(s) split, e.g. " + "; ".join(
                   f"{chk.comp_desc(c)} -> {sorted(map(str, groups[c]))}" for c in split[:4]))
        chk.ok(f"{what}: that pseudonym is one of the component's ids", not outside,
               f"{len(outside)} component(s), e.g. " + "; ".join(f"{chk.comp_desc(c)} -> {groups[c]}" for c in outside[:4]))
        chk.ok(f"{what}: identity_of(id) = pseudonym of the component's first-seen id", not bad_map,
               f"{len(bad_map)} of {len(ids)} ids differ, e.g. " + "; ".join(
                   f"{i} (component {chk.comp_desc(canon[i])}, ordinals "
                   f"{ {r: ident.ordinal[r] for r in ids if canon[r] == canon[i]} }): expected {pseudonym_of[canon[i]]}({canon[i]}), "
                   f"got {chk.name(g) if g else g}" for i, g in bad_map[:4]))

    # ---- stage 0: profiles and consent, no link yet: 'auto' = raw --------------------------------
    load("profiles", "profiles_1.csv")
    load("consent", "consent.csv")
    oracle.set_ordinals(ident.ordinal)
    oracle.state(raw_keymap(), [], [1])
    b = Batch()
    b.q("", f"SET segdb.as_of = '{iso(as_ofs[0])}'")
    for name, purpose, expr in STAGE0_SEGMENTS:
        b.q(f"create {name}", f"CREATE SEGMENT {name}{f' FOR PURPOSE {lit(purpose)}' if purpose else ''} AS {seg_text(expr)}")
        b.q(f"members {name}", f"SELECT user_id FROM segment_members('{name}')")
    res = b.run(db)
    for name, purpose, expr in STAGE0_SEGMENTS:
        chk.raw_sets(f"stage 0 (no links yet, identity 'auto' = raw) {name} = {seg_text(expr)} at {iso(as_ofs[0])}",
                     {r["user_id"] for r in res[f"members {name}"]}, oracle.segment(expr, purpose, as_ofs[0]))

    # ---- stage 1: events_1 links web ids through anonymous_id ------------------------------------
    p = load("events", "events_1.csv")
    chk.ok("ingest events_1: no rejected rows", "rejected" not in p.stderr, p.stderr[-1500:])
    canon1 = ident.components()
    chk.canon = canon1
    b = Batch()
    identity_batch(b, "identity", sorted(canon1))
    b.q("", f"SET segdb.as_of = '{iso(as_ofs[1])}'")
    for name, _, _ in STAGE0_SEGMENTS:
        b.q(f"members {name}", f"SELECT user_id FROM segment_members('{name}')")
    res = b.run(db)
    check_identity("identity_of after events_1 (partial components)", res["identity"], sorted(canon1), canon1)
    # the links of events_1's rows with both ids alone switch 'auto' to stitched
    oracle.set_ordinals(ident.ordinal)
    oracle.state({r: canon1[r] for r in ident.ordinal}, [1], [1])
    for name, purpose, expr in STAGE0_SEGMENTS:
        chk.components(f"after events_1 (links from anonymous_id only), identity 'auto': {name} = {seg_text(expr)} at {iso(as_ofs[1])}",
                       [r["user_id"] for r in res[f"members {name}"]], oracle.segment(expr, purpose, as_ofs[1]))

    # ---- stage 2: links (placeholder rows rejected), events_2, profiles_2 ------------------------
    p = load("links", "links.csv")
    m = re.search(r"rejected (\d+) rows", p.stderr)
    chk.eq("links.csv: placeholder rows rejected and reported", int(m.group(1)) if m else 0, gen["n_bad_links"])
    chk.ok("links.csv: no link refused under the default cap", "refused" not in p.stderr, p.stderr[-800:])
    p = load("events", "events_2.csv")
    chk.ok("ingest events_2: no rejected rows", "rejected" not in p.stderr, p.stderr[-1500:])
    load("profiles", "profiles_2.csv")
    canon = ident.components()
    chk.canon = canon
    comp_of_gen = {i: ci for ci, ids in enumerate(gen["comps"]) for i in ids}
    if set(canon) != set(all_ids) or any(
            (comp_of_gen[a] == comp_of_gen[b_]) != (canon[a] == canon[b_]) for a in all_ids for b_ in rng.sample(all_ids, 5)):
        print("internal error: the replayed components differ from the generated ones")
        sys.exit(2)
    oracle.set_ordinals(ident.ordinal)
    sizes = sorted(len([1 for r in canon if canon[r] == c]) for c in set(canon.values()))

    # ---- the main batch: traits, segments, identity, at several as_of, stitched and raw -----------
    b = Batch()
    for t in traits:
        b.q(f"create {t.name}", t.text())
    b.q("create tmp", "CREATE TRAIT tmp_dropped AS COUNT OF EVENT 'purchase'")
    b.q("drop tmp", "DROP TRAIT tmp_dropped")
    b.q("show traits", "SHOW TRAITS")
    for name, purpose, expr in segments:
        b.q(f"create {name}", f"CREATE SEGMENT {name}{f' FOR PURPOSE {lit(purpose)}' if purpose else ''} AS {seg_text(expr)}")
    all_segments = STAGE0_SEGMENTS + segments
    res = b.run(db)
    names_shown = {v for r in res["show traits"] for v in r.values() if isinstance(v, str)}
    chk.ok("SHOW TRAITS lists every trait and not the dropped one",
           {t.name for t in traits} <= names_shown and "tmp_dropped" not in names_shown,
           f"shown: {sorted(names_shown)[:40]}")

    modes = [("auto", True), ("raw", False)]
    b = Batch()
    for ai, t in enumerate(as_ofs):
        run_modes = modes + ([("stitched", True)] if ai == 1 else [])
        for mode, _ in run_modes:
            b.q("", f"SET segdb.identity = '{mode}'")
            b.q("", f"SET segdb.as_of = '{iso(t)}'")
            b.q(f"traits {ai} {mode}", "SELECT * FROM traits")
            for name, _, _ in all_segments:
                b.q(f"members {name} {ai} {mode}", f"SELECT user_id FROM segment_members('{name}')")
                b.q(f"size {name} {ai} {mode}", f"SELECT segment_size('{name}') AS n")
    b.q("", "SET segdb.identity = 'auto'")
    b.q("", f"SET segdb.as_of = '{iso(as_ofs[0])}'")
    identity_batch(b, "identity", all_ids)
    b.q("segments.s_purchase", "SELECT user_id FROM segments.s_purchase")
    b.q("members s_views explicit", f"SELECT user_id FROM segment_members('s_views', '{iso(as_ofs[2])}')")
    for name in ("s_purchase", "s_ads"):
        b.q(f"in_segment {name}", f"SELECT column1 AS p, in_segment('{name}', column1) AS m FROM {values([pseudonym_of[i] for i in all_ids])}")
    has_at = as_ofs[1]
    b.q("has_consent", f"SELECT column1 AS p, has_consent(column1, 'ads', '{iso(has_at)}') AS h FROM {values([pseudonym_of[i] for i in all_ids])}")
    b.q("events", "SELECT user_id, count(*) AS n FROM events GROUP BY user_id")
    t0 = time.time()
    res = b.run(db)
    main_batch_s = time.time() - t0

    stitched_keymap = {r: canon[r] for r in ident.ordinal}
    want_members = {}  # (name, as_of index, stitched) -> keys
    for ai, t in enumerate(as_ofs):
        run_modes = modes + ([("stitched", True)] if ai == 1 else [])
        for mode, stitched in run_modes:
            oracle.state(stitched_keymap if stitched else raw_keymap(), [1, 2], [1, 2])
            want_t = oracle.traits(traits, t)
            check_traits(chk, f"traits at {iso(t)} identity '{mode}'", res[f"traits {ai} {mode}"], want_t, traits, stitched)
            for name, purpose, expr in all_segments:
                want = oracle.segment(expr, purpose, t)
                want_members[(name, ai, stitched)] = want
                rows = [r["user_id"] for r in res[f"members {name} {ai} {mode}"]]
                what = f"segment_members('{name}') at {iso(t)} identity '{mode}'" + (f" FOR PURPOSE '{purpose}'" if purpose else "") + f": {seg_text(expr)}"
                if stitched:
                    chk.components(what, rows, want)
                else:
                    chk.raw_sets(what, set(rows), want)
                    chk.eq(what + " (no duplicate rows)", len(rows), len(set(rows)))
                chk.eq(f"segment_size('{name}') at {iso(t)} identity '{mode}'", [r["n"] for r in res[f"size {name} {ai} {mode}"]], [len(want)])

    check_identity("identity_of after every load", res["identity"], all_ids, canon)
    chk.components(f"SELECT user_id FROM segments.s_purchase at {iso(as_ofs[0])}", [r["user_id"] for r in res["segments.s_purchase"]],
                   want_members[("s_purchase", 0, True)])
    chk.components(f"segment_members('s_views', '{iso(as_ofs[2])}') (as_of argument)", [r["user_id"] for r in res["members s_views explicit"]],
                   want_members[("s_views", 2, True)])
    for name in ("s_purchase", "s_ads"):
        got = {r["p"]: r["m"] for r in res[f"in_segment {name}"]}
        bad = [i for i in all_ids if got.get(pseudonym_of[i]) != (canon[i] in want_members[(name, 0, True)])]
        chk.ok(f"in_segment('{name}', id) for every id (through identity_of) at {iso(as_ofs[0])}", not bad,
               f"{len(bad)} ids differ, e.g. " + "; ".join(f"{i} of {chk.comp_desc(canon[i])}: got {got.get(pseudonym_of[i])}" for i in bad[:5]))
    oracle.state(stitched_keymap, [1, 2], [1, 2])
    cons = oracle.consent(has_at)
    got = {r["p"]: r["h"] for r in res["has_consent"]}
    bad = [i for i in all_ids if got.get(pseudonym_of[i]) != (canon[i] in cons)]
    chk.ok(f"has_consent(id, 'ads', '{iso(has_at)}') for every id = latest record across its component", not bad,
           f"{len(bad)} ids differ, e.g. " + "; ".join(f"{i} of {chk.comp_desc(canon[i])}: got {got.get(pseudonym_of[i])}" for i in bad[:5]))
    counts = oracle.event_counts()
    chk.eq("events table: rows per user_id (the user_id, or else the anonymous id; placeholders never ids)",
           {chk.raw_of.get(r["user_id"], r["user_id"]): r["n"] for r in res["events"]}, counts)
    chk.eq("events loaded = rows in the files", sum(r["n"] for r in res["events"]), sum(gen["n_events"].values()))
    ph_ps = {pseudonym(s) for s in gen["placeholders_used"]} | {pseudonym(s.strip().lower()) for s in gen["placeholders_used"]}
    chk.absent("placeholder anonymous_ids are not ids", ph_ps, [("events.user_id", [r["user_id"] for r in res["events"]])])

    # guard against a vacuous scenario
    vac = [n for n, _, _ in all_segments if not any(want_members[(n, ai, True)] for ai in range(3))]
    if vac or max(sizes) < 3:
        chk.failures.append("vacuous scenario")
        print(f"scenario too weak: segments always empty: {vac}; component sizes {sizes}")

    # ---- FORGET two components: by a non-canonical raw id, by a pseudonym----------------------------------------
    comp_members = {}
    for r, c in canon.items():
        comp_members.setdefault(c, []).append(r)
    cands = sorted(c for c, ms in comp_members.items() if len(ms) >= 3 and any(gen["kind_of"][r] == "web" for r in ms)
                   and counts.get(c, 0) + sum(counts.get(r, 0) for r in ms) > 0
                   and any(c in want_members[(n, 0, True)] for n, _, _ in segments))
    if not cands:
        print(f"seed {args.seed}: no component fit to forget; scenario is vacuous")
        sys.exit(2)
    fc = rng.choice(cands)
    members = sorted(comp_members[fc])
    by = rng.choice([r for r in members if r != fc and gen["kind_of"][r] == "web"] or [r for r in members if r != fc])
    # a second component, forgotten by the pseudonym of one of its non-canonical ids
    cands2 = sorted(c for c, ms in comp_members.items() if c != fc and len(ms) >= 2)
    fc2 = rng.choice(cands2)
    members2 = sorted(comp_members[fc2])
    by2 = pseudonym_of[rng.choice([r for r in members2 if r != fc2])]
    forgotten = {fc, fc2}
    fps = [pseudonym_of[r] for r in members + members2]
    alive = [i for i in all_ids if canon[i] not in forgotten]
    t = as_ofs[0]
    b = Batch()
    b.q("forget", f"FORGET USER {lit(by)}")
    b.q("forget 2", f"FORGET USER {lit(by2)}")
    b.q("", f"SET segdb.as_of = '{iso(t)}'")
    b.q("traits", "SELECT * FROM traits")
    for name, _, _ in all_segments:
        b.q(f"members {name}", f"SELECT user_id FROM segment_members('{name}')")
    b.q("", "SET segdb.identity = 'raw'")
    b.q("raw traits", "SELECT user_id FROM traits")
    for name, _, _ in all_segments:
        b.q(f"raw members {name}", f"SELECT user_id FROM segment_members('{name}')")
    b.q("", "SET segdb.identity = 'auto'")
    b.q("events", "SELECT DISTINCT user_id FROM events")
    b.q("profiles", "SELECT user_id FROM profiles")
    b.q("consent", "SELECT user_id FROM consent")
    b.q("in_segment", f"SELECT column1 AS p, in_segment('s_not_cart', column1) AS m, has_consent(column1, 'ads', '{iso(END)}') AS h FROM {values(fps)}")
    identity_batch(b, "identity", alive)
    res = b.run(db)
    outs = [(f"segment_members('{n}')", [r["user_id"] for r in res[f"members {n}"]]) for n, _, _ in all_segments]
    outs += [(f"raw segment_members('{n}')", [r["user_id"] for r in res[f"raw members {n}"]]) for n, _, _ in all_segments]
    outs += [(label, [r["user_id"] for r in res[k]]) for label, k in (("traits", "traits"), ("raw traits", "raw traits"),
                                                                      ("events.user_id", "events"), ("profiles.user_id", "profiles"),
                                                                      ("consent.user_id", "consent"))]
    chk.absent(f"FORGET USER '{by}' forgets its whole component {chk.comp_desc(fc)}: no id of it in any output",
               [pseudonym_of[r] for r in members], outs)
    chk.absent(f"FORGET USER '{by2}' (pseudonym of {chk.raw_of[by2]}) forgets its whole component {chk.comp_desc(fc2)}: "
               f"no id of it in any output", [pseudonym_of[r] for r in members2], outs)
    chk.ok("after FORGET: in_segment and has_consent are false for every id of the components",
           all(r["m"] is not True and r["h"] is not True for r in res["in_segment"]), json.dumps(res["in_segment"]))
    for mode, stitched in modes:
        km = {r: (canon[r] if stitched else r) for r in ident.ordinal if canon[r] not in forgotten}
        oracle.state(km, [1, 2], [1, 2])
        want_t = oracle.traits(traits, t)
        if stitched:
            check_traits(chk, f"after FORGET: traits at {iso(t)} identity '{mode}'", res["traits"], want_t, traits, True)
        else:
            chk.raw_sets(f"after FORGET: traits.user_id at {iso(t)} identity 'raw'", {r["user_id"] for r in res["raw traits"]}, set(want_t))
        for name, purpose, expr in all_segments:
            want = oracle.segment(expr, purpose, t)
            rows = [r["user_id"] for r in res[f"{'' if stitched else 'raw '}members {name}"]]
            what = f"after FORGET: segment_members('{name}') at {iso(t)} identity '{mode}'"
            chk.components(what, rows, want) if stitched else chk.raw_sets(what, set(rows), want)
    check_identity("after FORGET: identity_of of everybody else", res["identity"], alive, canon)

    # ---- vacuum: no byte of the component's pseudonyms, no raw id anywhere -------------------------
    db.run("vacuum")
    probe = pseudonym_of[rng.choice([i for i in alive if counts.get(i)])]
    hits, undecoded = scan_dir(oracle.con, f"{work}/db", fps + [probe] + all_ids)
    chk.ok("the file scan finds a live pseudonym (the scan works)", bool(hits[probe]), "not found anywhere")
    left = {chk.name(p): hits[p][:4] for p in fps if hits[p]}
    chk.ok(f"after FORGET + vacuum: no byte of the forgotten components' {len(fps)} pseudonyms in any file", not left, json.dumps(left))
    raw_left = {r: hits[r][:3] for r in all_ids if hits[r]}
    chk.ok("no raw id in any file of the data directory", not raw_left, json.dumps(dict(list(raw_left.items())[:5])))
    if undecoded:
        print(f"note: {len(undecoded)} Parquet file(s) DuckDB could not decode were scanned as bytes only: {undecoded[:3]}")

    # ---- the cap: [identity] max_ids_per_profile = 3 ------------------------------------------------
    cap = Segdb(args.segdb, work, "db_cap")
    cap_ids = [f"cap-{c}-{rng.randrange(16 ** 6):06x}" for c in "abcdefghij"]
    a_, b_, c_, d_, e_, f_, g_, h_, i_, j_ = cap_ids
    write_csv(f"{work}/cap_events.csv", ["user_id", "event", "ts"], [(x, "view", iso(START + DAY)) for x in cap_ids])
    # a-b, b-c (3 ids), c-d refused; e-f, g-h, f-g (would be 4) refused; i-j, j-i (duplicate, no growth)
    cap_links = [(a_, b_), (b_, c_), (c_, d_), (e_, f_), (g_, h_), (f_, g_), (i_, j_), (j_, i_), (a_, c_)]
    write_csv(f"{work}/cap_links.csv", ["user_id", "linked_id"], cap_links)
    with open(f"{work}/cap.toml", "w") as f:
        f.write("[identity]\nmax_ids_per_profile = 3\n")
    cap.ingest("events", f"{work}/cap_events.csv")
    p = cap.ingest("links", f"{work}/cap_links.csv", "--config", f"{work}/cap.toml")
    m = re.search(r"refused (\d+) link", p.stderr)
    chk.eq("max_ids_per_profile = 3: refused links counted on stderr", int(m.group(1)) if m else None, 2)
    # links from events rows obey the cap too: a_'s component is full, d_'s is not
    w1, w2 = (f"web-cap{n}-{rng.randrange(16 ** 8):08x}" for n in (1, 2))
    write_csv(f"{work}/cap_events_2.csv", ["user_id", "anonymous_id", "event", "ts"],
              [(a_, w1, "view", iso(START + 2 * DAY)), (d_, w2, "view", iso(START + 2 * DAY)), ("", w1, "view", iso(START + 3 * DAY))])
    p = cap.ingest("events", f"{work}/cap_events_2.csv", "--config", f"{work}/cap.toml")
    m = re.search(r"refused (\d+) link", p.stderr)
    chk.eq("max_ids_per_profile = 3: a link from an events row (user_id + anonymous_id) refused and counted", int(m.group(1)) if m else None, 1)
    cap_ids += [w1, w2]
    want_cap = {a_: a_, b_: a_, c_: a_, d_: d_, e_: e_, f_: e_, g_: g_, h_: g_, i_: i_, j_: i_, w1: w1, w2: d_}
    cap_res = cap.sql([f"SELECT column1 AS p, identity_of(column1) AS c FROM {values([pseudonym(x) for x in cap_ids])}"])[0]
    got_cap = {r["p"]: r["c"] for r in cap_res}
    chk.eq("max_ids_per_profile = 3: components after the refused links (identity_of)",
           {x: {pseudonym(y): y for y in cap_ids}.get(got_cap.get(pseudonym(x)), got_cap.get(pseudonym(x))) for x in cap_ids}, want_cap)

    summary = {
        "test": "identity",
        "seed": args.seed,
        "ids": len(all_ids),
        "components": len(comp_members),
        "component_sizes": {s: sizes.count(s) for s in sorted(set(sizes))},
        "as_of": [iso(t) for t in as_ofs],
        "segment_sizes_stitched": {n: [len(want_members[(n, ai, True)]) for ai in range(3)] for n, _, _ in all_segments},
        "forgotten": [{"by": by, "component": members}, {"by": by2, "component": members2}],
        "checks": chk.checks,
        "failed": len(chk.failures),
        "segdb_calls": db.calls + cap.calls,
        "main_batch_seconds": round(main_batch_s, 1),
        "seconds": round(time.time() - started, 1),
        "ok": not chk.failures,
    }
    print(json.dumps(summary))
    print(f"{chk.checks - len(chk.failures)} of {chk.checks} checks passed")
    sys.exit(1 if chk.failures else 0)


if __name__ == "__main__":
    main()
