"""Storing canonical incidents: upserts that work on SQLite and PostgreSQL, and leases."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from connectors.canonical import FIELDS, ITEM_DATETIME_KEYS, LIST_FIELDS, parse_utc

from ..extensions import db, json_dumps
from ..models import Incident, Lease, UTCDateTime, utcnow

# Not part of what an incident *is*: they change when GapBridge itself writes back.
_VOLATILE = frozenset({"updated_at", "enrichment_fingerprint"})
_HASHED = tuple(n for n in FIELDS if n not in _VOLATILE)


def content_hash(incident: Mapping[str, Any]) -> str:
    body = orjson.dumps([incident.get(n) for n in _HASHED], default=str, option=orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(body).hexdigest()


# --- bulk writes: many rows, one statement ------------------------------------------------
#
# A sync writes a row per incident and a finding per applicable check. SQLAlchemy's per-row
# parameter processing cost more than the database itself (31 µs per finding on SQLite), so
# the sync's writes (upserts included) render their statement once and hand plain tuples to
# the driver. Only JSON and UTC-time columns need converting; both are done as the column types do.


class JsonText(str):
    """A value already encoded as JSON (constants written on many rows are encoded once)."""


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, JsonText):
        return value
    return json_dumps(value)


def _converter(column: sa.Column[Any], dialect: str) -> Callable[[Any], Any] | None:
    if isinstance(column.type, sa.JSON):
        return _json_text
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
    dialect, quote, _ = _driver_sql()
    connection = db.session.connection()
    if dialect.name != "postgresql":
        connection.exec_driver_sql(_insert_sql(table, columns), params)
        return
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN") as copy:
        for row in params:
            copy.write_row(row)


def _driver_sql() -> tuple[Any, Callable[[str], str], str]:
    """The dialect, its identifier quoting and its parameter marker (SQLite ``?``, psycopg ``%s``)."""
    dialect = db.engine.dialect
    return dialect, dialect.identifier_preparer.quote, "?" if dialect.paramstyle == "qmark" else "%s"


def _insert_sql(table: sa.Table, columns: Sequence[str], conflict: Sequence[str] = (), update: Sequence[str] = (),
                extra_set: Mapping[str, str] | None = None) -> str:
    _, quote, mark = _driver_sql()
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
    db.session.connection().exec_driver_sql(_insert_sql(table, columns, conflict, update, extra_set), params)


def bulk_update(table: sa.Table, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE table SET (the rows' other columns) WHERE key = row[key], in one executemany."""
    if not rows:
        return
    dialect, quote, mark = _driver_sql()
    columns = [c for c in rows[0] if c != key]
    sql = f"UPDATE {quote(table.name)} SET {', '.join(f'{quote(c)} = {mark}' for c in columns)} WHERE {quote(key)} = {mark}"
    db.session.connection().exec_driver_sql(sql, encode_rows(table, rows, [*columns, key], dialect.name))


# An incident row's columns: those known when the record is normalized, then those decided when it is stored.
_PREPARED_COLUMNS = [*FIELDS, "raw", "content_hash", "first_seen_at", "last_synced_at"]
_STORE_COLUMNS = ["revision", "assessed_ruleset", "assessed_revision", "last_assessed_on"]
_ASSESSMENT_COLUMNS = ("assessed_ruleset", "assessed_revision", "last_assessed_on")
_INCIDENT_UPDATE = [c for c in [*_PREPARED_COLUMNS, *_STORE_COLUMNS]
                    if c not in ("source", "external_id", "first_seen_at", *_ASSESSMENT_COLUMNS)]


@dataclass
class EncodedIncidents:
    """Normalized incidents of one source, encoded for the database (cheap to hand between processes)."""

    external_ids: list[str]
    content_hashes: list[str]
    params: list[tuple[Any, ...]]  # _PREPARED_COLUMNS of each, encoded

    def __len__(self) -> int:
        return len(self.external_ids)


def encode_incidents(incidents: Sequence[Mapping[str, Any]], now: datetime, dialect: str) -> EncodedIncidents:
    """Canonical incidents as rows of the incidents table: every field, the raw record, the content hash."""
    table = Incident.__table__
    fields = [(n, column_encoder(table, n, dialect), n in LIST_FIELDS) for n in FIELDS]
    synced = column_encoder(table, "last_synced_at", dialect)(now)
    out = EncodedIncidents([], [], [])
    for incident in incidents:
        values = []
        for name, encode, is_list in fields:
            value = incident.get(name)
            if is_list and not value:
                value = []  # item times inside lists are encoded as ISO 8601 by the JSON encoder
            values.append(encode(value))
        digest = content_hash(incident)
        out.external_ids.append(incident["external_id"])
        out.content_hashes.append(digest)
        out.params.append((*values, _json_text(incident.get("raw") or {}), digest, synced, synced))
    return out


@dataclass
class Upserted:
    changed: int  # new or with changed content
    stale: list[str]  # external ids to assess now (marked assessed by the same write)
    new: list[str]  # external ids stored for the first time


def upsert_incidents(source: str, incidents: EncodedIncidents, now: datetime, ruleset_hash: str | None = None) -> Upserted:
    """Insert or update the incidents of ``source``; bump ``revision`` only when the content changed.

    With ``ruleset_hash``, incidents that are stale under it (new, changed, or assessed
    under other mappings) are marked assessed in the same write, and their external ids
    returned: the caller assesses them in this transaction. Marking them here spares a
    second write of every (wide) row.
    """
    if not incidents:
        return Upserted(0, [], [])
    table = Incident.__table__
    t = table.c
    prior = {r.external_id: r for r in db.session.execute(
        sa.select(t.external_id, t.content_hash, t.revision, t.assessed_ruleset, t.assessed_revision).where(
            t.source == source, t.external_id.in_(sa.bindparam("ids", expanding=True))), {"ids": incidents.external_ids})}
    assessed_on = column_encoder(table, "last_assessed_on", db.engine.dialect.name)(now)
    changed, stale, new, params = 0, [], [], []
    for external_id, content, prepared in zip(incidents.external_ids, incidents.content_hashes, incidents.params, strict=True):
        before = prior.get(external_id)
        if before is None:
            changed += 1
            revision = 1
            new.append(external_id)
        elif before.content_hash != content:
            changed += 1
            revision = before.revision + 1  # one writer per source: the sync lease
        else:
            revision = before.revision
        if ruleset_hash and (before is None or (before.assessed_ruleset, before.assessed_revision) != (ruleset_hash, revision)):
            params.append((*prepared, revision, ruleset_hash, revision, assessed_on))
            stale.append(external_id)
        else:  # NULL keeps what is stored (COALESCE below)
            params.append((*prepared, revision, None, None, None))
    sql = _insert_sql(table, [*_PREPARED_COLUMNS, *_STORE_COLUMNS], ["source", "external_id"], _INCIDENT_UPDATE,
                      {c: f"COALESCE(excluded.{c}, {{table}}.{c})" for c in _ASSESSMENT_COLUMNS})
    db.session.connection().exec_driver_sql(sql, params)
    return Upserted(changed, stale, new)


def canonical_from_row(row: Any) -> dict[str, Any]:
    """A stored incident back as a canonical dict, list item timestamps parsed again."""
    return canonical_subset(row, list(FIELDS))


def canonical_subset(row: Any, names: list[str]) -> dict[str, Any]:
    """Only the named fields of a stored incident (a row with those columns), list item times parsed."""
    values = row._mapping  # by key: much cheaper than attribute access on a Row
    out = {n: values[n] for n in names}
    for n in names:
        if n in LIST_FIELDS:
            out[n] = [_parse_item(i) for i in out[n] or []]
    return out


def _parse_item(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    parsed = {}
    for k, v in item.items():
        if k in ITEM_DATETIME_KEYS and isinstance(v, str):
            try:
                v = parse_utc(v)
            except ValueError:
                pass  # keep the text; a check will not read it as a time
        elif isinstance(v, list):
            v = [_parse_item(x) for x in v]
        parsed[k] = v
    return parsed


def refresh_planner_statistics() -> None:
    """ANALYZE the incidents' lookup columns on PostgreSQL (SQLite picks the unique index without statistics).

    A first sync grows the table from nothing faster than autovacuum re-analyzes it.
    Planned with the statistics of a nearly empty table, the per-page lookups by
    (source, external_id) scan every row of the source instead of using the unique index:
    quadratic, 20,000 incidents took 19 s instead of 9. Only the lookup columns, so the
    wide rows are sampled but not read in full.
    """
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text("ANALYZE incidents (source, external_id)"))


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


# --- leases: run-once work across service instances --------------------------------


def acquire_lease(name: str, holder: str, seconds: float) -> bool:
    """Claim ``name`` for ``holder`` until now + seconds; False if someone else holds it."""
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    table = Lease.__table__
    # an UPDATE's result is a CursorResult, which has rowcount; Session.execute is typed as plain Result
    result = cast(CursorResult[Any], db.session.execute(
        table.update()
        .where(table.c.name == name, sa.or_(table.c.expires_at < now, table.c.holder == holder))
        .values(holder=holder, expires_at=until)
    ))
    if result.rowcount == 1:
        db.session.commit()
        return True
    try:
        db.session.execute(table.insert().values(name=name, holder=holder, expires_at=until))
        db.session.commit()
        return True
    except IntegrityError:
        db.session.rollback()
    # a holder on this host whose process is gone (killed, crashed) need not block us until expiry
    current = db.session.execute(sa.select(table.c.holder).where(table.c.name == name)).scalar()
    if current and current != holder and _dead_local_holder(current, holder):
        result = cast(CursorResult[Any], db.session.execute(
            table.update().where(table.c.name == name, table.c.holder == current).values(holder=holder, expires_at=until)))
        db.session.commit()
        return result.rowcount == 1
    return False


def _dead_local_holder(current: str, me: str) -> bool:
    """True if ``current`` ("host:pid") is a process of this host that no longer runs."""
    host, _, pid = current.rpartition(":")
    if host != me.rpartition(":")[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    return False


def release_lease(name: str, holder: str) -> None:
    table = Lease.__table__
    db.session.execute(table.delete().where(table.c.name == name, table.c.holder == holder))
    db.session.commit()


def lease_holder(name: str) -> Lease | None:
    return db.session.get(Lease, name)
