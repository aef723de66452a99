"""SQLAlchemy dialect `segdb://` for segdb's Arrow Flight SQL server (`segdb serve`).

URI: ``segdb://USER:PASSWORD@HOST:PORT[?tls=true&tls_skip_verify=true&as_of=...]``

- plain gRPC by default (what `segdb serve` speaks without `--tls-cert`); ``tls=true`` for
  `grpc+tls`, ``tls_skip_verify=true`` to accept a self-signed certificate,
  ``tls_root_certs=/path/ca.pem`` to trust a private CA;
- ``token=...`` instead of user and password sends a ready bearer token;
- ``as_of=2026-02-01T00:00:00Z`` (shorthand of ``segdb.as_of=...``) and any other
  ``segdb.NAME=value`` become ``SET segdb.NAME = 'value'`` on every new connection, so segment
  tables and segment functions are evaluated at that reference time.

Unknown query parameters are an error rather than silently ignored.
Metadata comes from Flight SQL's GetDbSchemas/GetTables (schemas `public`, `segments`,
`information_schema`); segments (table type ``SEGMENT``) are listed as tables of schema
`segments`, with their definition as the table comment. Column types are mapped from Arrow.
"""

import functools
import re
from typing import Dict, Optional

import pyarrow as pa
from sqlalchemy import exc, types as sqltypes
from sqlalchemy.engine import default, reflection
from sqlalchemy.sql import compiler

DEFAULT_PORT = 50051
TABLE_TYPES = ["TABLE", "SEGMENT", "LOCAL TEMPORARY"]
VIEW_TYPES = ["VIEW"]
_SETTING_NAME = re.compile(r"^segdb\.[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


# --- types --------------------------------------------------------------------------------------


class DOUBLE(sqltypes.Float):
    """64-bit float (Arrow float64)."""

    __visit_name__ = "DOUBLE"


class TINYINT(sqltypes.Integer):
    __visit_name__ = "TINYINT"


class UNSIGNED(sqltypes.BigInteger):
    """An unsigned integer of `bits` bits (Arrow uint8..uint64)."""

    __visit_name__ = "UNSIGNED"

    def __init__(self, bits: int = 64):
        self.bits = bits


class VARBINARY(sqltypes.LargeBinary):
    __visit_name__ = "VARBINARY"


class SegdbTypeCompiler(compiler.GenericTypeCompiler):
    """DataFusion's spelling of the types."""

    def visit_DOUBLE(self, type_, **kw):
        return "DOUBLE"

    def visit_TINYINT(self, type_, **kw):
        return "TINYINT"

    def visit_UNSIGNED(self, type_, **kw):
        return {8: "TINYINT", 16: "SMALLINT", 32: "INT", 64: "BIGINT"}[type_.bits] + " UNSIGNED"

    def visit_VARBINARY(self, type_, **kw):
        return "VARBINARY"

    def visit_large_binary(self, type_, **kw):
        return "VARBINARY"

    def visit_BLOB(self, type_, **kw):
        return "VARBINARY"

    def visit_text(self, type_, **kw):
        return "VARCHAR"

    def visit_TEXT(self, type_, **kw):
        return "VARCHAR"

    def visit_string(self, type_, **kw):
        return "VARCHAR"

    def visit_VARCHAR(self, type_, **kw):
        return "VARCHAR"

    def visit_unicode(self, type_, **kw):
        return "VARCHAR"

    def visit_unicode_text(self, type_, **kw):
        return "VARCHAR"

    def visit_datetime(self, type_, **kw):
        return "TIMESTAMP"

    def visit_DATETIME(self, type_, **kw):
        return "TIMESTAMP"

    def visit_float(self, type_, **kw):
        # SQLAlchemy's generic Float (e.g. a CAST(x AS Float)) is a double in practice.
        return "DOUBLE"

    def visit_ARRAY(self, type_, **kw):
        return self.process(type_.item_type, **kw) + "[]"


def arrow_to_sqla(t: pa.DataType) -> sqltypes.TypeEngine:
    """The SQLAlchemy type of a column of Arrow type `t`."""
    if pa.types.is_dictionary(t):
        return arrow_to_sqla(t.value_type)
    if pa.types.is_boolean(t):
        return sqltypes.BOOLEAN()
    if pa.types.is_int8(t):
        return TINYINT()
    if pa.types.is_int16(t):
        return sqltypes.SMALLINT()
    if pa.types.is_int32(t):
        return sqltypes.INTEGER()
    if pa.types.is_int64(t):
        return sqltypes.BIGINT()
    if pa.types.is_unsigned_integer(t):
        return UNSIGNED(t.bit_width)
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return sqltypes.REAL()
    if pa.types.is_float64(t):
        return DOUBLE()
    if pa.types.is_decimal(t):
        return sqltypes.DECIMAL(precision=t.precision, scale=t.scale)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or _is_view(t, "string"):
        return sqltypes.VARCHAR()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or _is_view(t, "binary"):
        return VARBINARY()
    if pa.types.is_timestamp(t):
        return sqltypes.TIMESTAMP(timezone=t.tz is not None)
    if pa.types.is_date(t):
        return sqltypes.DATE()
    if pa.types.is_time(t):
        return sqltypes.TIME()
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return sqltypes.Interval()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return sqltypes.ARRAY(arrow_to_sqla(t.value_type))
    return sqltypes.NullType()


def _is_view(t: pa.DataType, kind: str) -> bool:
    check = getattr(pa.types, f"is_{kind}_view", None)
    return bool(check and check(t))


def arrow_type_name(t: pa.DataType) -> str:
    """The SQL name of Arrow type `t` as segdb's SQL spells it (for result descriptions)."""
    sqla = arrow_to_sqla(t)
    if isinstance(sqla, sqltypes.NullType):
        return str(t).upper()
    return sqla.compile(dialect=_dialect())


@functools.lru_cache(maxsize=1)
def _dialect() -> "SegdbDialect":
    return SegdbDialect()


# --- dialect ------------------------------------------------------------------------------------


class SegdbDialect(default.DefaultDialect):
    name = "segdb"
    driver = "adbc"

    paramstyle = "qmark"
    positional = True
    default_paramstyle = "qmark"
    supports_statement_cache = True
    supports_native_boolean = True
    supports_native_decimal = True
    supports_alter = False
    supports_sequences = False
    supports_default_values = False
    supports_empty_insert = False
    supports_multivalues_insert = True
    supports_sane_rowcount = False
    supports_sane_multi_rowcount = False
    supports_comments = True
    inline_comments = False
    postfetch_lastrowid = False
    returns_unicode_strings = sqltypes.String.RETURNS_UNICODE
    description_encoding = None
    default_schema_name = "public"

    type_compiler = SegdbTypeCompiler

    @classmethod
    def dbapi(cls):  # SQLAlchemy 1.4
        from segdb_sqlalchemy import dbapi

        return dbapi

    @classmethod
    def import_dbapi(cls):  # SQLAlchemy 2.x
        return cls.dbapi()

    # --- connecting ---------------------------------------------------------------------------

    def create_connect_args(self, url):
        query = dict(url.query)
        opts: Dict[str, str] = {}
        settings: Dict[str, str] = {}

        def flag(name: str) -> bool:
            raw = str(query.pop(name, "false")).strip().lower()
            if raw in _TRUE:
                return True
            if raw in _FALSE:
                return False
            raise exc.ArgumentError(f"segdb URI: {name}={raw!r} is not true or false")

        tls = flag("tls")
        if flag("tls_skip_verify"):
            opts["adbc.flight.sql.client_option.tls_skip_verify"] = "true"
        if "tls_root_certs" in query:
            with open(query.pop("tls_root_certs"), encoding="utf-8") as f:
                opts["adbc.flight.sql.client_option.tls_root_certs"] = f.read()
        if "token" in query:
            opts["adbc.flight.sql.authorization_header"] = "Bearer " + query.pop("token")
        if "as_of" in query:
            settings["segdb.as_of"] = query.pop("as_of")
        for key in [k for k in query if k.startswith("segdb.")]:
            if not _SETTING_NAME.match(key):
                raise exc.ArgumentError(f"segdb URI: {key!r} is not a setting name")
            settings[key] = query.pop(key)
        if query:
            raise exc.ArgumentError(
                "segdb URI: unknown parameter(s) "
                + ", ".join(sorted(query))
                + " (known: tls, tls_skip_verify, tls_root_certs, token, as_of, segdb.NAME)"
            )
        if url.database not in (None, "", "segdb"):
            raise exc.ArgumentError(
                f"segdb URI: the path names the catalog, which is 'segdb' (got {url.database!r})"
            )
        if url.username is not None:
            opts["username"] = url.username
            opts["password"] = url.password or ""

        scheme = "grpc+tls" if tls else "grpc"
        host = url.host or "localhost"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        uri = f"{scheme}://{host}:{url.port or DEFAULT_PORT}"
        return [uri], {"db_kwargs": opts, "settings": settings}

    def do_commit(self, dbapi_connection):
        # segdb has no transactions: every statement commits on its own.
        pass

    def do_rollback(self, dbapi_connection):
        pass

    def _get_default_schema_name(self, connection):
        return "public"

    def _get_server_version_info(self, connection):
        try:
            info = _adbc(connection).adbc_get_info()
        except Exception:  # pragma: no cover - old servers
            return None
        version = str(info.get("vendor_version") or "")
        nums = re.findall(r"\d+", version)
        return tuple(int(n) for n in nums[:3]) or None

    def get_isolation_level(self, dbapi_connection):
        return "AUTOCOMMIT"

    def set_isolation_level(self, dbapi_connection, level):
        if level != "AUTOCOMMIT":
            raise exc.ArgumentError("segdb supports only AUTOCOMMIT")

    def get_default_isolation_level(self, dbapi_conn):
        return "AUTOCOMMIT"

    def is_disconnect(self, e, connection, cursor):
        # An expired bearer token (after the server's token_ttl_secs) or a server that went
        # away: the pool drops the connection and the next checkout handshakes again.
        text = str(e).lower()
        return "unauthenticated" in text or "unavailable" in text

    # --- reflection ---------------------------------------------------------------------------

    def _objects(self, connection, depth, schema=None, table=None, types=None):
        reader = _adbc(connection).adbc_get_objects(
            depth=depth,
            db_schema_filter=_like_exact(schema),
            table_name_filter=_like_exact(table),
            table_types_filter=types,
        )
        out = []
        for cat in reader.read_all().to_pylist():
            for s in cat["catalog_db_schemas"] or []:
                if schema is not None and s["db_schema_name"] != schema:
                    continue
                out.append(s)
        return out

    @reflection.cache
    def get_schema_names(self, connection, **kw):
        return sorted(s["db_schema_name"] for s in self._objects(connection, "db_schemas"))

    def _relation_names(self, connection, schema, types):
        schema = schema or self.default_schema_name
        names = []
        for s in self._objects(connection, "tables", schema=schema, types=types):
            names.extend(t["table_name"] for t in s["db_schema_tables"] or [])
        return sorted(set(names))

    @reflection.cache
    def get_table_names(self, connection, schema=None, **kw):
        return self._relation_names(connection, schema, TABLE_TYPES)

    @reflection.cache
    def get_view_names(self, connection, schema=None, **kw):
        return self._relation_names(connection, schema, VIEW_TYPES)

    def get_temp_table_names(self, connection, schema=None, **kw):
        return self._relation_names(connection, schema, ["LOCAL TEMPORARY"])

    def has_table(self, connection, table_name, schema=None, **kw):
        schema = schema or self.default_schema_name
        for s in self._objects(connection, "tables", schema=schema, table=table_name):
            if any(t["table_name"] == table_name for t in s["db_schema_tables"] or []):
                return True
        return False

    @reflection.cache
    def get_columns(self, connection, table_name, schema=None, **kw):
        schema = schema or self.default_schema_name
        if not self.has_table(connection, table_name, schema):
            raise exc.NoSuchTableError(f"{schema}.{table_name}")
        arrow_schema = _adbc(connection).adbc_get_table_schema(
            table_name, db_schema_filter=schema
        )
        return [
            {
                "name": f.name,
                "type": arrow_to_sqla(f.type),
                "nullable": f.nullable,
                "default": None,
                "autoincrement": False,
                "comment": None,
            }
            for f in arrow_schema
        ]

    @reflection.cache
    def get_table_comment(self, connection, table_name, schema=None, **kw):
        if (schema or self.default_schema_name) != "segments":
            return {"text": None}
        cur = _adbc(connection).cursor()
        try:
            cur.execute("SHOW SEGMENTS")
            names = [d[0] for d in cur.description]
            for row in cur.fetchall():
                seg = dict(zip(names, row))
                if seg.get("name") == table_name:
                    text = f"segment: {seg.get('definition')}"
                    if seg.get("purposes"):
                        text += f" (for purpose {seg['purposes']})"
                    if seg.get("comment"):
                        text = f"{seg['comment']} — {text}"
                    return {"text": text}
        finally:
            cur.close()
        return {"text": None}

    def get_pk_constraint(self, connection, table_name, schema=None, **kw):
        return {"constrained_columns": [], "name": None}

    def get_foreign_keys(self, connection, table_name, schema=None, **kw):
        return []

    def get_indexes(self, connection, table_name, schema=None, **kw):
        return []

    def get_unique_constraints(self, connection, table_name, schema=None, **kw):
        return []

    def get_check_constraints(self, connection, table_name, schema=None, **kw):
        return []

    def get_view_definition(self, connection, view_name, schema=None, **kw):
        return None


def _adbc(connection):
    """The ADBC connection under a SQLAlchemy Connection."""
    fairy = connection.connection
    return getattr(fairy, "dbapi_connection", None) or getattr(fairy, "connection", fairy)


def _like_exact(name: Optional[str]) -> Optional[str]:
    """A Flight SQL pattern that matches `name` (None: any).

    Flight SQL patterns define no escape, so `_` in a name also matches any one character;
    callers filter the answer by exact name.
    """
    return name


__all__ = ["SegdbDialect", "arrow_to_sqla", "arrow_type_name", "DOUBLE", "UNSIGNED"]
