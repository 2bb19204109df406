"""Storing canonical incidents: encoded once, upserted a page at a time on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from connectors.canonical import DATETIME_FIELDS, FIELDS, ITEM_DATETIME_KEYS, LIST_FIELDS, parse_utc

from ..db.bulk import (
    cheap_compression,
    column_converter,
    column_encoder,
    copy_rows,
    driver_sql,
    insert_sql,
    json_text,
    one_of,
)
from ..extensions import db
from ..models import Incident
from ..queries.coverage import MASK_COLUMNS

log = logging.getLogger("gapbridge.store")

# Not part of what an incident *is*: they change when GapBridge itself writes back.
_VOLATILE = frozenset({"updated_at", "enrichment_fingerprint"})
_HASHED = tuple(n for n in FIELDS if n not in _VOLATILE)


def content_hash(incident: Mapping[str, Any]) -> str:
    return _hash_of([incident.get(n) for n in _HASHED])


def _hash_of(values: list[Any]) -> str:
    """The content hash of an incident's values of ``_HASHED``, in order."""
    return hashlib.sha256(orjson.dumps(values, default=str, option=orjson.OPT_NON_STR_KEYS)).hexdigest()


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
    """Canonical incidents as rows of the incidents table: every field, the raw record, the content hash.

    Runs in the sync's worker for every incident fetched, so per incident it does only what a
    column needs: most values go as they are, an empty list is one shared ``[]``, and times
    already in UTC are kept (``column_encoder`` converts the others).
    """
    table = Incident.__table__
    lists = [i for i, n in enumerate(FIELDS) if n in LIST_FIELDS]
    times = [(i, column_encoder(table, n, dialect)) for i, n in enumerate(FIELDS) if n in DATETIME_FIELDS]
    others = [(i, encode) for i, n in enumerate(FIELDS) if n not in LIST_FIELDS and n not in DATETIME_FIELDS
              and (encode := column_converter(table, n, dialect)) is not None]
    aware_as_is = dialect != "sqlite"  # SQLite stores naive UTC text: every time is converted there
    hashed = [i for i, n in enumerate(FIELDS) if n not in _VOLATILE]
    synced = column_encoder(table, "last_synced_at", dialect)(now)
    out = EncodedIncidents([], [], [])
    for incident in incidents:
        original = [incident.get(n) for n in FIELDS]
        values = original.copy()
        for i in lists:
            value = values[i]
            values[i] = json_text(value) if value else _EMPTY_LIST
        for i, encode in times:
            value = values[i]
            if value is not None and not (aware_as_is and value.tzinfo is timezone.utc):
                values[i] = encode(value)
        for i, encode in others:
            values[i] = encode(values[i])
        digest = _hash_of([original[i] for i in hashed])
        out.external_ids.append(incident["external_id"])
        out.content_hashes.append(digest)
        values += (json_text(incident.get("raw") or {}), digest, synced, synced)
        out.params.append(tuple(values))
    return out


_EMPTY_LIST = "[]"  # a plain str, not JsonText: pages are pickled from the worker, and a str subclass costs more


class StoredIncident(NamedTuple):
    """What the assessment of a just-stored incident needs of its row."""

    id: int
    revision: int
    number: str | None
    source: str
    external_id: str


@dataclass
class Upserted:
    changed: int  # new or with changed content
    stale: list[str]  # external ids to assess now (marked assessed by the same write)
    new: list[str]  # external ids stored for the first time
    stored: list[StoredIncident] | None = None  # of the stale ones, in order, when known without reading them back


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

    On PostgreSQL the lookup of the page's stored incidents also draws the ids of the new ones
    from the table's sequence, one statement for both, so that the rows of the stale ones are
    known without reading them back (``Upserted.stored``). The new incidents then go in by COPY
    and the others by COPY into a temporary table and one INSERT ... SELECT ... ON CONFLICT: the
    server's cost of an incident (a wide row, JSON parsed, the raw record compressed, ten
    indexes) is mostly per row, and COPY spares the per-row statement. Either COPY failing (a
    new incident stored after all: twice in the page, or by another writer, though the sync
    lease allows none; a value not of its column's type) is undone to a savepoint, and what it
    held is then written by INSERT ... ON CONFLICT in page order, as on SQLite. So are the stored
    incidents of a page that holds one twice (one statement may update a row only once).
    """
    if not incidents:
        return Upserted(0, [], [])
    table = Incident.__table__
    dialect = db.engine.dialect.name
    ids = incidents.external_ids
    postgres = dialect == "postgresql"
    distinct = len(set(ids)) == len(ids)
    prior, drawn = _prior(table, source, ids, postgres)
    assessed_on = column_encoder(table, "last_assessed_on", dialect)(now)
    with_masks = masks if ruleset_hash else None
    no_masks = (None,) * len(_MASK_COLUMNS)
    number_at = _PREPARED_COLUMNS.index("number")
    changed, stale, new = 0, [], []
    stored: list[StoredIncident] = []
    rows: list[tuple[Any, ...]] = []  # all, in page order
    fresh: list[bool] = []  # whether each row is of an incident stored for the first time
    for n, (external_id, content, prepared) in enumerate(zip(ids, incidents.content_hashes, incidents.params, strict=True)):
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
        mask: tuple[Any, ...] = with_masks[n] if with_masks is not None and before is None else no_masks
        if ruleset_hash and (before is None or (before.assessed_ruleset, before.assessed_revision) != (ruleset_hash, revision)):
            rows.append((*prepared, revision, ruleset_hash, revision, assessed_on, *mask))
            stale.append(external_id)
            if postgres and distinct:
                stored.append(StoredIncident(drawn[external_id] if before is None else before.id, revision, prepared[number_at],
                                             source, external_id))
        else:  # NULL keeps what is stored (COALESCE below)
            rows.append((*prepared, revision, None, None, None, *mask))
        fresh.append(before is None)
    cheap_compression()
    if postgres:
        copied = [(drawn[i], *r) for i, r, f in zip(ids, rows, fresh, strict=True) if f]
        if not copied or _copy_new(table, copied):
            rows = [r for r, f in zip(rows, fresh, strict=True) if not f]
            if distinct and (not rows or _merge_staged(table, rows)):
                return Upserted(changed, stale, new, stored)
    if rows:
        db.session.connection().exec_driver_sql(_upsert_sql(table), rows)
    return Upserted(changed, stale, new)


def _prior(table: sa.Table, source: str, ids: list[str], draw: bool) -> tuple[dict[str, Any], dict[str, int]]:
    """The stored incidents among ``ids`` (by external id); with ``draw`` (PostgreSQL), ids for the others from the sequence."""
    t = table.c
    if not draw:
        found = db.session.execute(sa.select(t.external_id, t.content_hash, t.revision, t.assessed_ruleset, t.assessed_revision)
                                   .where(t.source == source, one_of(t.external_id)), {"ids": ids})
        return {r.external_id: r for r in found}, {}
    prior: dict[str, Any] = {}
    drawn: dict[str, int] = {}
    for r in db.session.execute(_lookup_sql(), {"source": source, "ids": ids}):
        if r.drawn:
            drawn[r.external_id] = r.id
        else:
            prior[r.external_id] = r
    return prior, drawn


@functools.cache
def _lookup_sql() -> sa.TextClause:
    # nextval is evaluated per row of the second branch only: one id per new incident
    return sa.text(
        "WITH page AS (SELECT unnest(CAST(:ids AS text[])) AS external_id), "
        "found AS (SELECT id, external_id, content_hash, revision, assessed_ruleset, assessed_revision FROM incidents "
        "WHERE source = :source AND external_id = ANY(CAST(:ids AS text[]))) "
        "SELECT id, external_id, content_hash, revision, assessed_ruleset, assessed_revision, false AS drawn FROM found "
        "UNION ALL SELECT nextval(pg_get_serial_sequence('incidents', 'id')), external_id, NULL, NULL, NULL, NULL, true FROM page "
        "WHERE external_id NOT IN (SELECT external_id FROM found)")


_ROW_COLUMNS = [*_PREPARED_COLUMNS, *_STORE_COLUMNS, *_MASK_COLUMNS]
_MERGE_SET = {c: f"COALESCE(excluded.{c}, {{table}}.{c})" for c in (*_ASSESSMENT_COLUMNS, *_MASK_COLUMNS)}
# a temporary table (this connection's own, emptied by each merge), named for its columns: one made before a
# migration added a column is not used after it
_STAGE = "gapbridge_incident_rows_" + hashlib.sha256(" ".join(_ROW_COLUMNS).encode()).hexdigest()[:8]


def _upsert_sql(table: sa.Table) -> str:
    return insert_sql(table, _ROW_COLUMNS, ["source", "external_id"], _INCIDENT_UPDATE, _MERGE_SET)


def _copy_new(table: sa.Table, rows: list[tuple[Any, ...]]) -> bool:
    """COPY (binary) the rows (id first) of incidents not stored before; False, and nothing written, if that failed.

    It fails when one of them was stored after all (``UniqueViolation``), or when a value is
    not of its column's type (TypeError: a connector that gives a number for a text field, which
    INSERT lets the server cast). The caller then writes them by INSERT ... ON CONFLICT, which
    raises again whatever error is not one of these.
    """
    import psycopg  # PostgreSQL only

    try:
        with db.session.begin_nested():
            copy_rows(table, ["id", *_ROW_COLUMNS], rows, binary=True)
    except (psycopg.Error, TypeError, ValueError) as exc:
        log.debug("COPY of %d new incidents failed (%s): written by INSERT instead", len(rows), exc)
        return False
    return True


def _merge_staged(table: sa.Table, rows: list[tuple[Any, ...]]) -> bool:
    """Stored incidents: COPY (binary) into a temporary table, then one INSERT ... SELECT ... ON CONFLICT DO UPDATE.

    The rows' external ids are distinct (the caller's check): one statement may update a row
    only once. False, and nothing written, if the COPY failed (see ``_copy_new``).
    """
    import psycopg  # PostgreSQL only

    _, quote, _ = driver_sql()
    columns = ", ".join(quote(c) for c in _ROW_COLUMNS)
    try:
        with db.session.begin_nested():
            # ON COMMIT DROP would make every page create it again; it is emptied by the merge instead
            db.session.connection().exec_driver_sql(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} AS SELECT {columns} FROM {quote(table.name)} WITH NO DATA")
            copy_rows(table, _ROW_COLUMNS, rows, binary=True, into=_STAGE)
            db.session.connection().exec_driver_sql(f"WITH staged AS (DELETE FROM {_STAGE} RETURNING *) " + insert_sql(
                table, _ROW_COLUMNS, ["source", "external_id"], _INCIDENT_UPDATE, _MERGE_SET, select=f"SELECT {columns} FROM staged"))
    except (psycopg.Error, TypeError, ValueError) as exc:
        log.debug("COPY of %d stored incidents failed (%s): written by INSERT instead", len(rows), exc)
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

    A small sample (3,000 rows, statistics target 10) is enough to pick those indexes, and
    costs a sixth of the default's (30,000 rows: 170 ms at 20,000 incidents, in the middle of
    the sync); autovacuum analyzes the tables in full later.
    """
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text("SET LOCAL default_statistics_target = 10"))
        db.session.execute(sa.text("ANALYZE incidents (source, external_id)"))
        # the findings the sync writes beside them: planned on an empty table's statistics, the masks' per-incident
        # read combined two indexes (status, then incident) and took 6 ms an incident instead of 0.01 ms
        db.session.execute(sa.text("ANALYZE findings (incident_id, check_id, status, kind)"))
        db.session.execute(sa.text("RESET default_statistics_target"))  # the rest of the caller's transaction as before
