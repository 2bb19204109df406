"""Coverage: per control or ITIL sub-process, how the incidents in scope fared, and the population behind each number.

An incident counts once per control: failed if any of the control's gap checks fails on it (and no accepted
risk covers that failure), else accepted if an accepted risk covers a failure, else pending if a clock still
runs, else passed. It is not applicable when none of the control's checks applies to it. Improvements are
opportunities, not nonconformities: they never count against a control.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..extensions import db
from ..models import Finding, Incident
from ..rules.catalogue import EDITIONS
from ..rules.model import FAIL, GAP, PASS, PENDING, Ruleset
from . import controls as cq
from .acceptance import accepted_term
from .scope import Scope

OUTCOMES = ("failed", "accepted", "pending", "passed", "not_applicable")
# the worst outcome of an incident's findings under a control wins
_RANK = {"passed": 1, "pending": 2, "accepted": 3, "failed": 4}
_BY_RANK = {v: k for k, v in _RANK.items()}


@dataclass(frozen=True)
class Group:
    """A control (by its 2022 id) or a sub-process, and the gap checks that decide it; or a heatmap cell (sub-process ×
    control), decided by its checks' findings of either kind (a cell's checks are all gaps or all improvements)."""

    kind: str  # control | subprocess | cell
    key: str
    title: str
    checks: tuple[str, ...]
    edition: str = "2022"  # of a control's key


@dataclass
class Counts:
    group: Group
    in_scope: int = 0
    passed: int = 0
    failed: int = 0
    accepted: int = 0
    pending: int = 0
    not_applicable: int = 0


def control_groups(ruleset: Ruleset) -> list[Group]:
    by_control: dict[str, list[str]] = {}
    for check in ruleset.checks:
        if check.kind == GAP:
            for cid in check.controls_2022:
                by_control.setdefault(cid, []).append(check.id)
    out = []
    for cid in sorted(by_control, key=_control_order):
        control = ruleset.catalogue.get("2022", cid)
        out.append(Group("control", cid, control.title if control else "", tuple(by_control[cid])))
    return out


def subprocess_groups(ruleset: Ruleset) -> list[Group]:
    out = []
    for sid, sub in ruleset.subprocesses.items():
        checks = tuple(c.id for c in ruleset.checks if c.kind == GAP and c.subprocess == sid)
        out.append(Group("subprocess", sid, sub.name, checks))
    return out


def cell_groups(ruleset: Ruleset) -> list[Group]:
    """The heatmap's cells of both editions (as ``heatmap.layout`` draws them: a sub-process's checks testing the control,
    its gap checks when it has any) that are not a control's or a sub-process's group, once per set of checks.

    The heatmap reads a cell from these stored outcomes only when its checks are exactly one of these sets: a change in
    how it draws cells can make one counted from its findings, never miscounted.
    """
    stored = {frozenset(g.checks) for groups in (control_groups(ruleset), subprocess_groups(ruleset)) if len(groups) <= GROUPS_PER_MASK
              for g in groups}
    out: dict[frozenset[str], Group] = {}
    for edition in EDITIONS:
        for control in annex_a_controls(ruleset, edition):
            checks = cq.checks_of(ruleset, control)
            for sid in ruleset.subprocesses:
                deciding = frozenset(c.id for c in deciding_checks([c for c in checks if c.subprocess == sid]))
                if deciding and deciding not in stored and deciding not in out:
                    out[deciding] = Group("cell", "+".join(sorted(deciding)), f"{sid} × {control.id}", tuple(sorted(deciding)), edition)
    return list(out.values())


def annex_a_controls(ruleset: Ruleset, edition: str) -> list[Any]:
    """The Annex A controls of ``edition``, in the standard's order: the heatmap's columns."""
    annex_a = [c for c in ruleset.catalogue.controls[edition].values() if c.kind == "annex_a"]
    return sorted(annex_a, key=lambda c: _control_order(c.id))


def deciding_checks(mine: list[Any]) -> list[Any]:
    """Of a sub-process's checks testing a control, those that decide its heatmap cell: the gap checks, if it has any."""
    return [c for c in mine if c.kind == GAP] or mine


def _gap_findings(groups: list[Group]) -> list[sa.ColumnElement[bool]]:
    """Controls and sub-processes count gap findings only; a heatmap cell, its checks' findings of either kind."""
    kinds = {g.kind == "cell" for g in groups}
    assert len(kinds) <= 1, "cells and other groups are counted apart"
    return [] if kinds == {True} else [Finding.kind == GAP]


def _control_order(cid: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in cid.removeprefix("A.").split("."))


def outcome_rank(now: datetime | None) -> sa.ColumnElement[int]:
    """A finding's outcome as a rank (see _RANK); pass, fail and pending are the stored outcomes.

    With ``now`` None, acceptances are left out: a failed gap ranks as failed (the stored masks).
    """
    accepted = [(sa.and_(Finding.status == FAIL, accepted_term(now)), _RANK["accepted"])] if now is not None else []
    return sa.case(
        *accepted,
        (Finding.status == FAIL, _RANK["failed"]),
        (Finding.status == PENDING, _RANK["pending"]),
        else_=_RANK["passed"])


GROUPS_PER_MASK = 15  # 4 bits a group in a signed 64-bit integer


def _outcome_bits(groups: list[Group], now: datetime | None, name: str = "grp_checks") -> tuple[sa.CTE, sa.ColumnElement[int]]:
    """Each finding as one bit per group its check is in: bit 4 * (the group's place) + (the outcome's rank - 1).

    OR-ed over an incident's findings, the highest bit set in a group's four says the incident's outcome under
    that group: one aggregate over incidents instead of one row per incident and group, a third of the time.
    (check, bit offset) pairs are a small table expression: the hash join on it costs less than a CASE over
    the check ids on every row. SQLite has no bitwise aggregate: a sum of distinct single bits is their OR.
    """
    pairs = [(c, 4 * n) for n, g in enumerate(groups) for c in g.checks] or [("", 0)]
    if db.engine.dialect.name == "postgresql":
        # two arrays unnested: bound parameters, so SQLAlchemy keeps the compiled statement (VALUES it compiles every time)
        checks = sa.bindparam(f"{name}_ids", [c for c, _ in pairs], type_=postgresql.ARRAY(sa.String))
        offsets = sa.bindparam(f"{name}_offsets", [o for _, o in pairs], type_=postgresql.ARRAY(sa.Integer))
        table: Any = sa.func.unnest(checks, offsets).table_valued(
            sa.column("check_id", sa.String), sa.column("offset", sa.Integer)).render_derived()
        cte = sa.select(table.c.check_id, table.c.offset).cte(name)
    else:
        values = sa.values(sa.column("check_id", sa.String), sa.column("offset", sa.Integer), name=name).data(pairs)
        cte = values.cte(name)
    bit = sa.literal(1, sa.BigInteger).op("<<")(sa.cast(cte.c.offset + outcome_rank(now) - 1, sa.Integer))
    return cte, sa.func.bit_or(bit) if db.engine.dialect.name == "postgresql" else sa.func.sum(sa.distinct(bit))


def _analytic_memory() -> None:
    """Room for the per-incident step to sort in memory: PostgreSQL's default 4 MB spills a quarter's findings to disk.
    No JIT compilation: these aggregates run in tens of milliseconds, compiling them took 15 to 30 more. No parallel
    workers: at that size their start-up and their copies of a hashed subplan (each builds its own) cost more than they
    share, and a page's queries run beside other requests on the same cores (a third faster, 100,000 incidents).

    SET LOCAL lasts until the end of this transaction (the request), not for the connection.
    """
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text("SET LOCAL work_mem = '32MB'"))
        db.session.execute(sa.text("SET LOCAL jit = off"))
        db.session.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))


def in_scope_total(scope: Scope) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Incident).where(*scope.conditions())) or 0


MASK_COLUMNS = ("control_outcomes", "subprocess_outcomes", "cell_outcomes")
_LAYOUTS: dict[str, dict[str, list[Group]]] = {}


def layouts(ruleset: Ruleset) -> dict[str, list[Group]]:
    """The groups whose outcomes each incident stores (Incident.control_outcomes, .subprocess_outcomes, .cell_outcomes),
    in bit order; per ruleset (its hash), as the masks stored under it."""
    found = _LAYOUTS.get(ruleset.hash)
    if found is None:
        found = _LAYOUTS[ruleset.hash] = dict(zip(MASK_COLUMNS, (control_groups(ruleset), subprocess_groups(ruleset), cell_groups(ruleset)),
                                                  strict=True))
    return found


MASK_RANK = {PASS: _RANK["passed"], PENDING: _RANK["pending"], FAIL: _RANK["failed"]}
_MASK_BITS: dict[str, dict[str, list[tuple[int, int]]]] = {}


def mask_bits(ruleset: Ruleset) -> dict[str, list[tuple[int, int]]]:
    """check id -> [(stored column's place in ``layouts``, the bit offset of a group it is in)], for the masks written
    in Python from outcomes in hand (the sync's hot path); a layout too large for one integer is left out (0)."""
    found = _MASK_BITS.get(ruleset.hash)
    if found is None:
        found = {}
        for place, groups in enumerate(layouts(ruleset).values()):
            if len(groups) <= GROUPS_PER_MASK:
                for n, g in enumerate(groups):
                    for c in g.checks:
                        found.setdefault(c, []).append((place, 4 * n))
        _MASK_BITS[ruleset.hash] = found
    return found


def stored_masks(ruleset: Ruleset) -> dict[str, sa.ColumnElement[Any] | None]:
    """Per stored column, the mask of one incident's findings (correlated on Incident), acceptances left out.

    None where the ruleset has more groups than one integer holds: coverage then aggregates the findings.
    """
    out: dict[str, sa.ColumnElement[Any] | None] = {}
    for column, groups in layouts(ruleset).items():
        if len(groups) > GROUPS_PER_MASK:
            out[column] = None
            continue
        cte, mask = _outcome_bits(groups, None, f"{column}_checks")
        out[column] = sa.func.coalesce(
            sa.select(mask).select_from(Finding).join(cte, cte.c.check_id == Finding.check_id)
            .where(Finding.incident_id == Incident.id, *_gap_findings(groups), Finding.status.in_([PASS, FAIL, PENDING]))
            .scalar_subquery(), 0)
    return out


def _nibble_counts(mask: Any, positions: list[int]) -> list[Any]:
    """For each group position, four counts: incidents whose highest bit in that group's nibble is rank 1, 2, 3, 4."""
    columns: list[Any] = []
    for n in positions:
        # the shift count typed as an integer: PostgreSQL has bigint >> int, not bigint >> bigint
        nibble = mask.op(">>")(sa.literal(4 * n, sa.Integer)).op("&")(15)
        # the highest bit set is rank r when the nibble lies in [2^(r-1), 2^r)
        columns += [sa.func.count().filter(sa.and_(nibble >= 1 << (r - 1), nibble < 1 << r)) for r in range(1, 5)]
    return columns


def _add(counts: list[Counts], row: Any) -> None:
    for n, c in enumerate(counts):
        for r in range(1, 5):
            setattr(c, _BY_RANK[r], getattr(c, _BY_RANK[r]) + (row[4 * n + r - 1] or 0))


def _live(groups: list[Group], counts: list[Counts], scope: Scope, now: datetime, *where: sa.ColumnElement[bool]) -> None:
    """Aggregate the findings themselves (accepted risks applied) into ``counts``; cells apart from other groups."""
    for cells in (True, False):
        mine = [n for n, g in enumerate(groups) if (g.kind == "cell") is cells]
        for start in range(0, len(mine), GROUPS_PER_MASK):
            chunk = [groups[n] for n in mine[start:start + GROUPS_PER_MASK]]
            cte, mask = _outcome_bits(chunk, now)
            per_incident = (
                sa.select(mask.label("mask")).select_from(Finding)
                .join(Incident, Incident.id == Finding.incident_id)
                .join(cte, cte.c.check_id == Finding.check_id)
                .where(*_gap_findings(chunk), Finding.status.in_([PASS, FAIL, PENDING]), *scope.conditions(), *where)
                .group_by(Finding.incident_id)
            ).subquery()
            _add([counts[n] for n in mine[start:start + GROUPS_PER_MASK]],
                 db.session.execute(sa.select(*_nibble_counts(per_incident.c.mask, list(range(len(chunk)))))).one())


def _stored_places(ruleset: Ruleset | None, groups: list[Group]) -> list[tuple[str, int] | None]:
    """Per group, (the stored column, its bit position there) when it is a group of a stored layout; else None."""
    if ruleset is None:
        return [None] * len(groups)
    place: dict[tuple[str, str, tuple[str, ...]], tuple[str, int]] = {}
    for column, layout in layouts(ruleset).items():
        if len(layout) <= GROUPS_PER_MASK:
            for n, g in enumerate(layout):
                place.setdefault((g.kind, g.key, g.checks), (column, n))
    return [place.get((g.kind, g.key, g.checks)) for g in groups]


def _accepted_instead_of_failed(layout: list[Group], positions: list[int], counts: list[Counts], scope: Scope,
                                accepted: sa.ColumnElement[bool], current: sa.ColumnElement[bool]) -> None:
    """The stored outcomes leave acceptances out: move an incident from failed to accepted under a group when an
    acceptance in force (``accepted``, as ``accepted_term``) covers every failed gap it has there. Only failed findings
    are read, and only when some acceptance is in force.
    """
    if isinstance(accepted, sa.sql.elements.False_):
        return
    cte, _ = _outcome_bits(layout, None, "accepted_checks")
    group_bit = sa.literal(1, sa.BigInteger).op("<<")(sa.cast(cte.c.offset, sa.Integer))
    uncovered = sa.case((accepted, None), else_=group_bit)
    if db.engine.dialect.name == "postgresql":
        failing, unaccepted = sa.func.bit_or(group_bit), sa.func.coalesce(sa.func.bit_or(uncovered), 0)
    else:  # no bitwise aggregate: a sum of distinct single bits is their OR
        failing, unaccepted = sa.func.sum(sa.distinct(group_bit)), sa.func.coalesce(sa.func.sum(sa.distinct(uncovered)), 0)
    # only incidents with a failed gap some acceptance covers: few, where acceptances are few and narrow
    kinds = _gap_findings(layout)
    covered = (sa.select(Finding.incident_id).join(Incident, Incident.id == Finding.incident_id)
               .where(*kinds, Finding.status == FAIL, accepted, *scope.conditions(), current))
    rows = db.session.execute(
        sa.select(failing, unaccepted).select_from(Finding)
        .join(Incident, Incident.id == Finding.incident_id).join(cte, cte.c.check_id == Finding.check_id)
        .where(*kinds, Finding.status == FAIL, Finding.incident_id.in_(covered))
        .group_by(Finding.incident_id).having(failing != unaccepted)).all()
    for all_failed, still_failed in rows:
        for c, n in zip(counts, positions, strict=True):
            bit = 1 << (4 * n)
            if all_failed & bit and not still_failed & bit:
                c.failed -= 1
                c.accepted += 1


def coverage(groups: list[Group], scope: Scope, now: datetime, ruleset: Ruleset | None = None) -> list[Counts]:
    """One row per group: incidents in scope and how they fared, always from what is stored now.

    Given the ruleset, the standard groups read the outcome masks each incident stores with its findings (written in
    the same transaction, so never behind a sync), every stored column in one pass; acceptances in force are applied
    from the failed findings; incidents assessed under other mappings are aggregated from their findings, as are other
    groups (a 2013 control's).
    """
    return coverage_and_tallies(groups, scope, now, ruleset, {})[0]


def coverage_and_tallies(groups: list[Group], scope: Scope, now: datetime, ruleset: Ruleset | None,
                         tallies: dict[str, sa.ColumnElement[bool]]) -> tuple[list[Counts], int, dict[str, int]]:
    """``coverage``, the incidents in scope and, per tally, those of them it holds true for: counted in the same
    pass over the incidents (a page that wants both pays one)."""
    counts = [Counts(g) for g in groups]
    tallied = dict.fromkeys(tallies, 0)
    extra = [sa.func.count().filter(term) for term in tallies.values()]
    _analytic_memory()
    places = _stored_places(ruleset, groups)
    if any(p is None for p in places):
        live = [n for n, p in enumerate(places) if p is None]
        _live([groups[n] for n in live], [counts[n] for n in live], scope, now)
    columns = [c for c in MASK_COLUMNS if any(p is not None and p[0] == c for p in places)]
    if ruleset is None or not columns:
        total, *values = db.session.execute(sa.select(sa.func.count(), *extra).select_from(Incident).where(*scope.conditions())).one()
        tallied = {name: int(v or 0) for name, v in zip(tallies, values, strict=True)}
    else:
        current = {c: sa.and_(Incident.assessed_ruleset == ruleset.hash, getattr(Incident, c).is_not(None)) for c in columns}
        masks = [sa.case((current[c], getattr(Incident, c)), else_=None) for c in columns]
        of_column = {c: [(counts[n], p[1]) for n, p in enumerate(places) if p is not None and p[0] == c] for c in columns}
        # incidents share few distinct outcome masks: count them by mask and decode here
        total = 0
        stale = dict.fromkeys(columns, 0)
        width = len(columns)
        for row in db.session.execute(sa.select(*masks, sa.func.count(), *extra).where(*scope.conditions()).group_by(*masks)):
            stored, n = row[:width], row[width]
            total += n
            for name, v in zip(tallies, row[width + 1:], strict=True):
                tallied[name] += v
            for column, mask in zip(columns, stored, strict=True):
                if mask is None:
                    stale[column] += n
                    continue
                for c, position in of_column[column]:
                    nibble = (mask >> (4 * position)) & 15
                    if nibble:
                        rank = nibble.bit_length()
                        setattr(c, _BY_RANK[rank], getattr(c, _BY_RANK[rank]) + n)
        accepted = accepted_term(now)
        for column in columns:
            mine = of_column[column]
            if stale[column]:  # assessed under other mappings, or before the masks existed: from their findings
                _live([c.group for c, _ in mine], [c for c, _ in mine], scope, now, ~current[column])
            _accepted_instead_of_failed(layouts(ruleset)[column], [p for _, p in mine], [c for c, _ in mine], scope, accepted,
                                        current[column])
    for c in counts:
        c.in_scope = c.passed + c.pending + c.accepted + c.failed
        c.not_applicable = total - c.in_scope
    return counts, int(total or 0), tallied


@dataclass(frozen=True)
class Member:
    """One incident of a population, with its outcome under the group and each applicable check's."""

    incident: Incident
    outcome: str
    checks: dict[str, str]  # check id -> passed | failed | accepted | pending


def population(group: Group, scope: Scope, now: datetime, outcome: str | None, after: int, limit: int) -> list[Member]:
    """The incidents behind a coverage number, by id: those with ``outcome`` (all in scope when None)."""
    _analytic_memory()  # no JIT: compiling took longer than reading a page of incidents
    rank = outcome_rank(now)
    checks = list(group.checks) or [""]
    if outcome == "not_applicable":
        has_any = sa.exists().where(Finding.incident_id == Incident.id, Finding.check_id.in_(checks),
                                    Finding.status.in_([PASS, FAIL, PENDING]))
        q = (sa.select(Incident.id, sa.literal(0)).where(*scope.conditions(), ~has_any, Incident.id > after)
             .order_by(Incident.id).limit(limit))
    else:
        q = (sa.select(Finding.incident_id, sa.func.max(rank).label("worst"))
             .join(Incident, Incident.id == Finding.incident_id)
             .where(Finding.check_id.in_(checks), Finding.status.in_([PASS, FAIL, PENDING]), *scope.conditions(),
                    Finding.incident_id > after)
             .group_by(Finding.incident_id).order_by(Finding.incident_id).limit(limit))
        if outcome is not None:
            q = q.having(sa.func.max(rank) == _RANK[outcome])
    page = db.session.execute(q).all()
    ids = [r[0] for r in page]
    if not ids:
        return []
    incidents = {i.id: i for i in db.session.execute(sa.select(Incident).where(Incident.id.in_(ids))).scalars()}
    per_check: dict[int, dict[str, str]] = {}
    for incident_id, check_id, r in db.session.execute(
            sa.select(Finding.incident_id, Finding.check_id, rank).join(Incident, Incident.id == Finding.incident_id)
            .where(Finding.incident_id.in_(ids), Finding.check_id.in_(checks), Finding.status.in_([PASS, FAIL, PENDING]))):
        per_check.setdefault(incident_id, {})[check_id] = _BY_RANK[r]
    return [Member(incidents[i], "not_applicable" if w == 0 else _BY_RANK[w], per_check.get(i, {})) for i, w in page]
