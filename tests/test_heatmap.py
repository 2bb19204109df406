"""The heatmap (sub-process × control), against a count done here over the stored findings and acceptances."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from marshmallow import ValidationError

from plugin.extensions import db
from plugin.models import Finding, Incident, RiskAcceptance, utcnow
from plugin.queries import coverage as cov
from plugin.queries.acceptance import matches
from plugin.queries.heatmap import cell_population, find_cell, heatmap, layout
from plugin.queries.scope import Scope
from plugin.rules.model import FAIL, GAP, PASS, PENDING
from plugin.schemas.common import parse_period
from plugin.services import risk
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .conftest import NOW
from .fakes import FakeConnector, FakeTicketing

D = timedelta(days=1)
RANK = {"passed": 1, "pending": 2, "accepted": 3, "failed": 4}


def varied(count: int, seed: int = 11) -> FakeTicketing:
    """Incidents, events and weaknesses over a year, each missing something at random, so every check passes and fails."""
    rng = random.Random(seed)
    tool = FakeTicketing(count)
    for i, t in enumerate(tool.tickets.values()):
        # a tenth opened hours before the sync (which assesses at the real time): their clocks still run (pending)
        opened = utcnow() - timedelta(hours=rng.randint(2, 60)) if i % 10 == 0 else NOW - rng.randint(3, 330) * D
        closed = rng.random() < 0.75
        t["canonical"] = {
            "opened_at": opened, "severity": rng.choice(["critical", "high", "medium", "low"]),
            "record_type": rng.choice(["incident"] * 6 + ["event", "weakness"]),
            "business_unit": rng.choice(["Finance", "Sales", "IT"]),
            "state": rng.choice(["closed", "resolved"]) if closed else rng.choice(["new", "in_progress", "on_hold"]),
            "resolved_at": opened + rng.randint(1, 40) * D if closed else None,
            "closed_at": opened + 41 * D if closed else None,
            "assessed_at": opened + timedelta(hours=rng.randint(1, 80)) if rng.random() < 0.8 else None,
            "contained_at": opened + timedelta(hours=rng.randint(1, 90)) if rng.random() < 0.8 else None,
            "root_cause": "cause" if rng.random() < 0.7 else None,
            "lessons_learned": "lesson" if rng.random() < 0.6 else None,
            "personal_data_breach": rng.random() < 0.2, "major_incident": rng.random() < 0.1,
            "notifications": [] if rng.random() < 0.4 else [{"to": "reporter", "at": opened + 2 * D, "channel": "email"}],
            "weakness_refs": ["VUL1"] if rng.random() < 0.5 else [],
        }
        t["security"] = rng.random() < 0.8
        t["evidence"] = rng.random() < 0.5
    return tool


@pytest.fixture
def heat_app(app_factory: Any) -> Any:
    app = app_factory(mappings={"regulatory": ["gdpr", "nis2"]})
    with app.app_context():
        sync_source(FakeConnector(varied(260)), ruleset=gapbridge().ruleset)
        db.session.remove()
    return app


def accept(check_id: str, scope: dict[str, str] | None = None, incident_id: int | None = None, days: int = 30) -> RiskAcceptance:
    return risk.accept(check_id, scope=scope, incident_id=incident_id, justification="Compensating control: a weekly manual review",
                       approver="CISO", expires_at=NOW + days * D, actor="test", ruleset=gapbridge().ruleset, max_days=365, now=NOW)


def expected_pairs(edition: str) -> dict[tuple[str, str], set[str]]:
    """(sub-process, control) -> the checks deciding it, from each check's own controls and the catalogue's `was`."""
    ruleset = gapbridge().ruleset
    pairs: dict[tuple[str, str], list[Any]] = {}
    for check in ruleset.checks:
        if edition == "2022":
            ids = set(check.controls_2022)
        else:
            ids = set(check.controls_2013) | {w for c in check.controls_2022 for w in ruleset.catalogue.predecessors(c)}
        for cid in ids:
            if cid.startswith("A."):
                pairs.setdefault((check.subprocess, cid), []).append(check)
    out = {}
    for key, checks in pairs.items():
        gaps = {c.id for c in checks if c.kind == GAP}
        out[key] = gaps or {c.id for c in checks}
    return out


def counted(checks: set[str], wanted: Callable[[Incident], bool], now: datetime) -> dict[str, set[int]]:
    """outcome -> incident ids, by the worst outcome of ``checks`` on each incident in scope (acceptances matched in Python)."""
    acceptances = db.session.execute(sa.select(RiskAcceptance)).scalars().all()
    incidents = {i.id: i for i in db.session.execute(sa.select(Incident).where(Incident.assessed_ruleset.is_not(None))).scalars()
                 if wanted(i)}
    worst: dict[int, str] = {}
    for f in db.session.execute(sa.select(Finding).where(Finding.check_id.in_(checks))).scalars():
        inc = incidents.get(f.incident_id)
        if inc is None or f.status not in (PASS, FAIL, PENDING):
            continue
        outcome = {PASS: "passed", PENDING: "pending", FAIL: "failed"}[f.status]
        if f.status == FAIL and any(matches(a, f.check_id, inc, now) for a in acceptances):
            outcome = "accepted"
        if RANK[outcome] > RANK.get(worst.get(inc.id, ""), 0):
            worst[inc.id] = outcome
    out: dict[str, set[int]] = {k: set() for k in RANK}
    for incident_id, outcome in worst.items():
        out[outcome].add(incident_id)
    out["not_applicable"] = set(incidents) - set(worst)
    return out


def assert_heatmap_matches(scope: Scope, wanted: Callable[[Incident], bool], now: datetime, edition: str) -> Any:
    heat = heatmap(gapbridge().ruleset, scope, now, edition)
    pairs = expected_pairs(edition)
    assert {k: set(c.checks) for k, c in heat.cells.items()} == pairs
    for key, cell in heat.cells.items():
        got = counted(set(cell.checks), wanted, now)
        assert (cell.failing, cell.accepted, cell.pending, cell.passed) == (
            len(got["failed"]), len(got["accepted"]), len(got["pending"]), len(got["passed"])), key
        assert cell.applicable == sum(len(got[k]) for k in RANK)
        assert heat.incidents_in_scope == cell.applicable + len(got["not_applicable"])
    return heat


@pytest.mark.parametrize("edition", ["2022", "2013"])
def test_every_cell_equals_a_count_over_the_findings(heat_app: Any, edition: str) -> None:
    with heat_app.app_context():
        heat = assert_heatmap_matches(Scope(), lambda i: True, NOW, edition)
        assert sum(c.failing for c in heat.cells.values()) > 20 and any(c.pending for c in heat.cells.values())
        assert [r.id for r in heat.rows] == list(gapbridge().ruleset.subprocesses)
        assert all(c.id.startswith("A.") for c in heat.columns)  # Annex A only: clause 5.3 is not a column


def test_the_relation_comes_from_the_mappings(heat_app: Any) -> None:
    with heat_app.app_context():
        heat = heatmap(gapbridge().ruleset, Scope(), NOW)
        resolution_evidence = heat.cell("resolution", "A.5.28")
        assert resolution_evidence is not None and resolution_evidence.relation == "gap" and resolution_evidence.kind == GAP
        assert "forensic" in resolution_evidence.rationale  # subprocesses.yaml's own words for the pair
        closure = heat.cell("closure", "A.5.26")
        assert closure is not None and closure.relation == "covered" and closure.checks == ("CLOSE-001",)  # improvements left out
        logging_improvement = heat.cell("monitoring", "A.8.15")
        assert logging_improvement is not None and (logging_improvement.relation, logging_improvement.kind) == ("improvement", "improvement")
        assert heat.cell("support", "A.5.28") is None  # no check: no cell, not 0%
        assert heat.cell("resolution", "A.8.8") is not None and heat.cell("resolution", "A.8.8").relation == "gap"  # type: ignore[union-attr]
        old = heatmap(gapbridge().ruleset, Scope(), NOW, "2013")
        # one 2022 control, two 2013 ones: the event and the weakness reporting both show REPT-001
        assert old.cell("user_info", "A.16.1.2").checks == old.cell("user_info", "A.16.1.3").checks == ("REPT-001",)  # type: ignore[union-attr]
        assert {c.id for c in old.columns} >= {"A.16.1.7", "A.16.1.5", "A.12.6.1", "A.18.2.3"}
        assert old.cell("user_info", "A.16.1.2").relation == "gap"  # type: ignore[union-attr]


def test_an_acceptance_in_force_moves_failing_to_accepted_and_back_when_expired(heat_app: Any) -> None:
    with heat_app.app_context():
        scope = Scope()
        before = heatmap(gapbridge().ruleset, scope, NOW)
        evidence = before.cell("resolution", "A.5.28")
        assert evidence is not None and evidence.failing > 3 and evidence.accepted == 0
        accept("EVID-001", scope={"business_unit": "Finance"}, days=30)
        # and one incident's failed RESP-001 (a cell counted from the findings, not the stored outcomes)
        one = db.session.scalar(sa.select(Finding.incident_id).where(Finding.check_id == "RESP-001", Finding.status == FAIL)
                                .order_by(Finding.incident_id).limit(1))
        assert one is not None
        accept("RESP-001", incident_id=one, days=60)
        for edition in ("2022", "2013"):
            during = assert_heatmap_matches(scope, lambda i: True, NOW, edition)
        during = heatmap(gapbridge().ruleset, scope, NOW)
        moved = during.cell("resolution", "A.5.28")
        assert moved is not None and moved.accepted > 0 and moved.failing < evidence.failing
        assert moved.failing + moved.accepted == evidence.failing + evidence.accepted  # none lost, none added
        response = during.cell("resolution", "A.5.26")
        assert response is not None and response.accepted >= 1
        # 40 days on, the scope acceptance has expired: its gaps fail again; the one on a single incident still holds
        later = NOW + 40 * D
        after = assert_heatmap_matches(scope, lambda i: True, later, "2022")
        again = after.cell("resolution", "A.5.28")
        assert again is not None and (again.failing, again.accepted) == (evidence.failing, 0)
        assert after.cell("resolution", "A.5.26").accepted == response.accepted  # type: ignore[union-attr]


def test_filters_narrow_every_cell(heat_app: Any) -> None:
    with heat_app.app_context():
        accept("EVID-001", scope={"business_unit": "Finance"})
        period = parse_period(f"{(NOW - 100 * D):%Y-%m}")
        cases = [
            (Scope(business_unit="Sales"), lambda i: i.business_unit == "Sales"),
            (Scope(severity="high", record_type="incident"), lambda i: i.severity == "high" and i.record_type == "incident"),
            (Scope(start=period.start, end=period.end, label=period.label), lambda i: period.start <= i.opened_at < period.end),
            (Scope(start=period.start, end=NOW, by="closed_at"),
             lambda i: i.closed_at is not None and period.start <= i.closed_at < NOW),
            (Scope(source="nowhere"), lambda i: False),
        ]
        for scope, wanted in cases:
            for edition in ("2022", "2013"):
                heat = assert_heatmap_matches(scope, wanted, NOW, edition)
            if scope.source == "nowhere":
                assert heat.incidents_in_scope == 0 and all(c.share_failing is None for c in heat.cells.values())
                assert heat.cells  # the cells exist (the mappings have checks), with nothing applicable


def test_incidents_whose_stored_outcomes_are_missing_are_counted_from_their_findings(heat_app: Any) -> None:
    with heat_app.app_context():
        first = heatmap(gapbridge().ruleset, Scope(), NOW)
        db.session.execute(sa.update(Incident).where(Incident.id % 3 == 0).values(control_outcomes=None, subprocess_outcomes=None))
        db.session.commit()
        second = assert_heatmap_matches(Scope(), lambda i: True, NOW, "2022")
        assert {k: (c.failing, c.applicable) for k, c in first.cells.items()} == {k: (c.failing, c.applicable) for k, c in second.cells.items()}


def test_a_few_queries_whatever_the_number_of_cells(heat_app: Any) -> None:
    """One grouped query per stored layout and per 15 other cells, never one per cell."""
    with heat_app.app_context():
        accept("EVID-001", scope={"business_unit": "Finance"})
        statements: list[str] = []

        def count(*args: Any) -> None:
            statements.append(args[2])

        sa.event.listen(db.engine, "before_cursor_execute", count)
        try:
            for edition in ("2022", "2013"):
                statements.clear()
                heat = heatmap(gapbridge().ruleset, Scope(), NOW, edition)
                assert len(heat.cells) >= 12
                # besides a SET of work_mem and a read of the few acceptances in force per coverage call
                reads = [q for q in statements if not q.startswith("SET LOCAL") and "FROM risk_acceptances" not in q]
                assert 1 <= len(reads) <= 6, "\n\n".join(reads)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", count)


def test_the_population_of_a_cell_is_the_incidents_behind_its_numbers(heat_app: Any) -> None:
    with heat_app.app_context():
        ruleset = gapbridge().ruleset
        accept("EVID-001", scope={"business_unit": "Finance"})
        scope = Scope(record_type="incident")
        heat = heatmap(ruleset, scope, NOW)
        for key in (("resolution", "A.5.28"), ("resolution", "A.8.8"), ("monitoring", "A.8.15")):
            cell = heat.cells[key]
            expected = counted(set(cell.checks), lambda i: i.record_type == "incident", NOW)
            for outcome in ("failed", "accepted", "passed", "not_applicable"):
                members = cell_population(ruleset, *key, scope, NOW, outcome=outcome, limit=1000)
                assert {m.incident.id for m in members} == expected[outcome], (key, outcome)
                assert all(m.outcome == outcome for m in members)
            failing = cell_population(ruleset, *key, scope, NOW, outcome="failed", limit=1000)
            assert len(failing) == cell.failing
            assert all(set(m.checks) <= set(cell.checks) and "failed" in m.checks.values() for m in failing)
            # paged by id: two at a time gives the same incidents in order
            paged: list[int] = []
            after = 0
            while page := cell_population(ruleset, *key, scope, NOW, outcome="failed", after=after, limit=2):
                paged += [m.incident.id for m in page]
                after = page[-1].incident.id
            assert paged == [m.incident.id for m in failing]
        old = cell_population(ruleset, "resolution", "A.16.1.7", scope, NOW, edition="2013", outcome="failed", limit=1000)
        assert {m.incident.id for m in old} == {m.incident.id for m in cell_population(ruleset, "resolution", "A.5.28", scope, NOW,
                                                                                      outcome="failed", limit=1000)}


def test_a_cell_that_does_not_exist_is_refused_naming_the_field(heat_app: Any) -> None:
    with heat_app.app_context():
        ruleset = gapbridge().ruleset
        for args, field in ((("nowhere", "A.5.28"), "subprocess"), (("support", "A.9.9"), "control"),
                            (("support", "A.5.28"), "control"), (("resolution", "A.16.1.7"), "control")):
            with pytest.raises(ValidationError) as caught:
                find_cell(ruleset, *args)
            assert field in caught.value.messages
        with pytest.raises(ValidationError) as caught:
            layout(ruleset, "2005")
        assert "edition" in caught.value.messages
        with pytest.raises(ValidationError):
            cell_population(ruleset, "resolution", "A.5.28", Scope(), NOW, outcome="broken")
        assert isinstance(find_cell(ruleset, "resolution", "A.16.1.7", "2013").group, cov.Group)
