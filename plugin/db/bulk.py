"""Bulk writes: many rows, one statement, on SQLite and PostgreSQL; and the collector kept off long-lived heap during a batch."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, cast

import sqlalchemy as sa

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


def _identity(value: Any) -> Any:
    return value


def insert_encoded(table: sa.Table, columns: Sequence[str], params: Sequence[tuple[Any, ...]]) -> None:
    """INSERT rows already encoded for the driver (``encode_rows``, ``column_encoder``).

    SQLite: one executemany. PostgreSQL: COPY, which costs the server a third of as many
    single-row INSERTs (findings are a few rows per incident).
    """
    if not params:
        return
    dialect, quote, _ = driver_sql()
    connection = db.session.connection()
    if dialect.name != "postgresql":
        connection.exec_driver_sql(insert_sql(table, columns), params)
        return
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN") as copy:
        for row in params:
            copy.write_row(row)


def driver_sql() -> tuple[Any, Callable[[str], str], str]:
    """The dialect, its identifier quoting and its parameter marker (SQLite ``?``, psycopg ``%s``)."""
    dialect = db.engine.dialect
    return dialect, dialect.identifier_preparer.quote, "?" if dialect.paramstyle == "qmark" else "%s"


def insert_sql(table: sa.Table, columns: Sequence[str], conflict: Sequence[str] = (), update: Sequence[str] = (),
                extra_set: Mapping[str, str] | None = None) -> str:
    _, quote, mark = driver_sql()
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
           f"VALUES ({', '.join(mark for _ in columns)})")
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
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
