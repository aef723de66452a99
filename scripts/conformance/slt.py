"""sqllogictest (.slt) parser and record checker.

Follows sqllogictest-rs 0.29.1 (the version datafusion-sqllogictest 55.2.0 uses) with
DataFusion's runner settings: labels "Datafusion" and engine name "DataFusion", strict column
type validation, `value_normalizer` (trim_end) and `df_value_validator` (rows joined by one
space, trim_end, `<slt:ignore>` fragments). Sorting, `valuesort` and `hash-threshold` hashing
happen as in `Runner::apply_record`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

LABELS = {"Datafusion", "DataFusion"}
IGNORE_MARKER = "<slt:ignore>"


class ParseError(Exception):
    pass


@dataclass
class Record:
    kind: str  # statement | query | hash-threshold | halt | include
    line: int
    sql: str = ""
    conditions: list = field(default_factory=list)  # [("onlyif"|"skipif", label)]
    # statement: expect in {"ok", "count", "error"}; query: {"results", "error"}
    expect: str = "ok"
    count: int = 0
    error_kind: str = ""  # empty | inline | multiline | sqlstate
    error_pattern: str = ""
    types: str = ""
    sort_mode: str | None = None
    results: list = field(default_factory=list)
    threshold: int = 0
    filename: str = ""

    def skipped(self) -> bool:
        for cond, label in self.conditions:
            if cond == "onlyif" and label not in LABELS:
                return True
            if cond == "skipif" and label in LABELS:
                return True
        return False

    def expected_text(self) -> str:
        if self.expect == "error":
            if self.error_kind == "empty":
                return "(any error)"
            if self.error_kind == "multiline":
                return "error:\n" + self.error_pattern
            return "error matching /%s/" % self.error_pattern
        if self.kind == "statement":
            return "ok" if self.expect == "ok" else "count %d" % self.count
        return "\n".join(self.results)


def _lines(text: str):
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def parse(text: str) -> list[Record]:
    lines = _lines(text)
    i = 0
    n = len(lines)
    records: list[Record] = []
    conditions: list = []

    def parse_sql(start: int):
        """parse_lines: first line always, then until empty line or `----`."""
        if start >= n:
            raise ParseError("unexpected EOF at line %d" % (start + 1))
        out = [lines[start]]
        j = start + 1
        found = False
        while j < n:
            l = lines[j]
            j += 1
            if l == "":
                break
            if l == "----":
                found = True
                break
            out.append(l)
        return "\n".join(out), found, j

    def parse_multiline_error(j: int):
        res = []
        while j < n:
            l = lines[j]
            j += 1
            if l == "" and (j >= n or lines[j] == ""):
                j += 1
                break
            res.append(l)
        return "\n".join(res).strip(), j

    def inline_error(tokens):
        joined = " ".join(tokens)
        if re.fullmatch(r"\(([0-9A-Z]{5})\)", joined):
            return "sqlstate", joined[1:-1]
        if joined == "":
            return "empty", ""
        return "inline", joined

    while i < n:
        line = lines[i]
        num = i + 1
        i += 1
        if line.startswith("#"):
            continue
        if line == "":
            continue
        tokens = line.split()
        if not tokens:
            continue
        head = tokens[0]
        if head == "include" and len(tokens) == 2:
            records.append(Record("include", num, sql=tokens[1]))
        elif head == "halt" and len(tokens) == 1:
            records.append(Record("halt", num))
        elif head in ("skipif", "onlyif") and len(tokens) == 2:
            conditions.append((head, tokens[1]))
        elif head == "hash-threshold" and len(tokens) == 2:
            records.append(Record("hash-threshold", num, threshold=int(tokens[1])))
        elif head == "statement":
            rest = tokens[1:]
            rec = Record("statement", num, conditions=conditions)
            conditions = []
            if rest[:1] == ["ok"]:
                rec.expect = "ok"
            elif rest[:1] == ["error"]:
                rec.expect = "error"
                r = rest[1:]
                if len(r) == 4 and r[0] == "retry" and r[2] == "backoff":
                    rec.error_kind, rec.error_pattern = "empty", ""
                else:
                    rec.error_kind, rec.error_pattern = inline_error(r)
            elif rest[:1] == ["count"] and len(rest) >= 2:
                rec.expect = "count"
                rec.count = int(rest[1])
            else:
                raise ParseError("invalid line %d: %r" % (num, line))
            rec.sql, has_results, i = parse_sql(i)
            if has_results:
                if rec.expect == "error" and rec.error_kind == "empty":
                    rec.error_kind = "multiline"
                    rec.error_pattern, i = parse_multiline_error(i)
                elif rec.expect == "error":
                    raise ParseError("duplicated error messages at line %d" % num)
                else:
                    raise ParseError("statement with results at line %d" % num)
            records.append(rec)
        elif head == "query":
            rest = tokens[1:]
            rec = Record("query", num, conditions=conditions)
            conditions = []
            if rest[:1] == ["error"]:
                rec.expect = "error"
                r = rest[1:]
                if len(r) == 4 and r[0] == "retry" and r[2] == "backoff":
                    rec.error_kind, rec.error_pattern = "empty", ""
                else:
                    rec.error_kind, rec.error_pattern = inline_error(r)
            elif rest:
                rec.expect = "results"
                rec.types = "".join(c if c in "BDIPRT" else "?" for c in rest[0])
                r = rest[1:]
                if r and r[0] in ("nosort", "rowsort", "valuesort"):
                    rec.sort_mode = r[0]
            else:
                rec.expect = "results"
            rec.sql, has_results, i = parse_sql(i)
            if has_results:
                if rec.expect == "results":
                    while i < n:
                        l = lines[i]
                        i += 1
                        if l == "":
                            break
                        rec.results.append(l)
                elif rec.error_kind == "empty":
                    rec.error_kind = "multiline"
                    rec.error_pattern, i = parse_multiline_error(i)
                else:
                    raise ParseError("duplicated error messages at line %d" % num)
            records.append(rec)
        elif head in ("control", "connection", "system", "sleep", "subtest", "let"):
            raise ParseError("unsupported directive %r at line %d" % (head, num))
        else:
            raise ParseError("invalid line %d: %r" % (num, line))
    return records


# ---------------------------------------------------------------- outcomes

@dataclass
class Output:
    """What an engine returned for one SQL string."""
    kind: str  # rows | complete | error | timeout
    types: str = ""
    rows: list = field(default_factory=list)
    error: str = ""
    millis: float = 0.0
    arrow_types: list = field(default_factory=list)  # str() of each column's Arrow type


def _compile(pattern: str):
    rx = _RX_CACHE.get(pattern)
    if rx is None:
        try:
            rx = re.compile(_rust_regex_to_python(pattern))
        except re.error:
            rx = re.compile(re.escape(pattern))
        _RX_CACHE[pattern] = rx
    return rx


_RX_CACHE: dict = {}


def _rust_regex_to_python(p: str) -> str:
    # Rust's regex accepts \z (end of text) and escaped non-meta punctuation; Python spells \z
    # as \Z and rejects a few escapes.
    p = p.replace(r"\z", r"\Z")
    return p


def error_matches(rec: Record, err: str) -> bool:
    if rec.error_kind == "empty":
        return True
    if rec.error_kind == "inline":
        return _compile(rec.error_pattern).search(err) is not None
    if rec.error_kind == "multiline":
        return rec.error_pattern.strip() == err.strip()
    return False  # sqlstate: DataFusion reports none


def _validate(actual_rows: list, expected: list) -> bool:
    norm_expected = [e.rstrip() for e in expected]
    norm_actual = [" ".join(r).rstrip() for r in actual_rows]
    if any(IGNORE_MARKER in e for e in expected):
        exp_snap = "\n".join(norm_expected)
        act_snap = "\n".join(norm_actual)
        pos = 0
        for i, frag in enumerate(exp_snap.split(IGNORE_MARKER)):
            if frag == "":
                continue
            idx = act_snap.find(frag, pos)
            if idx < 0:
                return False
            if i == 0 and idx != 0:
                return False
            pos = idx + len(frag)
        return True
    return norm_actual == norm_expected


@dataclass
class Verdict:
    ok: bool
    reason: str = ""  # short machine category of a failure
    got: str = ""  # what the engine produced, as text


def _rows_text(rows) -> str:
    return "\n".join(" ".join(r).rstrip() for r in rows)


def check(rec: Record, out: Output, hash_threshold: int) -> Verdict:
    """Runner::run_async_no_retry's comparison for one record."""
    if out.kind == "timeout":
        return Verdict(False, "timeout", out.error)
    if rec.kind == "statement":
        if out.kind == "error":
            if rec.expect == "error":
                if error_matches(rec, out.error):
                    return Verdict(True)
                return Verdict(False, "error_mismatch", out.error)
            return Verdict(False, "unexpected_error", out.error)
        if rec.expect == "error":
            return Verdict(False, "expected_error", "ok" if out.kind == "complete" else _rows_text(out.rows))
        if rec.expect == "count":
            got = len(out.rows) if out.kind == "rows" else 0
            if got != rec.count:
                return Verdict(False, "count_mismatch", "count %d" % got)
        return Verdict(True)
    # query
    if out.kind == "error":
        if rec.expect == "error":
            if error_matches(rec, out.error):
                return Verdict(True)
            return Verdict(False, "error_mismatch", out.error)
        return Verdict(False, "unexpected_error", out.error)
    if rec.expect == "error":
        return Verdict(False, "expected_error", "ok" if out.kind == "complete" else _rows_text(out.rows))
    if out.kind == "complete":
        if rec.results:
            return Verdict(False, "result_mismatch", "(statement complete, no rows)")
        return Verdict(True)
    rows = [list(r) for r in out.rows]
    ncols = len(out.types)
    value_sort = False
    if rec.sort_mode == "rowsort":
        rows.sort()
    elif rec.sort_mode == "valuesort":
        rows = sorted([[v] for r in rows for v in r])
        value_sort = True
    num_values = len(rows) if value_sort else len(rows) * ncols
    if hash_threshold > 0 and num_values > hash_threshold:
        md5 = hashlib.md5()
        for r in rows:
            for v in r:
                md5.update(v.encode())
                md5.update(b"\n")
        rows = [["%d values hashing to %s" % (len(rows) * len(rows[0]), md5.hexdigest())]]
    if out.types != rec.types:
        return Verdict(False, "types_mismatch", "types %s (expected %s)\n%s" % (out.types, rec.types, _rows_text(rows)))
    if not _validate(rows, rec.results):
        return Verdict(False, "result_mismatch", _rows_text(rows))
    return Verdict(True)
