"""Helpers the differential oracles share: SQL literals, times, CSV inputs and the segment
expression tree (rendered as segment-language text; each oracle renders its own SQL for it).
Nothing here talks to segdb or knows what an answer should be."""

import csv

def iso(t):
    """ISO-8601 UTC with a Z; milliseconds only when the time has them."""
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def lit(s):
    return "'" + str(s).replace("'", "''") + "'"


def ts_lit(t):
    return f"TIMESTAMPTZ {lit(t.isoformat())}"


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


class Leaf:
    def __init__(self, seg, sql, did=None):
        self.seg, self.sql, self.did = seg, sql, did


class Not:
    def __init__(self, x):
        self.x = x


class And:
    def __init__(self, *xs):
        self.xs = xs


class Or:
    def __init__(self, *xs):
        self.xs = xs


def seg_text(e):
    if isinstance(e, Leaf):
        return e.seg
    if isinstance(e, Not):
        return f"NOT {seg_text(e.x)}" if isinstance(e.x, (Leaf, Not)) else f"NOT ({seg_text(e.x)})"
    if isinstance(e, And):
        return " AND ".join(f"({seg_text(x)})" if isinstance(x, Or) else seg_text(x) for x in e.xs)
    return " OR ".join(seg_text(x) for x in e.xs)


def leaves(e):
    if isinstance(e, Leaf):
        return [e]
    if isinstance(e, Not):
        return leaves(e.x)
    return [l for x in e.xs for l in leaves(x)]
