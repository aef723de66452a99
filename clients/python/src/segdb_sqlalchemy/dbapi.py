"""DB-API 2.0 module for segdb: the ADBC Flight SQL driver, plus per-connection settings.

Every `connect()` performs its own Flight SQL handshake, so each connection holds its own bearer
token and therefore its own segdb session (`SET segdb.as_of` on one connection never leaks into
another). Results come back as Arrow and are converted by ADBC to plain Python values (int, float,
str, bool, Decimal, date, timezone-aware datetime), and `cursor.description` carries the Arrow type
of every column.
"""

from typing import Any, Dict, Mapping, Optional

import adbc_driver_flightsql.dbapi as _flightsql
from adbc_driver_manager.dbapi import (  # noqa: F401  DB-API names SQLAlchemy looks up
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)


__all__ = [
    "apilevel", "threadsafety", "paramstyle", "connect", "Warning", "Error", "InterfaceError",
    "DatabaseError", "DataError", "OperationalError", "IntegrityError", "InternalError",
    "ProgrammingError", "NotSupportedError",
]

apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"


def quote_literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def connect(
    uri: str,
    db_kwargs: Optional[Dict[str, str]] = None,
    settings: Optional[Mapping[str, str]] = None,
    **kwargs: Any,
):
    """Open one Flight SQL connection (one handshake, one segdb session).

    `uri` is `grpc://host:port` or `grpc+tls://host:port`; `db_kwargs` are ADBC database
    options (`username`, `password`, `adbc.flight.sql.*`); `settings` are run as
    `SET name = 'value'` right after connecting (e.g. `{"segdb.as_of": "2026-02-01"}`).
    """
    conn = _flightsql.connect(uri, db_kwargs=dict(db_kwargs or {}), autocommit=True, **kwargs)
    if settings:
        try:
            cur = conn.cursor()
            try:
                for name, value in settings.items():
                    cur.execute(f"SET {name} = {quote_literal(value)}")
            finally:
                cur.close()
        except Exception:
            conn.close()
            raise
    return conn
