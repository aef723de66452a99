"""segdb in-process: open a database, run SQL and segment statements, get Arrow back.

    import segdb
    db = segdb.connect("./segdb-data", keyring="./segdb.keyring")
    db.sql("SELECT segment_size('cart_abandoners')").fetchall()
    db.sql("SELECT * FROM segment_history('lapsed_buyers')").df()

The same statements as the CLI, segment language included, in one process: no server. The
module is also a DB-API 2.0 driver (``connect(...).cursor()``, ``paramstyle = 'qmark'``).
Errors are raised as the DB-API class of their kind: invalid input, an unknown name and a refusal
are ``ProgrammingError``; storage that cannot be reached, a lost commit and a timeout are
``OperationalError``; a bug is ``InternalError``.
"""

import datetime as _dt
import decimal as _decimal
import html as _html
import os as _os

__all__ = [
    "connect",
    "Connection",
    "Cursor",
    "Result",
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "apilevel",
    "threadsafety",
    "paramstyle",
]

apilevel = "2.0"
# Threads may share the module; a connection may be shared too (statements on one connection
# run one at a time inside the engine's session), but DB-API's promise is kept at 1.
threadsafety = 1
paramstyle = "qmark"


class Warning(Exception):  # noqa: A001 - the DB-API name
    """A warning (DB-API)."""


class Error(Exception):
    """Every segdb error."""


class InterfaceError(Error):
    """The Python interface was used wrongly."""


class DatabaseError(Error):
    """An error of the database."""


class DataError(DatabaseError):
    """A value could not be processed."""


class OperationalError(DatabaseError):
    """Storage could not be reached, a commit was lost to another writer, a statement timed out."""


class IntegrityError(DatabaseError):
    """Not raised by segdb (no constraints); kept for DB-API."""


class InternalError(DatabaseError):
    """A bug in segdb."""


class ProgrammingError(DatabaseError):
    """Invalid input, an unknown table or segment, or a statement the role may not run."""


class NotSupportedError(DatabaseError):
    """Something segdb does not do (e.g. a rollback: every statement commits)."""


from . import _segdb  # noqa: E402  (the native module raises the classes above)

__version__ = _segdb.__version__


def _param(v):
    """A Python value as the native layer binds it (dates and decimals travel as text and are
    cast to the type the statement expects)."""
    if isinstance(v, _dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return v.isoformat() + "Z"
    if isinstance(v, _dt.date):
        return v.isoformat()
    if isinstance(v, _decimal.Decimal):
        return str(v)
    return v


def _params(parameters):
    if parameters is None:
        return None
    if isinstance(parameters, (str, bytes)) or not hasattr(parameters, "__iter__"):
        raise ProgrammingError("parameters are a sequence (qmark style: one value per ?)")
    if isinstance(parameters, dict):
        raise ProgrammingError("parameters are a sequence (qmark style: one value per ?), not a mapping")
    return [_param(v) for v in parameters]


def connect(database=None, keyring=None, create=True):
    """Open the segdb database at ``database`` (a path, ``file://`` or ``s3://bucket/prefix``;
    default ``$SEGDB_DATA`` or ``./segdb-data``) with the keyring file ``keyring`` (default
    ``$SEGDB_KEYRING`` or ``./segdb.keyring``). As the Rust library (and ``duckdb.connect``) does,
    a place that holds no database gets a new, empty one (and a new keyring when there is none);
    ``create=False`` refuses it instead, as the CLI's commands do."""
    if database is None:
        database = _os.environ.get("SEGDB_DATA", "./segdb-data")
    if keyring is None:
        keyring = _os.environ.get("SEGDB_KEYRING", "./segdb.keyring")
    try:
        native = _segdb.Database(_os.fspath(database), _os.fspath(keyring), bool(create))
    except ProgrammingError as e:
        if not create and "is not a segdb database" in str(e):
            raise ProgrammingError(
                "{} (from Python: segdb.connect(...) without create=False creates one)".format(e)
            ) from None
        raise
    return Connection(native)


class Result:
    """The result of one statement. ``.arrow()``, ``.df()``, ``.pl()``, ``.fetchall()``; it is
    also an Arrow stream (``pyarrow.table(result)``, ``polars.from_arrow(result)``). A statement
    with no rows gives an empty result of its result schema."""

    def __init__(self, native):
        self._r = native
        self._table = None

    def __arrow_c_stream__(self, requested_schema=None):
        return self._r.__arrow_c_stream__(requested_schema)

    def arrow(self):
        """The result as a ``pyarrow.Table`` (through the Arrow C stream interface)."""
        if self._table is None:
            import pyarrow as pa

            if hasattr(pa.RecordBatchReader, "from_stream"):
                self._table = pa.RecordBatchReader.from_stream(self._r).read_all()
            else:
                self._table = pa.table(self._r)
        return self._table

    def df(self):
        """The result as a pandas DataFrame."""
        return self.arrow().to_pandas()

    def pl(self):
        """The result as a polars DataFrame."""
        import polars as pl

        return pl.from_arrow(self.arrow())

    @staticmethod
    def fetchall_of(t):
        """The rows of a pyarrow Table as tuples (by column: names may repeat)."""
        if t.num_columns == 0:
            return []
        return list(zip(*(c.to_pylist() for c in t.columns)))

    def fetchall(self):
        """Every row as a tuple."""
        return Result.fetchall_of(self.arrow())

    def fetchone(self):
        """The first row as a tuple, or None."""
        rows = self.fetchall()
        return rows[0] if rows else None

    @property
    def columns(self):
        return list(self._r.column_names)

    @property
    def types(self):
        """Each column's Arrow type, as text."""
        return list(self._r.column_types)

    def __len__(self):
        return self._r.num_rows

    def __repr__(self):
        return self.arrow().to_string(preview_cols=20)

    def _repr_html_(self, limit=20):
        t = self.arrow()
        head = "".join(
            "<th>{}<br><small>{}</small></th>".format(_html.escape(n), _html.escape(ty))
            for n, ty in zip(self.columns, self.types)
        )
        body = []
        # By column, not by dict: two columns may share a name.
        head_rows = Result.fetchall_of(t.slice(0, limit))
        for row in head_rows:
            body.append(
                "<tr>{}</tr>".format(
                    "".join(
                        "<td>{}</td>".format("NULL" if v is None else _html.escape(str(v)))
                        for v in row
                    )
                )
            )
        more = ""
        if t.num_rows > limit:
            more = "<p>{} of {} rows</p>".format(limit, t.num_rows)
        return "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>{}".format(
            head, "".join(body), more
        )


class Connection:
    """An open database (DB-API connection). Every statement commits as it runs."""

    def __init__(self, native):
        self._db = native

    def sql(self, query, params=None):
        """Run ``query`` (several ``;``-separated statements: the last one's result) and return
        its :class:`Result`; ``params`` binds ``?`` placeholders of a single statement."""
        return Result(self._db.sql(query, _params(params)))

    def execute(self, operation, parameters=None):
        """Run a statement on a new cursor and return the cursor (as sqlite3 does)."""
        return self.cursor().execute(operation, parameters)

    def cursor(self):
        if self._db.closed:
            raise ProgrammingError("the database is closed")
        return Cursor(self)

    def ingest(self, kind, files, merge=False, strict=False):
        """Load files (paths or URLs; CSV, Parquet or NDJSON) into ``events``, ``profiles``,
        ``consent`` or ``links``, as ``segdb ingest`` does: ids pseudonymised, rejected rows
        reported. Returns a dict with ``rows_loaded``, ``rejected`` ((file, row, reason) tuples)
        and more."""
        if isinstance(files, (str, bytes, _os.PathLike)):
            files = [files]
        return self._db.ingest(kind, [_os.fspath(f) for f in files], merge, strict)

    def commit(self):
        """Nothing to do: every statement commits as it runs."""
        if self._db.closed:
            raise ProgrammingError("the database is closed")

    def rollback(self):
        raise NotSupportedError("segdb has no transactions to roll back: every statement commits as it runs")

    def close(self):
        self._db.close()

    @property
    def closed(self):
        return self._db.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _TypeCode:
    """DB-API type objects: equal to the Arrow type names of their group."""

    def __init__(self, *prefixes):
        self._prefixes = prefixes

    def __eq__(self, other):
        return isinstance(other, str) and other.startswith(self._prefixes)

    def __hash__(self):
        return hash(self._prefixes)


STRING = _TypeCode("Utf8", "LargeUtf8")
BINARY = _TypeCode("Binary", "LargeBinary", "FixedSizeBinary")
NUMBER = _TypeCode("Int", "UInt", "Float", "Decimal")
DATETIME = _TypeCode("Timestamp", "Date", "Time")
ROWID = _TypeCode("\0never")


class Cursor:
    """A DB-API cursor: ``execute``, ``fetchone``/``fetchmany``/``fetchall``, ``description``."""

    arraysize = 1

    def __init__(self, connection):
        self.connection = connection
        self._rows = None
        self._pos = 0
        self._result = None
        self.description = None
        self.rowcount = -1
        self._closed = False

    def execute(self, operation, parameters=None):
        if self._closed:
            raise ProgrammingError("the cursor is closed")
        r = self.connection.sql(operation, parameters)
        self._result = r
        self._rows = None
        self._pos = 0
        self.description = [
            (name, ty, None, None, None, None, None) for name, ty in zip(r.columns, r.types)
        ] or None
        self.rowcount = len(r)
        return self

    def executemany(self, operation, seq_of_parameters):
        for p in seq_of_parameters:
            self.execute(operation, p)
        return self

    def _all(self):
        if self._result is None:
            raise ProgrammingError("no statement has been executed")
        if self._rows is None:
            self._rows = self._result.fetchall()
        return self._rows

    def fetchone(self):
        rows = self._all()
        if self._pos >= len(rows):
            return None
        self._pos += 1
        return rows[self._pos - 1]

    def fetchmany(self, size=None):
        rows = self._all()
        n = self.arraysize if size is None else size
        out = rows[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def fetchall(self):
        rows = self._all()
        out = rows[self._pos :]
        self._pos = len(rows)
        return out

    def arrow(self):
        """The last result as a pyarrow Table."""
        if self._result is None:
            raise ProgrammingError("no statement has been executed")
        return self._result.arrow()

    def df(self):
        return self.arrow().to_pandas()

    def setinputsizes(self, sizes):
        pass

    def setoutputsize(self, size, column=None):
        pass

    def close(self):
        self._closed = True
        self._rows = None
        self._result = None

    def __iter__(self):
        while True:
            row = self.fetchone()
            if row is None:
                return
            yield row
