"""Storing canonical incidents: upserts that work on SQLite and PostgreSQL, and leases."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from connectors.canonical import FIELDS, ITEM_DATETIME_KEYS, LIST_FIELDS, parse_utc

from ..extensions import db
from ..models import Incident, Lease, utcnow

# Not part of what an incident *is*: they change when GapBridge itself writes back.
_VOLATILE = frozenset({"updated_at", "enrichment_fingerprint"})
_HASHED = tuple(n for n in FIELDS if n not in _VOLATILE)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def content_hash(incident: Mapping[str, Any]) -> str:
    body = json.dumps([_jsonable(incident.get(n)) for n in _HASHED], default=str, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def incident_row(incident: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A canonical incident as a row for the incidents table."""
    row = {n: incident.get(n) for n in FIELDS}
    for n in LIST_FIELDS:
        row[n] = _jsonable(row[n] or [])
    row["raw"] = incident.get("raw") or {}
    row["content_hash"] = content_hash(incident)
    row["revision"] = 1
    row["first_seen_at"] = now
    row["last_synced_at"] = now
    return row


def upsert(model: type, rows: Sequence[dict[str, Any]], keys: Sequence[str], update: Iterable[str],
           extra_set: Mapping[str, Any] | None = None) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, on SQLite and PostgreSQL."""
    if not rows:
        return
    dialect = db.engine.dialect.name
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(model)
    elif dialect == "sqlite":
        stmt = sqlite.insert(model)
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"unsupported database {dialect!r}")
    set_ = {c: stmt.excluded[c] for c in update}
    if extra_set:
        set_.update({k: (v(stmt) if callable(v) else v) for k, v in extra_set.items()})
    db.session.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=set_), list(rows))


def upsert_incidents(incidents: Sequence[Mapping[str, Any]], now: datetime) -> int:
    """Insert or update incidents; bump ``revision`` only when the content changed.

    Returns how many were new or changed.
    """
    if not incidents:
        return 0
    rows = [incident_row(i, now) for i in incidents]
    table = Incident.__table__
    before = dict(db.session.execute(
        sa.select(table.c.external_id, table.c.content_hash).where(
            table.c.source == rows[0]["source"], table.c.external_id.in_([r["external_id"] for r in rows]))
    ).all())
    changed = sum(1 for r in rows if before.get(r["external_id"]) != r["content_hash"])
    update = [n for n in FIELDS if n not in ("source", "external_id")] + ["raw", "content_hash", "last_synced_at"]
    upsert(Incident, rows, ["source", "external_id"], update, {
        "revision": lambda stmt: sa.case(
            (table.c.content_hash != stmt.excluded.content_hash, table.c.revision + 1), else_=table.c.revision),
    })
    return changed


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
