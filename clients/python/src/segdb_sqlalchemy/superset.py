"""Apache Superset engine spec for segdb (registered as entry point `superset.db_engine_specs`).

Superset loads this module itself; nothing needs to be imported in `superset_config.py`.
It gives segdb a name and a connection form in "Connect a database", time grains for charts
(DataFusion's `date_trunc`), timestamp literals for filters, column types from Arrow, readable
connection errors, and segdb's functions for SQL Lab's autocomplete.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, TYPE_CHECKING

import pyarrow as pa
from flask_babel import gettext as __
from marshmallow import fields, Schema
from marshmallow.validate import Range
from sqlalchemy import types
from sqlalchemy.engine.url import URL
from sqlglot.dialects.dialect import Dialect as SqlglotDialect
from sqlglot.tokens import Tokenizer as SqlglotTokenizer, TokenType

from superset.constants import TimeGrain
from superset.databases.utils import make_url_safe
from superset.db_engine_specs.base import BaseEngineSpec
from superset.errors import ErrorLevel, SupersetError, SupersetErrorType
from superset.sql.parse import SQLGLOT_DIALECTS

from segdb_sqlalchemy.dialect import DEFAULT_PORT, arrow_type_name

if TYPE_CHECKING:
    from superset.models.core import Database

# segdb's own functions (information_schema.routines lists the scalar and aggregate ones;
# the table functions are added here so autocomplete offers them too).
SEGDB_FUNCTIONS = [
    "segment_members", "segment_size", "segment_overlap", "in_segment", "segment_bitmap",
    "segment_changes", "segment_holdout", "rb_build_agg", "rb_or_agg", "rb_and_agg", "rb_and",
    "rb_or", "rb_andnot", "rb_xor", "rb_cardinality", "rb_contains", "rb_to_array",
    "pseudonymize", "hash_email", "hash_phone",
]


class Segdb(SqlglotDialect):
    """How Superset's SQL parser (sqlglot) reads and re-writes segdb SQL.

    Superset parses every SQL Lab statement and executes sqlglot's re-rendering of it. sqlglot's
    generic dialect upper-cases function names, which DataFusion accepts for scalar functions
    but not for table functions: `FROM SEGMENT_MEMBERS('x')` is "table function not found".
    This dialect is the generic one with function names kept as written, and with segdb's own
    statements that sqlglot cannot parse (`FORGET USER 'x'`, `DESCRIBE SEGMENT s`) passed
    through verbatim, as it already does for `CREATE SEGMENT`, `SHOW SEGMENTS` or `VACUUM`.
    """

    NORMALIZE_FUNCTIONS = False

    class Tokenizer(SqlglotTokenizer):
        KEYWORDS = {
            **SqlglotTokenizer.KEYWORDS,
            "FORGET": TokenType.COMMAND,
            "DESCRIBE": TokenType.COMMAND,
        }


# Superset chooses the sqlglot dialect by engine name from this table and offers no entry point
# for it; `SQLGLOT_DIALECTS_EXTENSIONS` in superset_config.py is applied before this module is
# loaded, so an entry a user configured there wins.
SQLGLOT_DIALECTS.setdefault("segdb", Segdb)

NOT_TLS_REGEX = re.compile(r"first record does not look like a TLS handshake")
UNTRUSTED_REGEX = re.compile(r"x509|failed to verify certificate")
EXPECTS_TLS_REGEX = re.compile(r"error reading server preface")
UNAUTHENTICATED_REGEX = re.compile(r"UNAUTHENTICATED")
UNAVAILABLE_REGEX = re.compile(r"unavailable|connection refused", re.IGNORECASE)
PERMISSION_DENIED_REGEX = re.compile(r"PERMISSION_DENIED|UNAUTHORIZED.*may not")
TABLE_NOT_FOUND_REGEX = re.compile(r"table '(?P<table>[^']+)' not found")


class SegdbParametersSchema(Schema):
    username = fields.String(
        required=True, allow_none=True, metadata={"description": __("User name")}
    )
    password = fields.String(allow_none=True, metadata={"description": __("Password")})
    host = fields.String(
        required=True, metadata={"description": __("Host of `segdb serve`")}
    )
    port = fields.Integer(
        required=True,
        metadata={"description": __("Flight SQL port")},
        validate=Range(min=0, max=2**16, max_inclusive=False),
    )
    query = fields.Dict(
        keys=fields.Str(),
        values=fields.Raw(),
        metadata={"description": __("Additional parameters, e.g. as_of")},
    )
    encryption = fields.Boolean(
        required=False,
        metadata={"description": __("TLS (the server runs with --tls-cert/--tls-key)")},
    )


class SegdbEngineSpec(BaseEngineSpec):
    """segdb over Arrow Flight SQL (`segdb://user:password@host:port`)."""

    engine = "segdb"
    engine_name = "segdb"
    default_driver = "adbc"
    sqlalchemy_uri_placeholder = "segdb://user:password@host:50051"

    parameters_schema = SegdbParametersSchema()
    encryption_parameters = {"tls": "true"}

    supports_file_upload = False  # data comes in through ingest, never INSERT
    supports_dynamic_schema = False
    supports_catalog = False
    allows_alias_to_source_column = True

    metadata = {
        "description": (
            "segdb is an embedded analytical database for audience segments on Apache "
            "DataFusion and Delta Lake, served over Arrow Flight SQL by `segdb serve`."
        ),
        "pypi_packages": ["segdb-sqlalchemy"],
        "connection_string": "segdb://{username}:{password}@{host}:{port}",
    }

    _time_grain_expressions = {
        None: "{col}",
        TimeGrain.SECOND: "date_trunc('second', {col})",
        TimeGrain.MINUTE: "date_trunc('minute', {col})",
        TimeGrain.FIVE_MINUTES: "date_bin(INTERVAL '5 minutes', {col}, TIMESTAMP '1970-01-01')",
        TimeGrain.TEN_MINUTES: "date_bin(INTERVAL '10 minutes', {col}, TIMESTAMP '1970-01-01')",
        TimeGrain.FIFTEEN_MINUTES: (
            "date_bin(INTERVAL '15 minutes', {col}, TIMESTAMP '1970-01-01')"
        ),
        TimeGrain.THIRTY_MINUTES: (
            "date_bin(INTERVAL '30 minutes', {col}, TIMESTAMP '1970-01-01')"
        ),
        TimeGrain.HOUR: "date_trunc('hour', {col})",
        TimeGrain.SIX_HOURS: "date_bin(INTERVAL '6 hours', {col}, TIMESTAMP '1970-01-01')",
        TimeGrain.DAY: "date_trunc('day', {col})",
        TimeGrain.WEEK: "date_trunc('week', {col})",
        TimeGrain.WEEK_STARTING_MONDAY: "date_trunc('week', {col})",
        TimeGrain.WEEK_STARTING_SUNDAY: (
            "date_trunc('week', {col} + INTERVAL '1 day') - INTERVAL '1 day'"
        ),
        TimeGrain.MONTH: "date_trunc('month', {col})",
        TimeGrain.QUARTER: "date_trunc('quarter', {col})",
        TimeGrain.YEAR: "date_trunc('year', {col})",
    }

    # Checked in this order; the first match names the error.
    custom_errors = {
        NOT_TLS_REGEX: (
            __("%(hostname)s:%(port)s does not serve TLS: drop tls=true."),
            SupersetErrorType.CONNECTION_ACCESS_DENIED_ERROR,
            {"invalid": ["encryption"]},
        ),
        UNTRUSTED_REGEX: (
            __(
                "The TLS certificate of %(hostname)s is not trusted: add "
                "tls_root_certs=/path/to/ca.pem (or tls_skip_verify=true)."
            ),
            SupersetErrorType.CONNECTION_ACCESS_DENIED_ERROR,
            {"invalid": ["encryption"]},
        ),
        EXPECTS_TLS_REGEX: (
            __("%(hostname)s:%(port)s closed the connection: if it serves TLS, add tls=true."),
            SupersetErrorType.CONNECTION_ACCESS_DENIED_ERROR,
            {"invalid": ["encryption"]},
        ),
        UNAUTHENTICATED_REGEX: (
            __('Wrong user name or password for "%(username)s" (or the token expired).'),
            SupersetErrorType.CONNECTION_ACCESS_DENIED_ERROR,
            {"invalid": ["username", "password"]},
        ),
        UNAVAILABLE_REGEX: (
            __('No segdb server answers at %(hostname)s:%(port)s.'),
            SupersetErrorType.CONNECTION_HOST_DOWN_ERROR,
            {"invalid": ["host", "port"]},
        ),
        PERMISSION_DENIED_REGEX: (
            __("The segdb role of this user may not run that statement."),
            SupersetErrorType.DATABASE_SECURITY_ACCESS_ERROR,
            {},
        ),
        TABLE_NOT_FOUND_REGEX: (
            __('Table "%(table)s" does not exist.'),
            SupersetErrorType.TABLE_DOES_NOT_EXIST_ERROR,
            {},
        ),
    }

    @classmethod
    def epoch_to_dttm(cls) -> str:
        return "to_timestamp_seconds({col})"

    @classmethod
    def epoch_ms_to_dttm(cls) -> str:
        return "to_timestamp_millis({col})"

    @classmethod
    def convert_dttm(
        cls, target_type: str, dttm: datetime, db_extra: dict[str, Any] | None = None
    ) -> str | None:
        sqla_type = cls.get_sqla_column_type(target_type)
        if isinstance(sqla_type, types.Date) and not isinstance(sqla_type, types.DateTime):
            return f"CAST('{dttm.date().isoformat()}' AS DATE)"
        if isinstance(sqla_type, (types.DateTime, types.TIMESTAMP)):
            value = dttm.isoformat(sep=" ", timespec="microseconds")
            return f"CAST('{value}' AS TIMESTAMP)"
        return None

    @classmethod
    def get_datatype(cls, type_code: Any) -> str | None:
        # ADBC's cursor.description carries the Arrow type of each column.
        if isinstance(type_code, pa.DataType):
            return arrow_type_name(type_code)
        return super().get_datatype(type_code)

    @classmethod
    def get_function_names(cls, database: Database) -> list[str]:
        names = set(SEGDB_FUNCTIONS)
        try:
            with database.get_raw_connection() as conn:
                cur = conn.cursor()
                cur.execute(
                    "SELECT DISTINCT routine_name FROM information_schema.routines"
                )
                names.update(row[0] for row in cur.fetchall())
        except Exception:  # pylint: disable=broad-except
            pass
        return sorted(names)

    # --- the connection form (host, port, user, password, TLS) ----------------------------

    @classmethod
    def build_sqlalchemy_uri(
        cls,
        parameters: dict[str, Any],
        encrypted_extra: dict[str, Any] | None = None,
    ) -> str:
        query = dict(parameters.get("query") or {})
        if parameters.get("encryption"):
            query.update(cls.encryption_parameters)
        return str(
            URL.create(
                cls.engine,
                username=parameters.get("username"),
                password=parameters.get("password"),
                host=parameters["host"],
                port=parameters.get("port") or DEFAULT_PORT,
                query=query,
            )
        )

    @classmethod
    def get_parameters_from_uri(
        cls, uri: str, encrypted_extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        url = make_url_safe(uri)
        query = dict(url.query)
        encryption = str(query.pop("tls", "false")).lower() in {"1", "true", "yes", "on"}
        return {
            "username": url.username,
            "password": url.password,
            "host": url.host,
            "port": url.port or DEFAULT_PORT,
            "query": query,
            "encryption": encryption,
        }

    @classmethod
    def validate_parameters(cls, properties: dict[str, Any]) -> list[SupersetError]:
        errors: list[SupersetError] = []
        parameters = properties.get("parameters", {})
        present = {key for key in parameters if parameters.get(key, ())}
        if missing := sorted({"host", "port", "username"} - present):
            errors.append(
                SupersetError(
                    message=f"One or more parameters are missing: {', '.join(missing)}",
                    error_type=SupersetErrorType.CONNECTION_MISSING_PARAMETERS_ERROR,
                    level=ErrorLevel.WARNING,
                    extra={"missing": missing},
                )
            )
        port = parameters.get("port")
        if port not in (None, ""):
            try:
                ok = 0 <= int(port) < 2**16
            except (TypeError, ValueError):
                ok = False
            if not ok:
                errors.append(
                    SupersetError(
                        message="The port must be an integer between 0 and 65535.",
                        error_type=SupersetErrorType.CONNECTION_INVALID_PORT_ERROR,
                        level=ErrorLevel.ERROR,
                        extra={"invalid": ["port"]},
                    )
                )
        return errors

    @classmethod
    def parameters_json_schema(cls) -> Any:
        from apispec import APISpec
        from apispec.ext.marshmallow import MarshmallowPlugin

        spec = APISpec(
            title="Database Parameters",
            version="1.0.0",
            openapi_version="3.0.2",
            plugins=[MarshmallowPlugin()],
        )
        spec.components.schema(cls.__name__, schema=cls.parameters_schema)
        return spec.to_dict()["components"]["schemas"][cls.__name__]
