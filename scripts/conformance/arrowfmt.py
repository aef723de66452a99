"""Arrow -> sqllogictest text, the way DataFusion 55.2's own runner prints results.

Mirrors datafusion-sqllogictest 55.2.0 `src/engines/datafusion_engine/normalize.rs` and
`src/engines/conversion.rs`, and, for every other type, arrow-cast 59 `display.rs`
(`ArrayFormatter` with DataFusion's default `FormatOptions` and null = "NULL").

Top level (`cell_to_string`): NULL -> "NULL"; booleans "true"/"false"; floats and decimals
through BigDecimal rounded half-even to 12 places (decimals: to their scale), trailing zeros
dropped, plain notation; strings: "" -> "(empty)", trailing newlines trimmed, NUL -> "\\0";
dictionaries -> their value at top level. Anything else, and everything nested inside lists,
structs, maps, unions: arrow's display (floats by ryu, "NULL" for nested nulls, strings raw,
binary as lower-case hex, timestamps `%Y-%m-%dT%H:%M:%S%.f`, with a time zone RFC 3339
(`Z` for a zero offset), durations "pretty", intervals "1 mons 2 days 3.000000000 secs").
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import re
import struct
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

NULL = "NULL"

_DCTX = decimal.Context(prec=4000, Emax=999999, Emin=-999999, rounding=decimal.ROUND_HALF_EVEN)


# ---------------------------------------------------------------- numbers

def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _shortest_digits(x: float, single: bool) -> str:
    """Shortest round-trip repr (like Rust's and ryu's), possibly with an exponent."""
    if not single:
        return repr(x)
    for p in range(1, 10):
        s = "%.*g" % (p, x)
        if _f32(float(s)) == x:
            return s
    return repr(x)


def rust_float_display(x: float, single: bool = False) -> str:
    """Rust's `{}` for f32/f64: shortest round-trip digits, never an exponent, "1" not "1.0"."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    return format(decimal.Decimal(_shortest_digits(x, single)).normalize(_DCTX), "f")


def ryu_format(x: float, single: bool = False) -> str:
    """ryu::Buffer::format (arrow's display of nested floats)."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0.0"
    r = _shortest_digits(abs(x), single)
    # decompose into mantissa digits and exponent k: value = digits * 10^k
    if "e" in r or "E" in r:
        m, e = re.split("[eE]", r)
        e = int(e)
    else:
        m, e = r, 0
    if "." in m:
        ip, fp = m.split(".")
    else:
        ip, fp = m, ""
    digits = (ip + fp).lstrip("0")
    k = e - len(fp)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped or "0"
    length = len(digits)
    kk = length + k
    hi = 13 if single else 16
    lo = -6 if single else -5
    if 0 <= k and kk <= hi:
        return sign + digits + "0" * (kk - length) + ".0"
    if 0 < kk <= hi:
        return sign + digits[:kk] + "." + digits[kk:]
    if lo < kk <= 0:
        return sign + "0." + "0" * (-kk) + digits
    if length == 1:
        return sign + digits + "e" + str(kk - 1)
    return sign + digits[0] + "." + digits[1:] + "e" + str(kk - 1)


def big_decimal_to_str(d: decimal.Decimal, round_digits: int | None = None) -> str:
    """conversion.rs big_decimal_to_str: round half-even, normalize, plain string."""
    nd = 12 if round_digits is None else round_digits
    if d.is_zero():
        return "0"
    exp = d.as_tuple().exponent
    if isinstance(exp, int) and -exp > nd:
        d = d.quantize(decimal.Decimal(1).scaleb(-nd, _DCTX), rounding=decimal.ROUND_HALF_EVEN,
                       context=_DCTX)
    if d.is_zero():
        return "0"
    return format(d.normalize(_DCTX), "f")


def float_to_str(x: float, single: bool = False) -> str:
    """conversion.rs f32_to_str / f64_to_str / f16_to_str."""
    if x != x:
        return "NaN"
    if x == float("inf"):
        return "Infinity"
    if x == float("-inf"):
        return "-Infinity"
    return big_decimal_to_str(decimal.Decimal(rust_float_display(x, single)))


def arrow_format_decimal(unscaled: int, precision: int | None, scale: int) -> str:
    """arrow_data::decimal::format_decimal_str (safe variant)."""
    value_str = str(unscaled)
    if value_str.startswith("-"):
        sign, rest = "-", value_str[1:]
    else:
        sign, rest = "", value_str
    if precision is not None:
        value_str = value_str[: min(precision, len(rest)) + len(sign)]
    if scale == 0:
        return value_str
    if scale < 0:
        return value_str + "0" * (-scale)
    if len(rest) > scale:
        return value_str[: len(value_str) - scale] + "." + value_str[len(value_str) - scale:]
    return sign + "0." + rest.rjust(scale, "0")


def _decimal_ints(arr) -> list:
    """Unscaled values straight from the data buffer (pyarrow can't convert negative scales)."""
    width = arr.type.bit_width // 8
    mv = memoryview(arr.buffers()[1])
    base = arr.offset
    return [int.from_bytes(mv[(base + i) * width:(base + i + 1) * width], "little", signed=True)
            for i in range(len(arr))]


# ---------------------------------------------------------------- dates and times

def _civil_from_days(z: int):
    """Howard Hinnant's algorithm: days since 1970-01-01 -> (y, m, d), any range."""
    z += 719468
    era = z // 146097  # floor division: C++'s (z >= 0 ? z : z - 146096) / 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def _year(y: int) -> str:
    if 0 <= y < 10000:
        return "%04d" % y
    return ("+" if y > 0 else "-") + "%04d" % abs(y)


def _frac_auto(nanos: int) -> str:
    """chrono's %.f and SecondsFormat::AutoSi: nothing, .3, .6 or .9 digits."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return ".%03d" % (nanos // 1_000_000)
    if nanos % 1000 == 0:
        return ".%06d" % (nanos // 1000)
    return ".%09d" % nanos


def _date_str(days: int) -> str:
    y, m, d = _civil_from_days(days)
    return "%s-%02d-%02d" % (_year(y), m, d)


def _time_str(secs_of_day: int, nanos: int) -> str:
    h, rem = divmod(secs_of_day, 3600)
    mi, s = divmod(rem, 60)
    return "%02d:%02d:%02d%s" % (h, mi, s, _frac_auto(nanos))


_UNIT_PER_SEC = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}


def _split_ts(v: int, unit: str):
    per = _UNIT_PER_SEC[unit]
    secs, sub = divmod(v, per)
    nanos = sub * (1_000_000_000 // per)
    days, sod = divmod(secs, 86400)
    return days, sod, nanos


def naive_datetime_str(v: int, unit: str) -> str:
    days, sod, nanos = _split_ts(v, unit)
    return _date_str(days) + "T" + _time_str(sod, nanos)


_FIXED_TZ = re.compile(r"^([+-])(\d{2}):?(\d{2})?$")


@lru_cache(maxsize=None)
def _zone(tz: str):
    m = _FIXED_TZ.match(tz)
    if m:
        off = int(m.group(2)) * 3600 + int(m.group(3) or 0) * 60
        return -off if m.group(1) == "-" else off
    import zoneinfo

    return zoneinfo.ZoneInfo(tz)


def _offset_secs(zone, utc_secs: int) -> int:
    if isinstance(zone, int):
        return zone
    try:
        t = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(seconds=utc_secs)
        return int(t.astimezone(zone).utcoffset().total_seconds())
    except (OverflowError, ValueError):
        return int(zone.utcoffset(_dt.datetime(1970, 1, 1)).total_seconds())


def tz_datetime_str(v: int, unit: str, tz: str) -> str:
    per = _UNIT_PER_SEC[unit]
    secs, sub = divmod(v, per)
    nanos = sub * (1_000_000_000 // per)
    off = _offset_secs(_zone(tz), secs)
    days, sod = divmod(secs + off, 86400)
    s = _date_str(days) + "T" + _time_str(sod, 0) + _frac_auto(nanos)
    if off == 0:
        return s + "Z"
    sign = "+" if off > 0 else "-"
    a = abs(off)
    # chrono's OffsetPrecision::Minutes rounds the seconds
    mins = (a + 30) // 60
    return s + "%s%02d:%02d" % (sign, mins // 60, mins % 60)


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _trunc_rem(a: int, b: int) -> int:
    return a - b * _trunc_div(a, b)


def duration_pretty(v: int, unit: str) -> str:
    scale = {"s": 0, "ms": 3, "us": 6, "ns": 9}[unit]
    if scale == 0:
        secs = v
        mins = _trunc_div(secs, 60)
        hours = _trunc_div(mins, 60)
        days = _trunc_div(hours, 24)
        secs -= mins * 60
        mins -= hours * 60
        hours -= days * 24
        return "%d days %d hours %d mins %d secs" % (days, hours, mins, secs)
    p = 10 ** scale
    secs = _trunc_div(v, p)
    mins = _trunc_div(secs, 60)
    hours = _trunc_div(mins, 60)
    days = _trunc_div(hours, 24)
    subsec = v - secs * p
    secs -= mins * 60
    mins -= hours * 60
    hours -= days * 24
    if subsec < 0:
        return "%d days %d hours %d mins -%d.%0*d secs" % (days, hours, mins, abs(secs), scale, abs(subsec))
    return "%d days %d hours %d mins %d.%0*d secs" % (days, hours, mins, secs, scale, subsec)


def _sub_day(total: int, per_sec: int, width: int, prefix: str) -> str:
    """arrow's NanosecondsFormatter / MillisecondsFormatter."""
    out = []
    secs = _trunc_div(total, per_sec)
    mins = _trunc_div(secs, 60)
    hours = _trunc_div(mins, 60)
    secs -= mins * 60
    mins -= hours * 60
    frac = _trunc_rem(total, per_sec)
    if hours != 0:
        out.append("%s%d hours" % (prefix, hours))
        prefix = " "
    if mins != 0:
        out.append("%s%d mins" % (prefix, mins))
        prefix = " "
    if secs != 0 or frac != 0:
        sign = "-" if (secs < 0 or frac < 0) else ""
        out.append("%s%s%d.%0*d secs" % (prefix, sign, abs(secs), width, abs(frac)))
    return "".join(out)


def interval_mdn(months: int, days: int, nanos: int) -> str:
    if months == 0 and days == 0 and nanos == 0:
        return "0 secs"
    out, prefix = [], ""
    if months != 0:
        out.append("%d mons" % months)
        prefix = " "
    if days != 0:
        out.append("%s%d days" % (prefix, days))
        prefix = " "
    if nanos != 0:
        out.append(_sub_day(nanos, 1_000_000_000, 9, prefix))
    return "".join(out)


def interval_dt(days: int, millis: int) -> str:
    if days == 0 and millis == 0:
        return "0 secs"
    out, prefix = [], ""
    if days != 0:
        out.append("%d days" % days)
        prefix = " "
    if millis != 0:
        out.append(_sub_day(millis, 1000, 3, prefix))
    return "".join(out)


def interval_ym(months: int) -> str:
    years = months // 12  # floor, as arrow does with f64
    month = months - years * 12
    return "%d years %d mons" % (years, month)


# ---------------------------------------------------------------- arrays

def _buffer_ints(arr: pa.Array, fmt: str, width: int):
    """Raw fixed-width values of a primitive array (for types pyarrow can't convert)."""
    buf = arr.buffers()[1]
    mv = memoryview(buf)[arr.offset * width:(arr.offset + len(arr)) * width]
    return [struct.unpack_from("<" + fmt, mv, i * width) for i in range(len(arr))]


def _valid(arr: pa.Array):
    if arr.null_count == 0 and not pa.types.is_null(arr.type):
        return [True] * len(arr)
    if pa.types.is_null(arr.type):
        return [False] * len(arr)
    return arr.is_valid().to_pylist()


def _temporal_ints(arr: pa.Array):
    # view as the physical integer type: no conversion, no range limits
    width = arr.type.bit_width
    phys = pa.int64() if width == 64 else pa.int32()
    return arr.view(phys).to_pylist()


def format_column(arr, top: bool = True) -> list[str]:
    """Format every value of `arr` (Array or ChunkedArray). NULLs as "NULL"."""
    if isinstance(arr, pa.ChunkedArray):
        out: list[str] = []
        for c in arr.chunks:
            out.extend(format_column(c, top))
        return out
    t = arr.type
    n = len(arr)
    if n == 0:
        return []
    if isinstance(t, IntervalYearMonth) or isinstance(t, IntervalDayTime):
        valid = _valid(arr.storage)
        if isinstance(t, IntervalYearMonth):
            vals = [interval_ym(v[0]) for v in _buffer_ints(arr.storage, "i", 4)]
        else:
            vals = [interval_dt(*v) for v in _buffer_ints(arr.storage, "ii", 8)]
        return [v if ok else NULL for v, ok in zip(vals, valid)]
    if isinstance(t, pa.ExtensionType) or isinstance(arr, pa.ExtensionArray):
        return format_column(arr.storage, top)
    valid = _valid(arr)

    def finish(vals):
        return [v if ok else NULL for v, ok in zip(vals, valid)]

    if pa.types.is_null(t):
        return [NULL] * n
    if pa.types.is_boolean(t):
        return finish(["true" if v else "false" for v in arr.to_pylist()])
    if pa.types.is_integer(t):
        return finish([str(v) for v in arr.to_pylist()])
    if pa.types.is_floating(t):
        single = t.bit_width < 64
        if t.bit_width == 16:
            vals = [float(v) if v is not None else 0.0 for v in arr.cast(pa.float32()).to_pylist()]
        else:
            vals = [v if v is not None else 0.0 for v in arr.to_pylist()]
        if top:
            return finish([float_to_str(v, single) for v in vals])
        if t.bit_width == 16:
            # half's Display is f32's Display
            return finish([_nested_f16(v) for v in vals])
        return finish([ryu_format(v, single) for v in vals])
    if pa.types.is_decimal(t):
        scale, prec = t.scale, t.precision
        out = []
        for u, ok in zip(_decimal_ints(arr), valid):
            if not ok:
                out.append(NULL)
                continue
            if top:
                s = arrow_format_decimal(u, None, scale)
                out.append(big_decimal_to_str(decimal.Decimal(s), scale))
            else:
                out.append(arrow_format_decimal(u, prec, scale))
        return finish(out)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        vals = arr.to_pylist()
        if top:
            return finish([_varchar(v) if v is not None else NULL for v in vals])
        return finish([v if v is not None else NULL for v in vals])
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or pa.types.is_binary_view(t)):
        return finish([v.hex() if v is not None else NULL for v in arr.to_pylist()])
    if pa.types.is_dictionary(t):
        idx = arr.indices.to_pylist()
        vals = format_column(arr.dictionary, top)
        return finish([vals[i] if i is not None else NULL for i in idx])
    if pa.types.is_date32(t):
        return finish([_date_str(v) if v is not None else NULL for v in _temporal_ints(arr)])
    if pa.types.is_date64(t):
        return finish([naive_datetime_str(v, "ms") if v is not None else NULL for v in _temporal_ints(arr)])
    if pa.types.is_time(t):
        per = _UNIT_PER_SEC[t.unit]
        out = []
        for v in _temporal_ints(arr):
            if v is None:
                out.append(NULL)
                continue
            secs, sub = divmod(v, per)
            out.append(_time_str(secs, sub * (1_000_000_000 // per)))
        return finish(out)
    if pa.types.is_timestamp(t):
        ints = _temporal_ints(arr)
        if t.tz is None:
            return finish([naive_datetime_str(v, t.unit) if v is not None else NULL for v in ints])
        return finish([tz_datetime_str(v, t.unit, t.tz) if v is not None else NULL for v in ints])
    if pa.types.is_duration(t):
        return finish([duration_pretty(v, t.unit) if v is not None else NULL for v in _temporal_ints(arr)])
    if pa.types.is_interval(t):  # month_day_nano
        return finish([interval_mdn(v.months, v.days, v.nanoseconds) if v is not None else NULL
                       for v in arr.to_pylist()])
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        offs = arr.offsets.to_pylist()
        if pa.types.is_map(t):
            entries = arr.values  # struct<key, value>
            keys = format_column(entries.field(0), False)
            items = format_column(entries.field(1), False)
            out = []
            for i in range(n):
                out.append("{" + ", ".join("%s: %s" % (keys[j], items[j]) for j in range(offs[i], offs[i + 1])) + "}")
            return finish(out)
        child = format_column(arr.values, False)
        return finish(["[" + ", ".join(child[offs[i]:offs[i + 1]]) + "]" for i in range(n)])
    if pa.types.is_fixed_size_list(t):
        size = t.list_size
        child = format_column(arr.values, False)
        base = arr.offset
        return finish(["[" + ", ".join(child[(base + i) * size:(base + i + 1) * size]) + "]" for i in range(n)])
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        offs = arr.offsets.to_pylist()
        sizes = arr.sizes.to_pylist()
        child = format_column(arr.values, False)
        return finish(["[" + ", ".join(child[offs[i]:offs[i] + sizes[i]]) + "]" for i in range(n)])
    if pa.types.is_struct(t):
        cols = [(t.field(i).name, format_column(arr.field(i), False)) for i in range(t.num_fields)]
        return finish(["{" + ", ".join("%s: %s" % (name, vals[i]) for name, vals in cols) + "}"
                       for i in range(n)])
    if pa.types.is_union(t):
        codes = arr.type_codes.to_pylist()
        dense = t.mode == "dense"
        offsets = arr.offsets.to_pylist() if dense else None
        children = {}
        for pos, code in enumerate(t.type_codes):
            children[code] = (t.field(pos).name, format_column(arr.field(pos), False))
        out = []
        for i in range(n):
            name, vals = children[codes[i]]
            j = offsets[i] if dense else i
            out.append("{%s=%s}" % (name, vals[j]))
        return out
    if pa.types.is_run_end_encoded(t):
        return format_column(pc.run_end_decode(arr), top)
    raise NotImplementedError("formatting %s is not supported by the conformance runner" % t)


def _nested_f16(v: float) -> str:
    return rust_float_display(v, True)


def _varchar(v: str) -> str:
    if v == "":
        return "(empty)"
    return v.rstrip("\n").replace("\x00", "\\0")


# ---------------------------------------------------------------- types

def column_type_char(t: pa.DataType) -> str:
    """normalize.rs convert_schema_to_types, as the type letters of slt."""
    if isinstance(t, pa.ExtensionType):
        t = t.storage_type
    if pa.types.is_boolean(t):
        return "B"
    if pa.types.is_integer(t):
        return "I"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "R"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "T"
    if pa.types.is_date(t) or pa.types.is_time(t):
        return "D"
    if pa.types.is_timestamp(t):
        return "P"
    if pa.types.is_dictionary(t):
        v = t.value_type
        if pa.types.is_string(v) or pa.types.is_large_string(v) or pa.types.is_string_view(v):
            return "T"
        return "?"
    return "?"


_INTERVAL_MONTHS, _INTERVAL_DAY_TIME = 21, 22  # arrow::Type ids pyarrow has no array class for


class IntervalYearMonth(pa.ExtensionType):
    def __init__(self):
        super().__init__(pa.int32(), "segdb.conformance.interval_year_month")

    def __arrow_ext_serialize__(self):
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()


class IntervalDayTime(pa.ExtensionType):
    def __init__(self):
        super().__init__(pa.binary(8), "segdb.conformance.interval_day_time")

    def __arrow_ext_serialize__(self):
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()


for _ext in (IntervalYearMonth(), IntervalDayTime()):
    try:
        pa.register_extension_type(_ext)
    except pa.ArrowKeyError:
        pass


def _fix_type(t: pa.DataType):
    """Replace interval[months] / interval[day_time] (anywhere) by same-layout extension types."""
    if t.id == _INTERVAL_MONTHS:
        return IntervalYearMonth()
    if t.id == _INTERVAL_DAY_TIME:
        return IntervalDayTime()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        f = t.value_field
        nf = f.with_type(_fix_type(f.type))
        if nf.type == f.type:
            return t
        if pa.types.is_fixed_size_list(t):
            return pa.list_(nf, t.list_size)
        return pa.large_list(nf) if pa.types.is_large_list(t) else pa.list_(nf)
    if pa.types.is_struct(t):
        fields = [t.field(i) for i in range(t.num_fields)]
        nfs = [f.with_type(_fix_type(f.type)) for f in fields]
        return t if all(a.type == b.type for a, b in zip(fields, nfs)) else pa.struct(nfs)
    if pa.types.is_map(t):
        k, v = t.key_field, t.item_field
        nv = v.with_type(_fix_type(v.type))
        return t if nv.type == v.type else pa.map_(k, nv, keys_sorted=t.keys_sorted)
    if pa.types.is_dictionary(t):
        nv = _fix_type(t.value_type)
        return t if nv == t.value_type else pa.dictionary(t.index_type, nv, t.ordered)
    return t


def readable_batch(b: pa.RecordBatch) -> pa.RecordBatch:
    """A batch whose columns pyarrow can wrap (see _fix_type); the same buffers."""
    fields = list(b.schema)
    fixed = [f.with_type(_fix_type(f.type)) for f in fields]
    if all(a.type == c.type for a, c in zip(fields, fixed)):
        return b
    _, array_capsule = b.__arrow_c_array__()
    schema = pa.schema(fixed, metadata=b.schema.metadata)
    return pa.RecordBatch._import_from_c_capsule(schema.__arrow_c_schema__(), array_capsule)


def batches_to_rows(schema: pa.Schema, batches, workspace_root: str | None) -> list[list[str]]:
    """normalize.rs convert_batches: cells, explain-style row expansion, WORKSPACE_ROOT."""
    rows: list[list[str]] = []
    for b in batches:
        if b.num_rows == 0:
            continue
        b = readable_batch(b)
        cols = [format_column(b.column(i), True) for i in range(b.num_columns)]
        for r in range(b.num_rows):
            row = [c[r] for c in cols]
            for out in _expand_row(row):
                if workspace_root:
                    out = [s.replace(workspace_root, "WORKSPACE_ROOT") for s in out]
                rows.append(out)
    return rows


def _expand_row(row: list[str]):
    if not row:
        return [row]
    cell = row[-1]
    lines = cell.split("\n")
    if len(lines) < 2:
        return [row]
    first = row[:-1]
    out = [first]
    for idx, l in enumerate(lines):
        content = l.lstrip()
        prefix = "-" * (len(l) - len(content))
        out.append(["%02d)%s%s" % (idx + 1, prefix, content)])
    return out
