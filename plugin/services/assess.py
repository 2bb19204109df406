"""Assessment: evaluate stale incidents against the ruleset and store the outcome of every check.

A pass, a fail or a pending clock (with its due time) is a row in ``findings``. Not applicable is the absence of a row for an
incident assessed under the ruleset (``incidents.assessed_ruleset``): with the shipped checks
most checks do not apply to most incidents (85% of outcomes on the demo data), and writing
those rows made up most of the assessment's time and of the table.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from connectors.canonical import FIELDS, OPEN_STATES

from ..db.bulk import JsonText, bulk_update, column_encoder, copy_text, copy_text_value, heap_frozen, insert_encoded, one_of
from ..extensions import db
from ..models import Finding, Incident, utcnow
from ..queries.coverage import MASK_COLUMNS, MASK_RANK, mask_bits, stored_masks
from ..rules.across import evaluate_across_detailed
from ..rules.model import FAIL, NOT_APPLICABLE, PASS, PENDING, Ruleset, required_values
from . import audit, shutdown
from .store import canonical_from_row, canonical_subset

log = logging.getLogger("gapbridge.assess")

BATCH = 500


@dataclass
class AssessSummary:
    ruleset: str
    assessed: int = 0
    statuses: Counter = field(default_factory=Counter)
    opened: int = 0  # gaps that appeared
    closed: int = 0  # gaps that went away


def stale_condition(ruleset_hash: str, now: datetime, time_sensitive_minutes: int) -> Any:
    """Incidents whose findings may be out of date.

    Stale: never assessed, assessed under another ruleset, changed since, still open and
    last assessed longer ago than the interval (checks on elapsed time can flip), or, open
    or closed, holding a pending clock that has fallen due since it was last assessed.
    """
    t = Incident.__table__.c
    ft = Finding.__table__.c
    cutoff = now - timedelta(minutes=time_sensitive_minutes)
    return sa.or_(
        t.assessed_ruleset.is_(None),
        t.assessed_ruleset != ruleset_hash,
        t.assessed_revision != t.revision,
        t.control_outcomes.is_(None),  # assessed before the masks existed (migration 0006)
        t.cell_outcomes.is_(None),  # or before the heatmap cells' (0012), when that migration had no mappings to fill them
        sa.and_(t.state.in_(OPEN_STATES), t.last_assessed_on < cutoff),
        t.id.in_(sa.select(ft.incident_id).where(ft.status == PENDING, ft.due_at <= now)),
    )


# (check id, pass, fail or pending, what is missing, due time): the checks that apply to one incident, in ruleset order
Outcome = tuple[str, str, list[str], datetime | None]


def applicable_outcomes(ruleset: Ruleset, incident: Mapping[str, Any], now: datetime) -> list[Outcome]:
    """The outcome of every incident check that applies; the rest are not applicable."""
    out = []
    for check in ruleset.incident_checks_for(incident):
        found = check.outcome(incident, now)
        if found is not None:
            out.append((check.id, *found))
    return out


def assess(ruleset: Ruleset, *, everything: bool = False, time_sensitive_minutes: int = 60,
           now: datetime | None = None, progress: Callable[[int], None] | None = None) -> AssessSummary:
    with heap_frozen():
        return _assess(ruleset, everything, time_sensitive_minutes, now, progress)


def _assess(ruleset: Ruleset, everything: bool, time_sensitive_minutes: int, now: datetime | None,
            progress: Callable[[int], None] | None) -> AssessSummary:
    now = now or utcnow()
    summary = AssessSummary(ruleset.hash)
    t = Incident.__table__.c
    cols = [t.id, t.revision, *(getattr(t, n) for n in FIELDS)]
    where = sa.true() if everything else stale_condition(ruleset.hash, now, time_sensitive_minutes)
    last_id = 0
    while True:
        rows = db.session.execute(
            sa.select(*cols).where(where, t.id > last_id).order_by(t.id).limit(BATCH)
        ).all()
        if not rows:
            break
        last_id = rows[-1].id
        assess_batch(ruleset, [(r, canonical_from_row(r)) for r in rows], now, summary)
        db.session.commit()
        if progress:
            progress(summary.assessed)
        if shutdown.requested():  # the batches done are committed; what is left stays stale for the next pass
            break
    if ruleset.across_checks and not shutdown.requested():
        _assess_across(ruleset, now, summary)
    if summary.assessed or summary.opened or summary.closed:
        audit.record("assessment.completed", "ruleset", ruleset.hash, assessed=summary.assessed,
                     statuses=dict(summary.statuses), gaps_opened=summary.opened, gaps_closed=summary.closed)
        db.session.commit()
    return summary


def assess_batch(ruleset: Ruleset, batch: Sequence[tuple[Any, Mapping[str, Any]]], now: datetime, summary: AssessSummary,
                 mark_assessed: bool = True) -> None:
    """Evaluate and store the incident checks of a batch of (row, canonical incident) pairs.

    A row has the incident's ``id``, ``revision``, ``number`` and ``source``. The caller commits.
    """
    store_outcomes(ruleset, [(row, applicable_outcomes(ruleset, incident, now)) for row, incident in batch], now, summary,
                   mark_assessed)


def store_outcomes(ruleset: Ruleset, batch: Sequence[tuple[Any, Sequence[Outcome]]], now: datetime, summary: AssessSummary,
                   mark_assessed: bool = True, without_findings: Collection[int] = (),
                   masks_written: Collection[int] = ()) -> None:
    """Store the outcomes of (row, applicable outcomes) pairs evaluated under ``ruleset``; the caller commits.

    The incident's earlier findings are replaced; a gap that opened or closed is one audit event per incident.
    ``without_findings``: ids of incidents known to have none yet (just stored for the first time).
    ``masks_written`` (with ``mark_assessed`` false): ids of incidents of ``without_findings`` whose masks the
    caller wrote with them (``outcome_masks`` of the same outcomes), so their rows are not written again.
    """
    rows = [r for r, _ in batch]
    ids = [r.id for r in rows if r.id not in without_findings]
    ft = Finding.__table__
    mine = (one_of(ft.c.incident_id)
            & ft.c.check_id.not_in([c.id for c in ruleset.across_checks]))
    previous: dict[int, dict[str, tuple[str, Any, Any]]] = {}
    if ids:
        for f in db.session.execute(sa.select(ft.c.incident_id, ft.c.check_id, ft.c.status, ft.c.first_failed_at, ft.c.resolved_at)
                                    .where(mine), {"ids": ids}):
            previous.setdefault(f.incident_id, {})[f.check_id] = (f.status, f.first_failed_at, f.resolved_at)
    n_checks = len(ruleset.incident_checks)
    # each incident's outcome per control and sub-process, from the outcomes in hand and its stored across-incident findings
    bits = mask_bits(ruleset)
    masks = {r.id: [0] * len(MASK_COLUMNS) for r in rows}
    across_gaps = [c.id for c in ruleset.across_checks if c.id in bits]
    if ids and across_gaps:
        for held in db.session.execute(sa.select(ft.c.incident_id, ft.c.check_id, ft.c.status).where(
                one_of(ft.c.incident_id), ft.c.check_id.in_(across_gaps)), {"ids": ids}):
            _set_bits(masks[held.incident_id], bits, held.check_id, held.status)
    # rows go to the driver as tuples: per check, its constant columns are encoded once
    dialect = db.engine.dialect.name
    encode_time = column_encoder(ft, "evaluated_at", dialect)
    evaluated_at = encode_time(now)
    constants = {c.id: check_constants(c, ruleset.hash) for c in ruleset.incident_checks}
    findings: list[tuple[Any, ...]] = []
    events = []
    counts: dict[str, int] = {}
    for row, outcomes in batch:
        before_all = previous.get(row.id, {})
        opened_ids: list[str] = []
        failing = set()
        mask = None if row.id in masks_written else masks[row.id]  # those the caller wrote are not written again
        for check_id, status, details, due_at in outcomes:
            counts[status] = counts.get(status, 0) + 1
            if mask is not None:
                _set_bits(mask, bits, check_id, status)
            before = before_all.get(check_id)
            if before is None:  # as _fail_times has it with nothing before (an incident's first assessment: most)
                first_failed, resolved = (evaluated_at if status == FAIL else None), None
            else:
                first_failed, resolved = _fail_times(status, before, encode_time, evaluated_at)
            findings.append((*constants[check_id], row.id, status, orjson.dumps(details).decode() if details else "[]",
                             evaluated_at, first_failed, None if due_at is None else encode_time(due_at), resolved))
            if status == FAIL:
                failing.add(check_id)
                if before is None or before[0] != FAIL:
                    opened_ids.append(check_id)
        # a gap closes when its check passes now or no longer applies
        closed_ids = [c.id for c in ruleset.incident_checks
                      if c.id in before_all and before_all[c.id][0] == FAIL and c.id not in failing] if before_all else []
        if opened_ids or closed_ids:
            summary.opened += len(opened_ids)
            summary.closed += len(closed_ids)
            events.append(_gaps_event(row.id, row.number, row.source, opened_ids, closed_ids, ruleset.hash))
    applicable = sum(counts.values())
    summary.statuses.update(counts)
    summary.statuses[NOT_APPLICABLE] += n_checks * len(batch) - applicable
    if ids:
        db.session.execute(ft.delete().where(mine), {"ids": ids})
    insert_findings(findings)
    if mark_assessed:
        bulk_update(Incident.__table__, "id", [{"id": r.id, "assessed_revision": r.revision, "assessed_ruleset": ruleset.hash,
                                                 "last_assessed_on": now, **dict(zip(MASK_COLUMNS, masks[r.id], strict=True))}
                                               for r in rows])
    else:  # the sync wrote the assessment columns with the incident (and the masks of those new, masks_written)
        bulk_update(Incident.__table__, "id", [{"id": r.id, **dict(zip(MASK_COLUMNS, masks[r.id], strict=True))}
                                               for r in rows if r.id not in masks_written])
    audit.record_many(events)
    summary.assessed += len(rows)


def outcome_masks(ruleset: Ruleset, outcomes: Sequence[Outcome]) -> tuple[int, ...]:
    """An incident's masks (``MASK_COLUMNS``: control, sub-process, cell outcomes) from its incident-check outcomes alone.

    What ``store_outcomes`` writes for an incident with no findings stored yet (no across-incident
    findings to add): the sync writes these with the incidents it stores for the first time.
    """
    bits = mask_bits(ruleset)
    mask = [0] * len(MASK_COLUMNS)
    for check_id, status, _, _ in outcomes:
        _set_bits(mask, bits, check_id, status)
    return tuple(mask)


def _set_bits(mask: list[int], bits: Mapping[str, list[tuple[int, int]]], check_id: str, status: str) -> None:
    rank = MASK_RANK.get(status)
    if rank is not None:
        for place, offset in bits.get(check_id, ()):
            mask[place] |= 1 << (offset + rank - 1)


def refresh_outcome_masks(ruleset: Ruleset, incident_ids: Sequence[int]) -> None:
    """Write each incident's outcome per control and sub-process from its findings, in the caller's transaction.

    Coverage reads these instead of every finding; written with the findings, they are never behind them.
    """
    if not incident_ids:
        return
    masks = stored_masks(ruleset)
    values = {column: sa.literal(0, sa.BigInteger) if mask is None else mask for column, mask in masks.items()}
    t = Incident.__table__
    for start in range(0, len(incident_ids), BATCH):
        db.session.execute(sa.update(Incident).where(t.c.id.in_(list(incident_ids[start:start + BATCH]))).values(**values)
                           .execution_options(synchronize_session=False))


# a finding row as it goes to the driver: the check's constants (``check_constants``), then the outcome
FINDING_COLUMNS = ["check_id", "severity", "subprocess", "relation", "kind", "controls_2022", "controls_2013", "ruleset_hash",
                   "incident_id", "status", "details", "evaluated_at", "first_failed_at", "due_at", "resolved_at"]


def insert_findings(findings: Sequence[tuple[Any, ...]]) -> None:
    """INSERT finding rows (``FINDING_COLUMNS``, encoded), in the caller's transaction.

    On PostgreSQL by COPY in text format, each line formatted here: a finding's first eight
    columns are its check's (``check_constants``), formatted once per check, and most of its
    times are the assessment's one time.
    """
    ft = Finding.__table__
    if db.engine.dialect.name != "postgresql":
        insert_encoded(ft, FINDING_COLUMNS, findings)
        return
    heads: dict[Any, str] = {}  # by check id: one ruleset (hash) per call
    times: dict[Any, str] = {None: copy_text_value(None)}
    lines = []
    for f in findings:
        head = heads.get(f[0])
        if head is None:
            head = heads[f[0]] = "".join(copy_text_value(v) + "\t" for v in f[:8])
        texts = []
        for at in f[11:]:
            text = times.get(at)
            if text is None:
                text = times[at] = copy_text_value(at)
            texts.append(text)
        lines.append(head + "\t".join((str(f[8]), copy_text_value(f[9]), copy_text_value(f[10]), *texts)) + "\n")
    copy_text(ft, FINDING_COLUMNS, lines)


def _fail_times(status: str, before: tuple[str, Any, Any] | None, encode_time: Any, evaluated_at: Any) -> tuple[Any, Any]:
    """(first_failed_at, resolved_at): an open gap keeps the time it opened; one that came to pass keeps both times,
    so that how many gaps were open at any past moment can be counted (the dashboard's trend)."""
    if status == FAIL:
        return (encode_time(before[1]) if before is not None and before[0] == FAIL else evaluated_at), None
    if status == PASS and before is not None:
        if before[0] == FAIL:
            return encode_time(before[1]), evaluated_at
        if before[0] == PASS and before[2] is not None:
            return encode_time(before[1]), encode_time(before[2])
    return None, None


def check_constants(check: Any, ruleset_hash: str) -> tuple[Any, ...]:
    """The columns every finding of ``check`` shares, encoded once."""
    return (check.id, check.severity, check.subprocess, check.relation, check.kind, _encoded_controls(check.controls_2022),
            _encoded_controls(check.controls_2013), ruleset_hash)


def _details_json(details: list[str]) -> str:
    return orjson.dumps(details).decode() if details else "[]"


def _gaps_event(incident_id: int, number: str | None, source: str | None, opened: list[str], closed: list[str],
                ruleset_hash: str) -> dict[str, Any]:
    """One audit event per incident whose gaps changed: which opened, which closed."""
    return {"action": "findings.changed", "subject_type": "incident", "subject_id": str(incident_id),
            "details": {"number": number, "source": source, "ruleset": ruleset_hash, "opened": opened, "closed": closed}}


@functools.lru_cache(maxsize=4096)
def _encoded_controls(controls: tuple[str, ...]) -> JsonText:
    return JsonText(orjson.dumps(list(controls)).decode())


ACROSS_BATCH = 2000  # incidents per batch of a check across incidents (a batch never splits a partition)


def _assess_across(ruleset: Ruleset, now: datetime, summary: AssessSummary) -> None:
    """Checks across incidents see every stored incident, streamed in bounded batches; only changed findings are written."""
    db.session.commit()  # the stream reads on its own connection: let it see everything stored so far
    stored = None
    for check in ruleset.across_checks:
        read = 0
        for batch in _across_batches(check):
            _store_across(ruleset, check, batch, now, summary)
            read += len(batch[0])
        db.session.commit()
        if stored is None:
            stored = db.session.scalar(sa.select(sa.func.count()).select_from(Incident.__table__)) or 0
        summary.statuses[NOT_APPLICABLE] += max(0, stored - read)  # those the stream passed over


# what _store_across compares a new outcome with: the check's finding stored for each incident that has one
_Stored = dict[int, "_StoredFinding"]


class _StoredFinding(NamedTuple):
    status: str
    details: Any
    first_failed_at: Any
    resolved_at: Any
    ruleset_hash: str


def _across_batches(check: Any) -> Iterator[tuple[list[int], list[dict[str, Any]], dict[str, dict[str, Any]] | None, _Stored]]:
    """(ids, incidents, referenced incidents by number, stored findings by incident) batches of every stored incident.

    Streamed in the order of the rule's partition, so that memory holds a batch (or one
    large partition), not the whole table. Each incident comes with the check's finding
    stored for it (an outer join on the findings' unique index), not read again per batch.
    """
    t = Incident.__table__.c
    rule = check.rule
    needed = sorted({"number", "source"} | set(check.fields))
    old = Finding.__table__.alias("old")
    kept = [old.c.status, old.c.details, old.c.first_failed_at, old.c.resolved_at, old.c.ruleset_hash]
    columns = [t.id, *(getattr(t, n) for n in needed), old.c.id.label("old_id"), *(c.label(f"old_{c.name}") for c in kept)]
    order = [*(getattr(t, f) for f in rule.partition_by), t.id]
    joined = Incident.__table__.outerjoin(old, sa.and_(old.c.incident_id == t.id, old.c.check_id == check.id))
    query = sa.select(*columns).select_from(joined).order_by(*order)
    candidates = _across_candidates(check)
    if candidates:  # the others are not applicable and count for no other: only a finding stored for one needs it read
        query = query.where(sa.or_(sa.and_(*candidates), old.c.id.is_not(None)))
    with db.engine.connect() as reader:
        rows = reader.execution_options(stream_results=True, yield_per=ACROSS_BATCH).execute(query)
        ids: list[int] = []
        incidents: list[dict[str, Any]] = []
        stored: _Stored = {}
        last_key: tuple[Any, ...] | None = None
        for row in rows:
            incident = canonical_subset(row, needed)
            key = rule.partition_key(incident)
            if len(ids) >= ACROSS_BATCH and (key is None or key != last_key):
                yield ids, incidents, _referenced(rule, incidents, needed), stored
                ids, incidents, stored = [], [], {}
            ids.append(row.id)
            incidents.append(incident)
            if row.old_id is not None:
                stored[row.id] = _StoredFinding(row.old_status, row.old_details, row.old_first_failed_at, row.old_resolved_at,
                                                row.old_ruleset_hash)
            last_key = key
        if ids:
            yield ids, incidents, _referenced(rule, incidents, needed), stored


def _across_candidates(check: Any) -> list[Any]:
    """SQL conditions met by every incident a check across incidents may apply to, or count in for another.

    Both rule types pass over an incident its ``applies_when`` rules out, and one without the
    rule's ``present_fields``: the stream reads only the others (at the demo's mix, half of all
    for a recurrence, one in fifty for an open weakness).
    """
    t = Incident.__table__.c
    out = [getattr(t, f).in_(sorted(values, key=repr)) for f, values in required_values(check.applies)]
    for name in check.rule.present_fields:
        kind = FIELDS[name]
        column = getattr(t, name)
        if kind == "list":
            # a list is stored as JSON, an empty one as [] (jsonb reads back so); any other text is read, and judged in Python
            out.append(sa.cast(column, sa.Text) != "[]")
        elif kind in ("datetime", "bool"):
            out.append(column.is_not(None))
        else:
            out.append(sa.and_(column.is_not(None), column != ""))
    return out


def _referenced(rule: Any, incidents: list[dict[str, Any]], needed: list[str]) -> dict[str, dict[str, Any]] | None:
    numbers = sorted(rule.references(incidents))
    if not numbers:
        return None
    t = Incident.__table__.c
    known: dict[str, dict[str, Any]] = {}
    for start in range(0, len(numbers), BATCH):
        for row in db.session.execute(sa.select(*(getattr(t, n) for n in needed)).where(
                t.number.in_(numbers[start:start + BATCH])).order_by(t.id)):
            known[row.number] = canonical_subset(row, needed)  # the last stored wins, as in a full scan
    return known


def _store_across(ruleset: Ruleset, check: Any,
                  batch: tuple[list[int], list[dict[str, Any]], dict[str, dict[str, Any]] | None, _Stored],
                  now: datetime, summary: AssessSummary) -> None:
    ids, incidents, known, before = batch
    outcomes = evaluate_across_detailed(check, incidents, now, known)
    ft = Finding.__table__
    some = one_of(ft.c.incident_id)
    encode_time = column_encoder(ft, "evaluated_at", db.engine.dialect.name)
    evaluated_at = encode_time(now)
    constants = check_constants(check, ruleset.hash)
    changed: list[tuple[Any, ...]] = []
    superseded: list[int] = []  # incidents whose stored finding of this check goes (not applicable now, or replaced)
    events = []
    for incident_id, incident, (status, details) in zip(ids, incidents, outcomes, strict=True):
        old = before.get(incident_id)
        if status == NOT_APPLICABLE:
            if old is not None:
                superseded.append(incident_id)
        elif old is not None and (old.status, list(old.details or []), old.ruleset_hash) == (status, details, ruleset.hash):
            continue
        else:
            first_failed, resolved = _fail_times(
                status, None if old is None else (old.status, old.first_failed_at, old.resolved_at), encode_time, evaluated_at)
            changed.append((*constants, incident_id, status, _details_json(details), evaluated_at, first_failed, None, resolved))
            if old is not None:
                superseded.append(incident_id)
        summary.statuses[status] += 1
        was_fail = old is not None and old.status == FAIL
        if (status == FAIL) != was_fail:
            summary.opened += status == FAIL
            summary.closed += status != FAIL
            events.append(_gaps_event(incident_id, incident.get("number"), incident.get("source"),
                                      [check.id] if status == FAIL else [], [] if status == FAIL else [check.id], ruleset.hash))
    for start in range(0, len(superseded), BATCH):
        db.session.execute(ft.delete().where(ft.c.check_id == check.id, some), {"ids": superseded[start:start + BATCH]})
    insert_findings(changed)
    refresh_outcome_masks(ruleset, sorted({f[FINDING_COLUMNS.index("incident_id")] for f in changed} | set(superseded)))
    audit.record_many(events)
