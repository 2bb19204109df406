"""Bulk writes: many rows, one statement, on SQLite and PostgreSQL; and the collector kept off long-lived heap during a batch."""

from __future__ import annotations

import contextlib
import gc
import re
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, cast

import sqlalchemy as sa
from psycopg import postgres, pq
from psycopg.adapt import Dumper
from sqlalchemy.dialects import postgresql

from ..extensions import db, json_dumps
from ..models import UTCDateTime

# # A sync writes a row per incident and a finding per applicable check. SQLAlchemy's per-row
# parameter processing cost more than the database itself (31 µs per finding on SQLite), so
# the sync's writes (upserts included) render their statement once and hand plain tuples to
# the driver. Only JSON and UTC-time columns need converting; both are done as the column types do.


class JsonText(str):
    """A value already encoded as JSON (constants written on many rows are encoded once)."""


def json_text(value: Any) -> str | None:
    if value is None or isinstance(value, JsonText):
        return value
    return json_dumps(value)


def _converter(column: sa.Column[Any], dialect: str) -> Callable[[Any], Any] | None:
    if isinstance(column.type, sa.JSON):
        return json_text
    if isinstance(column.type, UTCDateTime):
        if dialect == "sqlite":  # SQLAlchemy's SQLite storage format (naive UTC), so comparisons in SQL still hold
            return _sqlite_time_converter()
        return lambda v: None if v is None else _as_utc(v)
    return None


def _sqlite_time_converter() -> Callable[[Any], str | None]:
    last: list[Any] = [None, None]  # many rows of one write share a time (now): convert it once

    def convert(value: Any) -> str | None:
        if value is None:
            return None
        if value is not last[0]:
            last[0], last[1] = value, _as_utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")
        return cast(str, last[1])
    return convert


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def encode_rows(table: sa.Table, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], dialect: str) -> list[tuple[Any, ...]]:
    """Rows as the driver's parameter tuples for ``columns`` (JSON encoded, UTC times in the dialect's form).

    Needs no database connection: a sync's worker process encodes its pages (see ``plugin.services.sync``).
    """
    convert = [(c, _converter(table.c[c], dialect)) for c in columns]
    return [tuple(row.get(c) if fn is None else fn(row.get(c)) for c, fn in convert) for row in rows]


def column_encoder(table: sa.Table, column: str, dialect: str) -> Callable[[Any], Any]:
    """How one column's values go to the driver (see ``encode_rows``)."""
    return _converter(table.c[column], dialect) or _identity


def column_converter(table: sa.Table, column: str, dialect: str) -> Callable[[Any], Any] | None:
    """As ``column_encoder``, but None for a column whose values go to the driver as they are."""
    return _converter(table.c[column], dialect)


def _identity(value: Any) -> Any:
    return value


def insert_encoded(table: sa.Table, columns: Sequence[str], params: Sequence[tuple[Any, ...]]) -> None:
    """INSERT rows already encoded for the driver (``encode_rows``, ``column_encoder``).

    SQLite: one executemany. PostgreSQL: COPY, which costs the server a third of as many
    single-row INSERTs (findings are a few rows per incident).
    """
    if not params:
        return
    if db.engine.dialect.name != "postgresql":
        db.session.connection().exec_driver_sql(insert_sql(table, columns), params)
        return
    copy_rows(table, columns, params)


def copy_rows(table: sa.Table, columns: Sequence[str], params: Sequence[tuple[Any, ...]], *, binary: bool = False,
              into: str | None = None) -> None:
    """PostgreSQL: COPY rows already encoded for the driver into ``table``, in the session's transaction.

    ``into``: the name of another table with these columns of ``table``'s types (a temporary one).

    A COPY has no ON CONFLICT: a row that breaks a unique constraint fails the whole statement
    (psycopg's ``UniqueViolation``) and the transaction with it, unless a savepoint was taken.

    ``binary``: in PostgreSQL's binary format, which spares the server parsing every value as text
    (the escapes of a raw record's JSON, the times): 40% of its cost for incidents, nothing for
    findings' short rows. Each value must then be of its column's own type (str for text and JSON,
    an aware datetime, bool, int); a value that is not, say a number for a text column, which the
    text format leaves to the server to cast, raises TypeError before anything is sent.
    """
    _, quote, _ = driver_sql()
    types = _column_types(table, columns) if binary else None  # before the COPY holds the connection
    cursor = db.session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    sql = f"COPY {quote(into or table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    if types is not None:
        sql += " (FORMAT BINARY)"
        for dumper in (_JsonbTextDumper, _JsonTextDumper):  # this cursor only
            cursor.adapters.register_dumper(None, dumper)
    with cursor.copy(sql) as copy:
        if types is not None:
            copy.set_types(types)
        for row in params:
            copy.write_row(row)


def copy_text(table: sa.Table, columns: Sequence[str], lines: Sequence[str]) -> None:
    """PostgreSQL: COPY rows already in COPY's text format (values by ``copy_text_value``, tab-separated, each line ending in a newline).

    For many short rows whose values repeat (a finding's check, its times) the caller formats
    each distinct value once; psycopg's ``write_row`` adapts every value of every row, which
    was most of the sync's Python time for findings (3 µs a row).
    """
    if not lines:
        return
    _, quote, _ = driver_sql()
    cursor = db.session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN") as copy:
        copy.write("".join(lines))


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text_value(value: Any) -> str:
    """A value in COPY's text format: NULL as \\N, a time in ISO 8601, text with backslashes, tabs and line ends escaped."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return text.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(text) else text


class _JsonbTextDumper(Dumper):
    """JSON text (``json_text``) as a jsonb value in binary format: a version byte, then the text as is.

    psycopg's own jsonb dumper encodes a Python object, so a str would be stored as a JSON string.
    """

    format = pq.Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + obj.encode()


class _JsonTextDumper(Dumper):
    format = pq.Format.BINARY
    oid = postgres.types["json"].oid

    def dump(self, obj: Any) -> bytes:
        return cast(bytes, obj.encode())


# (engine, table) -> {column: its type's oid}, for binary COPY
_COLUMN_TYPES: weakref.WeakKeyDictionary[sa.Engine, dict[str, dict[str, int]]] = weakref.WeakKeyDictionary()


def _column_types(table: sa.Table, columns: Sequence[str]) -> list[int]:
    known = _COLUMN_TYPES.setdefault(db.engine, {})
    types = known.get(table.name)
    if types is None or any(c not in types for c in columns):  # first use, or a column added since
        types = known[table.name] = {name: oid for name, oid in db.session.execute(sa.text(
            "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0"
            " AND NOT attisdropped"), {"t": table.name})}
    return [types[c] for c in columns]


def one_of(column: sa.ColumnElement[Any], name: str = "ids") -> sa.ColumnElement[bool]:
    """``column IN`` a list bound at execution as ``name``: on PostgreSQL ``= ANY`` of one array parameter.

    An expanding IN renders a placeholder per value, which SQLAlchemy and then psycopg turn into
    a new statement text for every length of list (a page's keys: hundreds): about 3 ms of Python
    per statement, and never a prepared statement. The array keeps one text; the plan is the same
    index scan.
    """
    if db.engine.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(sa.bindparam(name, expanding=True))


# engine -> whether the server compresses TOAST values with lz4 (PostgreSQL 14+, built with it)
_LZ4: weakref.WeakKeyDictionary[sa.Engine, bool] = weakref.WeakKeyDictionary()


def cheap_compression() -> None:
    """On PostgreSQL, compress the large values this transaction writes (raw records) with lz4 instead of pglz.

    A raw record is a few KB of JSON, above the TOAST threshold, so every incident row is compressed:
    with pglz that was 40% of the server's CPU time copying 20,000 incidents into a table without
    indexes (2.3 s; 1.3 s with lz4). The values read back the same whichever method stored them, and
    only this transaction is affected (SET LOCAL). A server without lz4 keeps its default.
    """
    engine = db.engine
    if engine.dialect.name != "postgresql":
        return
    available = _LZ4.get(engine)
    if available is None:
        available = bool(db.session.execute(sa.text(
            "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)")).scalar())
        _LZ4[engine] = available
    if available:
        db.session.execute(sa.text("SET LOCAL default_toast_compression = lz4"))


def driver_sql() -> tuple[Any, Callable[[str], str], str]:
    """The dialect, its identifier quoting and its parameter marker (SQLite ``?``, psycopg ``%s``)."""
    dialect = db.engine.dialect
    return dialect, dialect.identifier_preparer.quote, "?" if dialect.paramstyle == "qmark" else "%s"


def insert_sql(table: sa.Table, columns: Sequence[str], conflict: Sequence[str] = (), update: Sequence[str] = (),
               extra_set: Mapping[str, str] | None = None, select: str | None = None) -> str:
    """INSERT of ``columns``: one row of parameters, or the rows of the query ``select``; ON CONFLICT (conflict) DO UPDATE."""
    _, quote, mark = driver_sql()
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
           + (select if select is not None else f"VALUES ({', '.join(mark for _ in columns)})"))
    if conflict:
        sets = [f"{quote(c)} = excluded.{quote(c)}" for c in update]
        sets += [f"{quote(c)} = {expr.format(table=quote(table.name))}" for c, expr in (extra_set or {}).items()]
        sql += f" ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO UPDATE SET {', '.join(sets)}"
    return sql


def bulk_write(table: sa.Table, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
               conflict: Sequence[str] = (), update: Sequence[str] = (), extra_set: Mapping[str, str] | None = None) -> None:
    """INSERT many rows in one statement (``insert_encoded``), or ON CONFLICT (conflict) DO UPDATE in one executemany.

    ``extra_set`` maps a column to an SQL expression over ``{table}`` and ``excluded``.
    The statement has the same meaning on SQLite (3.24+) and PostgreSQL.
    """
    if not rows:
        return
    params = encode_rows(table, rows, columns, db.engine.dialect.name)
    if not conflict:
        insert_encoded(table, columns, params)
        return
    db.session.connection().exec_driver_sql(insert_sql(table, columns, conflict, update, extra_set), params)


def bulk_update(table: sa.Table, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE table SET (the rows' other columns) WHERE key = row[key], in one executemany."""
    if not rows:
        return
    dialect, quote, mark = driver_sql()
    columns = [c for c in rows[0] if c != key]
    sql = f"UPDATE {quote(table.name)} SET {', '.join(f'{quote(c)} = {mark}' for c in columns)} WHERE {quote(key)} = {mark}"
    db.session.connection().exec_driver_sql(sql, encode_rows(table, rows, [*columns, key], dialect.name))


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """Keep the cyclic collector off the long-lived heap (app, ruleset, mappings) during a batch job.

    A sync or assessment allocates millions of small containers, so full collections run
    often, and each traversed the whole heap: a quarter of a sync's time. Unfrozen after,
    so that a long-running service still collects what the job left behind.

    The youngest generation is also collected less often meanwhile (``batch_gc_threshold``):
    a page's rows are containers that all live until the page is stored, and traversing them
    again and again cost a third of unpickling a page from the sync's worker.
    """
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(*batch_gc_threshold(before))
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def batch_gc_threshold(current: tuple[int, ...]) -> tuple[int, ...]:
    """The collector's thresholds for a batch job: the youngest generation collected after 20,000 allocations, not 700."""
    return (max(current[0], 20_000), *current[1:]) if current and current[0] > 0 else current
