"""Storing canonical incidents: encoded once, upserted a page at a time on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from connectors.canonical import FIELDS, ITEM_DATETIME_KEYS, LIST_FIELDS, parse_utc

from ..db.bulk import cheap_compression, column_encoder, copy_rows, insert_sql, json_text, one_of
from ..extensions import db
from ..models import Incident
from ..queries.coverage import MASK_COLUMNS

log = logging.getLogger("gapbridge.store")

# Not part of what an incident *is*: they change when GapBridge itself writes back.
_VOLATILE = frozenset({"updated_at", "enrichment_fingerprint"})
_HASHED = tuple(n for n in FIELDS if n not in _VOLATILE)


def content_hash(incident: Mapping[str, Any]) -> str:
    body = orjson.dumps([incident.get(n) for n in _HASHED], default=str, option=orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(body).hexdigest()


# An incident row's columns: those known when the record is normalized, then those decided when it is stored.
_PREPARED_COLUMNS = [*FIELDS, "raw", "content_hash", "first_seen_at", "last_synced_at"]
_STORE_COLUMNS = ["revision", "assessed_ruleset", "assessed_revision", "last_assessed_on"]
_ASSESSMENT_COLUMNS = ("assessed_ruleset", "assessed_revision", "last_assessed_on")
_MASK_COLUMNS = MASK_COLUMNS
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
        out.params.append((*values, json_text(incident.get("raw") or {}), digest, synced, synced))
    return out


@dataclass
class Upserted:
    changed: int  # new or with changed content
    stale: list[str]  # external ids to assess now (marked assessed by the same write)
    new: list[str]  # external ids stored for the first time


Masks = tuple[int, ...]  # an incident's outcome masks, MASK_COLUMNS in order


def upsert_incidents(source: str, incidents: EncodedIncidents, now: datetime, ruleset_hash: str | None = None,
                     masks: Sequence[Masks] | None = None) -> Upserted:
    """Insert or update the incidents of ``source``; bump ``revision`` only when the content changed.

    With ``ruleset_hash``, incidents that are stale under it (new, changed, or assessed
    under other mappings) are marked assessed in the same write, and their external ids
    returned: the caller assesses them in this transaction. Marking them here spares a
    second write of every (wide) row.

    ``masks``, one per incident (in order), are their outcome masks under ``ruleset_hash``
    from their own outcomes (``assess.outcome_masks``). They are written with the incidents
    stored for the first time (``Upserted.new``), which have no findings yet, so these are
    their masks in full; the caller's assessment then leaves those rows alone. Other incidents
    keep their stored masks here.

    On PostgreSQL the new incidents go in by COPY, the others by INSERT ... ON CONFLICT: the
    server's cost of an incident (a wide row, JSON parsed, the raw record compressed, eight
    indexes) is mostly per row, and COPY spares the per-row statement and the conflict check.
    A new incident found stored after all (a duplicate in the page; another writer, though the
    sync lease allows none) fails the COPY, which is undone to a savepoint, and the whole page
    is then written by INSERT ... ON CONFLICT in page order, as on SQLite.
    """
    if not incidents:
        return Upserted(0, [], [])
    table = Incident.__table__
    t = table.c
    prior = {r.external_id: r for r in db.session.execute(
        sa.select(t.external_id, t.content_hash, t.revision, t.assessed_ruleset, t.assessed_revision).where(
            t.source == source, one_of(t.external_id)), {"ids": incidents.external_ids})}
    dialect = db.engine.dialect.name
    assessed_on = column_encoder(table, "last_assessed_on", dialect)(now)
    with_masks = masks if ruleset_hash else None
    changed, stale, new = 0, [], []
    rows: list[tuple[Any, ...]] = []  # all, in page order
    fresh: list[bool] = []  # whether each row is of an incident stored for the first time
    for n, (external_id, content, prepared) in enumerate(
            zip(incidents.external_ids, incidents.content_hashes, incidents.params, strict=True)):
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
        mask: tuple[Any, ...] = with_masks[n] if with_masks is not None and before is None else (None,) * len(_MASK_COLUMNS)
        if ruleset_hash and (before is None or (before.assessed_ruleset, before.assessed_revision) != (ruleset_hash, revision)):
            rows.append((*prepared, revision, ruleset_hash, revision, assessed_on, *mask))
            stale.append(external_id)
        else:  # NULL keeps what is stored (COALESCE below)
            rows.append((*prepared, revision, None, None, None, *mask))
        fresh.append(before is None)
    cheap_compression()
    if dialect == "postgresql" and any(fresh):
        if _copy_new(table, [r for r, f in zip(rows, fresh, strict=True) if f]):
            rows = [r for r, f in zip(rows, fresh, strict=True) if not f]
    if rows:
        db.session.connection().exec_driver_sql(_upsert_sql(table), rows)
    return Upserted(changed, stale, new)


_ROW_COLUMNS = [*_PREPARED_COLUMNS, *_STORE_COLUMNS, *_MASK_COLUMNS]


def _upsert_sql(table: sa.Table) -> str:
    return insert_sql(table, _ROW_COLUMNS, ["source", "external_id"], _INCIDENT_UPDATE,
                      {c: f"COALESCE(excluded.{c}, {{table}}.{c})" for c in (*_ASSESSMENT_COLUMNS, *_MASK_COLUMNS)})


def _copy_new(table: sa.Table, rows: list[tuple[Any, ...]]) -> bool:
    """COPY (binary) the rows of incidents not stored before; False, and nothing written, if that failed.

    It fails when one of them was stored after all (``UniqueViolation``), or when a value is
    not of its column's type (TypeError: a connector that gives a number for a text field, which
    INSERT lets the server cast). The caller then writes them by INSERT ... ON CONFLICT, which
    raises again whatever error is not one of these.
    """
    import psycopg  # PostgreSQL only

    try:
        with db.session.begin_nested():
            copy_rows(table, _ROW_COLUMNS, rows, binary=True)
    except (psycopg.Error, TypeError, ValueError) as exc:
        log.debug("COPY of %d new incidents failed (%s): written by INSERT instead", len(rows), exc)
        return False
    return True


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
    """ANALYZE the lookup columns of incidents and findings on PostgreSQL (SQLite picks the unique index without statistics).

    A first sync grows the table from nothing faster than autovacuum re-analyzes it.
    Planned with the statistics of a nearly empty table, the per-page lookups by
    (source, external_id) scan every row of the source instead of using the unique index:
    quadratic, 20,000 incidents took 19 s instead of 9. Only the lookup columns, so the
    wide rows are sampled but not read in full.
    """
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text("ANALYZE incidents (source, external_id)"))
        # the findings the sync writes beside them: planned on an empty table's statistics, the masks' per-incident
        # read combined two indexes (status, then incident) and took 6 ms an incident instead of 0.01 ms
        db.session.execute(sa.text("ANALYZE findings (incident_id, check_id, status, kind)"))
