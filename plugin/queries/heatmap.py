"""The heatmap: ITIL sub-processes (rows) by Annex A controls of one edition (columns), for a scope.

A cell holds the checks of its sub-process that test its control (a 2013 control: those of its 2022 counterparts
and its own, as the coverage of a 2013 id counts them). Its gap checks decide it when it has any, as coverage
decides a control: improvements never count against a control. A pair with only improvement checks is an
``improvement`` cell: its failing incidents are opportunities, never open gaps. A pair with no check has no cell.

Per cell, each incident counts once, by the worst outcome of the cell's checks on it (coverage's order): failing
(a failed gap no risk acceptance in force covers: an open gap), accepted, pending, passed; applicable when any of
the checks applies to it. ``relation`` is what the mappings say of the pair: the sub-process's own relation to the
control in subprocesses.yaml, else the relation its checks declare, else a relation to no specific sub-process.

Counting reads the outcome masks incidents store for the cells whose checks are exactly a stored group (a control
whose checks all lie in one sub-process, a sub-process whose checks all test one control, or one of the other cells
coverage keeps masks for; one pass over the incidents); the other cells are
aggregated from their checks' findings: the cells of one check in one query grouped by check, the others 15 cells
per query: a few grouped queries whatever the number of cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError

from ..extensions import db
from ..models import Finding, Incident
from ..rules.catalogue import EDITIONS
from ..rules.model import FAIL, GAP, IMPROVEMENT, PASS, PENDING, Check, Ruleset
from . import controls as cq
from . import coverage as cov
from .scope import Scope

# when several relations name one pair, the most demanding is shown
RELATION_ORDER = ("gap", "covered", "improvement")


@dataclass(frozen=True)
class Row:
    id: str
    name: str


@dataclass(frozen=True)
class Column:
    id: str  # in the heatmap's edition
    title: str
    ids_2022: tuple[str, ...]
    ids_2013: tuple[str, ...]


@dataclass
class Cell:
    subprocess: str
    control: str  # an id of ``edition``
    edition: str
    checks: tuple[str, ...]
    kind: str  # gap | improvement (only improvement checks)
    relation: str  # covered | gap | improvement
    rationale: str = ""
    applicable: int = 0
    failing: int = 0  # the population's outcome "failed"
    accepted: int = 0
    pending: int = 0
    passed: int = 0

    @property
    def share_failing(self) -> float | None:
        """Failing over applicable; None when no incident in scope is applicable."""
        return self.failing / self.applicable if self.applicable else None

    @property
    def group(self) -> cov.Group:
        """The cell as a coverage group: what ``coverage.population`` lists the incidents of."""
        return cov.Group("cell", f"{self.subprocess}:{self.control}", f"{self.subprocess} × {self.control}", self.checks, self.edition)


@dataclass
class Heatmap:
    edition: str
    scope: Scope
    as_of: datetime
    ruleset: str  # the hash of the mappings
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)  # (sub-process, control) -> cell
    incidents_in_scope: int = 0

    def cell(self, subprocess: str, control: str) -> Cell | None:
        return self.cells.get((subprocess, control))


def _relation(ruleset: Ruleset, subprocess: str, ids_2022: Sequence[str], checks: Sequence[Check]) -> tuple[str, str]:
    """(relation, rationale) of a pair: the sub-process's own, else its checks', else one for no specific sub-process."""
    own = [r for r in ruleset.relations if r.subprocess == subprocess and r.control in ids_2022]
    if own:
        best = min(own, key=lambda r: RELATION_ORDER.index(r.relation))
        return best.relation, best.rationale
    declared = [c.relation for c in checks if c.relation in RELATION_ORDER]
    if declared:
        return min(declared, key=RELATION_ORDER.index), ""
    general = [r for r in ruleset.relations if r.subprocess is None and r.control in ids_2022]
    if general:
        best = min(general, key=lambda r: RELATION_ORDER.index(r.relation))
        return best.relation, best.rationale
    return "covered", ""


def _edition(edition: str) -> str:
    if edition not in EDITIONS:
        raise ValidationError({"edition": [f"expected one of {', '.join(EDITIONS)}, got {edition!r}"]})
    return edition


def layout(ruleset: Ruleset, edition: str = "2022") -> tuple[list[Row], list[Column], list[Cell]]:
    """The rows (every sub-process), the columns (Annex A controls some check tests) and the cells, counts at 0."""
    _edition(edition)
    rows = [Row(sid, sub.name) for sid, sub in ruleset.subprocesses.items()]
    columns: list[Column] = []
    cells: list[Cell] = []
    for control in cov.annex_a_controls(ruleset, edition):
        checks = cq.checks_of(ruleset, control)
        if not checks:
            continue
        ids22, ids13 = cq.crosswalk(ruleset, control)
        columns.append(Column(control.id, control.title, tuple(ids22), tuple(ids13)))
        for row in rows:
            mine = [c for c in checks if c.subprocess == row.id]
            deciding = cov.deciding_checks(mine)
            if not deciding:
                continue
            relation, rationale = _relation(ruleset, row.id, ids22, mine)
            cells.append(Cell(row.id, control.id, edition, tuple(c.id for c in deciding),
                              GAP if deciding[0].kind == GAP else IMPROVEMENT, relation, rationale))
    return rows, columns, cells


def find_cell(ruleset: Ruleset, subprocess: str, control: str, edition: str = "2022") -> Cell:
    """The cell of a sub-process and a control id of ``edition`` (counts at 0); a ValidationError naming the field if none."""
    _, columns, cells = layout(ruleset, edition)
    if subprocess not in ruleset.subprocesses:
        raise ValidationError({"subprocess": [f"unknown sub-process {subprocess!r}; expected one of {', '.join(ruleset.subprocesses)}"]})
    if all(c.id != control for c in columns):
        raise ValidationError({"control": [f"no check tests {control!r} (ISO/IEC 27001:{edition} Annex A ids such as "
                                           f"{columns[0].id if columns else 'A.5.28'})"]})
    for cell in cells:
        if cell.subprocess == subprocess and cell.control == control:
            return cell
    raise ValidationError({"control": [f"no check of {subprocess} tests {control}: the heatmap has no such cell"]})


def heatmap(ruleset: Ruleset, scope: Scope, now: datetime, edition: str = "2022") -> Heatmap:
    """Every cell of ``edition`` counted over the incidents of ``scope``, risk acceptances in force at ``now`` applied."""
    rows, columns, cells = layout(ruleset, edition)
    out = Heatmap(edition, scope, now, ruleset.hash, rows, columns, {(c.subprocess, c.control): c for c in cells})
    # a cell whose checks are those of a stored group reads the masks; several cells may share one group. Coverage reads
    # every stored column in one pass; a gap cell may be a control's or a sub-process's group, any cell one of the cells'
    # (coverage.cell_groups, improvement cells too: no control or sub-process group holds an improvement)
    stored: dict[frozenset[str], cov.Group] = {}
    for groups in cov.layouts(ruleset).values():
        if len(groups) <= cov.GROUPS_PER_MASK:
            for g in groups:
                stored.setdefault(frozenset(g.checks), g)
    from_masks: dict[cov.Group, list[Cell]] = {}
    live: list[Cell] = []
    for cell in cells:
        group = stored.get(frozenset(cell.checks))
        if group is None:
            live.append(cell)
        else:
            from_masks.setdefault(group, []).append(cell)
    total: int | None = None
    if from_masks:
        for counts in cov.coverage(list(from_masks), scope, now, ruleset):
            total = counts.in_scope + counts.not_applicable
            for cell in from_masks[counts.group]:
                cell.passed, cell.pending, cell.accepted, cell.failing = counts.passed, counts.pending, counts.accepted, counts.failed
                cell.applicable = counts.in_scope
    _count_live(live, scope, now)
    out.incidents_in_scope = cov.in_scope_total(scope) if total is None else total
    return out


def _count_live(cells: list[Cell], scope: Scope, now: datetime) -> None:
    """Aggregate the cells' findings (any kind: a cell's checks are of one kind), acceptances applied.

    A cell of one check needs no step per incident (an incident has one finding per check): its outcomes are counted
    per check in one grouped query. The others take coverage's bit masks, 15 cells a query.
    """
    if not cells:
        return
    cov._analytic_memory()
    singles = [c for c in cells if len(c.checks) == 1]
    if singles:
        rank = cov.outcome_rank(now)
        counted: dict[tuple[str, int], int] = {}
        for check_id, r, n in db.session.execute(
                sa.select(Finding.check_id, rank, sa.func.count()).join(Incident, Incident.id == Finding.incident_id)
                .where(Finding.status.in_([PASS, FAIL, PENDING]), Finding.check_id.in_(sorted({c.checks[0] for c in singles})),
                       *scope.conditions())
                .group_by(Finding.check_id, rank)):
            counted[(check_id, int(r))] = int(n)
        for cell in singles:
            cell.passed, cell.pending, cell.accepted, cell.failing = (counted.get((cell.checks[0], r), 0) for r in range(1, 5))
            cell.applicable = cell.passed + cell.pending + cell.accepted + cell.failing
    several = [c for c in cells if len(c.checks) > 1]
    for start in range(0, len(several), cov.GROUPS_PER_MASK):
        chunk = several[start:start + cov.GROUPS_PER_MASK]
        cte, mask = cov._outcome_bits([c.group for c in chunk], now, "heatmap_checks")
        checks = sorted({check for c in chunk for check in c.checks})
        per_incident = (
            sa.select(mask.label("mask")).select_from(Finding)
            .join(Incident, Incident.id == Finding.incident_id)
            .join(cte, cte.c.check_id == Finding.check_id)
            # the list lets the planner read only these checks' findings (status, check_id index)
            .where(Finding.status.in_([PASS, FAIL, PENDING]), Finding.check_id.in_(checks), *scope.conditions())
            .group_by(Finding.incident_id)
        ).subquery()
        row: Any = db.session.execute(sa.select(*cov._nibble_counts(per_incident.c.mask, list(range(len(chunk)))))).one()
        for n, cell in enumerate(chunk):
            cell.passed, cell.pending, cell.accepted, cell.failing = (int(row[4 * n + r] or 0) for r in range(4))
            cell.applicable = cell.passed + cell.pending + cell.accepted + cell.failing


def cell_population(ruleset: Ruleset, subprocess: str, control: str, scope: Scope, now: datetime, *, edition: str = "2022",
                    outcome: str | None = None, after: int = 0, limit: int = 100) -> list[cov.Member]:
    """The incidents behind a cell, by id after ``after``: those with ``outcome`` (failed, accepted, pending, passed,
    not_applicable), every one in scope when None; each with its ticket and each applicable check's outcome."""
    if outcome is not None and outcome not in cov.OUTCOMES:
        raise ValidationError({"outcome": [f"expected one of {', '.join(cov.OUTCOMES)}"]})
    return cov.population(find_cell(ruleset, subprocess, control, edition).group, scope, now, outcome, after, limit)
