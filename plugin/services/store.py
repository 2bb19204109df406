"""Storing canonical incidents: upserts that work on SQLite and PostgreSQL, and leases."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from connectors.canonical import FIELDS, ITEM_DATETIME_KEYS, LIST_FIELDS, parse_utc

from ..extensions import db
from ..models import Incident, Lease, UTCDateTime, utcnow

# Not part of what an incident *is*: they change when GapBridge itself writes back.
_VOLATILE = frozenset({"updated_at", "enrichment_fingerprint"})
_HASHED = tuple(n for n in FIELDS if n not in _VOLATILE)


def content_hash(incident: Mapping[str, Any]) -> str:
    body = orjson.dumps([incident.get(n) for n in _HASHED], default=str, option=orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(body).hexdigest()


def incident_row(incident: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A canonical incident as a row for the incidents table."""
    row = {n: incident.get(n) for n in FIELDS}
    for n in LIST_FIELDS:
        row[n] = row[n] or []  # item times are encoded as ISO 8601 by the JSON encoder
    row["raw"] = incident.get("raw") or {}
    row["content_hash"] = content_hash(incident)
    row["first_seen_at"] = now
    row["last_synced_at"] = now
    return row


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
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _converter(column: sa.Column[Any], dialect: str) -> Callable[[Any], Any] | None:
    if isinstance(column.type, sa.JSON):
        return _json_text
    if isinstance(column.type, UTCDateTime):
        if dialect == "sqlite":  # SQLAlchemy's SQLite storage format (naive UTC), so comparisons in SQL still hold
            return lambda v: None if v is None else _as_utc(v).replace(tzinfo=None).isoformat(" ", "microseconds")
        return lambda v: None if v is None else _as_utc(v)
    return None


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _driver_sql() -> tuple[Any, Callable[[str], str], str]:
    """The dialect, its identifier quoting and its parameter marker (SQLite ``?``, psycopg ``%s``)."""
    dialect = db.engine.dialect
    return dialect, dialect.identifier_preparer.quote, "?" if dialect.paramstyle == "qmark" else "%s"


def bulk_write(table: sa.Table, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
               conflict: Sequence[str] = (), update: Sequence[str] = (), extra_set: Mapping[str, str] | None = None) -> None:
    """INSERT many rows in one executemany, optionally ON CONFLICT (conflict) DO UPDATE.

    ``extra_set`` maps a column to an SQL expression over ``{table}`` and ``excluded``.
    The statement has the same meaning on SQLite (3.24+) and PostgreSQL.
    """
    if not rows:
        return
    dialect, quote, mark = _driver_sql()
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
           f"VALUES ({', '.join(mark for _ in columns)})")
    if conflict:
        sets = [f"{quote(c)} = excluded.{quote(c)}" for c in update]
        sets += [f"{quote(c)} = {expr.format(table=quote(table.name))}" for c, expr in (extra_set or {}).items()]
        sql += f" ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO UPDATE SET {', '.join(sets)}"
    convert = [(c, _converter(table.c[c], dialect.name)) for c in columns]
    params = [tuple(row.get(c) if fn is None else fn(row.get(c)) for c, fn in convert) for row in rows]
    db.session.connection().exec_driver_sql(sql, params)


def bulk_update(table: sa.Table, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE table SET (the rows' other columns) WHERE key = row[key], in one executemany."""
    if not rows:
        return
    dialect, quote, mark = _driver_sql()
    columns = [c for c in rows[0] if c != key]
    sql = f"UPDATE {quote(table.name)} SET {', '.join(f'{quote(c)} = {mark}' for c in columns)} WHERE {quote(key)} = {mark}"
    convert = [(c, _converter(table.c[c], dialect.name)) for c in [*columns, key]]
    db.session.connection().exec_driver_sql(sql, [tuple(row[c] if fn is None else fn(row[c]) for c, fn in convert) for row in rows])


_ASSESSMENT_COLUMNS = ("assessed_ruleset", "assessed_revision", "last_assessed_on")
_INCIDENT_COLUMNS = [*FIELDS, "raw", "content_hash", "revision", "first_seen_at", "last_synced_at", *_ASSESSMENT_COLUMNS]
_INCIDENT_UPDATE = [c for c in _INCIDENT_COLUMNS if c not in ("source", "external_id", "first_seen_at", *_ASSESSMENT_COLUMNS)]


@dataclass
class Upserted:
    changed: int  # new or with changed content
    stale: list[str]  # external ids to assess now (marked assessed by the same write)


def upsert_incidents(incidents: Sequence[Mapping[str, Any]], now: datetime, ruleset_hash: str | None = None) -> Upserted:
    """Insert or update incidents; bump ``revision`` only when the content changed.

    With ``ruleset_hash``, incidents that are stale under it (new, changed, or assessed
    under other mappings) are marked assessed in the same write, and their external ids
    returned: the caller assesses them in this transaction. Marking them here spares a
    second write of every (wide) row.
    """
    if not incidents:
        return Upserted(0, [])
    rows = [incident_row(i, now) for i in incidents]
    table = Incident.__table__
    t = table.c
    prior = {r.external_id: r for r in db.session.execute(
        sa.select(t.external_id, t.content_hash, t.revision, t.assessed_ruleset, t.assessed_revision).where(
            t.source == rows[0]["source"], t.external_id.in_([r["external_id"] for r in rows])))}
    changed, stale = 0, []
    for row in rows:
        before = prior.get(row["external_id"])
        if before is None or before.content_hash != row["content_hash"]:
            changed += 1
            row["revision"] = 1 if before is None else before.revision + 1  # one writer per source: the sync lease
        else:
            row["revision"] = before.revision
        if ruleset_hash and (before is None or (before.assessed_ruleset, before.assessed_revision) != (ruleset_hash, row["revision"])):
            row.update(assessed_ruleset=ruleset_hash, assessed_revision=row["revision"], last_assessed_on=now)
            stale.append(row["external_id"])
        else:  # NULL keeps what is stored (COALESCE below)
            row.update(assessed_ruleset=None, assessed_revision=None, last_assessed_on=None)
    bulk_write(table, rows, _INCIDENT_COLUMNS, conflict=["source", "external_id"], update=_INCIDENT_UPDATE,
               extra_set={c: f"COALESCE(excluded.{c}, {{table}}.{c})" for c in _ASSESSMENT_COLUMNS})
    return Upserted(changed, stale)


def canonical_from_row(row: Any) -> dict[str, Any]:
    """A stored incident back as a canonical dict, list item timestamps parsed again."""
    out = {n: getattr(row, n) for n in FIELDS}
    for n in LIST_FIELDS:
        items = out[n] or []
        out[n] = [_parse_item(i) for i in items]
    return out


def canonical_subset(row: Any, names: list[str]) -> dict[str, Any]:
    """Only the named fields of a stored incident, for checks across many incidents."""
    out = {n: getattr(row, n) for n in names}
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
