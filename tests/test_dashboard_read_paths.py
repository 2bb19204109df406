"""What the dashboard reads instead of every finding and every wide row (migration 0012): the heatmap cells' outcome
masks, the text flags the database keeps for the KPIs, the trend counted by week bounds, acceptances that name a scope."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from plugin.extensions import db
from plugin.models import Finding, Incident, RiskAcceptance, utcnow
from plugin.queries import coverage as cov
from plugin.queries.acceptance import matches
from plugin.queries.gaps import gaps
from plugin.queries.heatmap import heatmap
from plugin.queries.overview import monday, overview, trend
from plugin.queries.scope import Scope
from plugin.rules.model import FAIL, GAP
from plugin.services import risk
from plugin.services.assess import assess, refresh_outcome_masks
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .conftest import NOW
from .fakes import FakeConnector
from .test_heatmap import assert_heatmap_matches, varied

W = timedelta(weeks=1)
MASKS = [getattr(Incident, c) for c in cov.MASK_COLUMNS]


@pytest.fixture
def heat_app(app_factory: Any) -> Any:
    app = app_factory(mappings={"regulatory": ["gdpr", "nis2"]})
    with app.app_context():
        sync_source(FakeConnector(varied(200)), ruleset=gapbridge().ruleset)
        db.session.remove()
    return app


def stored_masks() -> list[Any]:
    return db.session.execute(sa.select(Incident.id, *MASKS).order_by(Incident.id)).all()


def test_the_heatmap_cells_have_masks_and_improvement_cells_are_among_them(heat_app: Any) -> None:
    with heat_app.app_context():
        ruleset = gapbridge().ruleset
        layout = cov.layouts(ruleset)["cell_outcomes"]
        assert 0 < len(layout) <= cov.GROUPS_PER_MASK
        stored = {frozenset(g.checks) for c in ("control_outcomes", "subprocess_outcomes") for g in cov.layouts(ruleset)[c]}
        assert not stored & {frozenset(g.checks) for g in layout}  # each set of checks once, in one column
        kinds = {c.id: c.kind for c in ruleset.checks}
        assert any(all(kinds[c] != GAP for c in g.checks) for g in layout)  # improvement cells have masks too
        for edition in ("2022", "2013"):
            heat = heatmap(ruleset, Scope(), NOW, edition)
            masked = {frozenset(g.checks) for g in layout} | stored
            assert all(frozenset(c.checks) in masked for c in heat.cells.values()), edition  # no cell is counted from findings


def test_the_cell_masks_written_by_the_sync_and_after_a_reassessment_are_those_of_the_findings(heat_app: Any) -> None:
    with heat_app.app_context():
        ruleset = gapbridge().ruleset
        written = stored_masks()
        assert all(m is not None for row in written for m in row[1:]) and len({row[3] for row in written}) > 3
        refresh_outcome_masks(ruleset, [row[0] for row in written])  # what the database computes from the findings
        assert stored_masks() == written
        db.session.rollback()
        # other outcomes under the cells' checks (containment, assignee, notifications gone), then assessed again
        db.session.execute(sa.update(Incident).where(Incident.id % 2 == 0).values(
            contained_at=None, assignee=None, notifications=[], revision=Incident.revision + 1))
        db.session.commit()
        assess(ruleset, now=NOW)
        again = stored_masks()
        assert [row[3] for row in again] != [row[3] for row in written]
        refresh_outcome_masks(ruleset, [row[0] for row in again])
        assert stored_masks() == again
        db.session.rollback()
        for edition in ("2022", "2013"):
            assert_heatmap_matches(Scope(), lambda i: True, NOW, edition)


def test_the_heatmap_reads_the_cell_masks_and_counts_incidents_without_them_from_their_findings(heat_app: Any) -> None:
    with heat_app.app_context():
        ruleset = gapbridge().ruleset
        improvement = next(g for g in cov.layouts(ruleset)["cell_outcomes"] if ruleset.check(g.checks[0]).kind != GAP)
        before = heatmap(ruleset, Scope(), NOW)
        cell = next(c for c in before.cells.values() if set(c.checks) == set(improvement.checks))
        assert cell.applicable > 0
        db.session.execute(sa.update(Incident).values(cell_outcomes=0))  # a stored outcome that lies shows
        db.session.commit()
        lying = heatmap(ruleset, Scope(), NOW).cell(cell.subprocess, cell.control)
        assert lying is not None and lying.applicable == 0
        db.session.execute(sa.update(Incident).where(Incident.id % 2 == 0).values(cell_outcomes=None))  # as if never written
        db.session.commit()
        half = heatmap(ruleset, Scope(), NOW).cell(cell.subprocess, cell.control)
        assert half is not None and 0 < half.applicable < cell.applicable
        assess(ruleset, now=NOW)  # a missing mask makes the incident stale: assessed again, written again
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Incident).where(Incident.cell_outcomes.is_(None))) == 0
        db.session.execute(sa.update(Incident).values(cell_outcomes=None))
        db.session.commit()
        assert_heatmap_matches(Scope(), lambda i: True, NOW, "2022")  # every cell from the findings, the same numbers


def test_migration_0012_fills_the_cell_masks_and_the_flags_of_incidents_stored_before(heat_app: Any) -> None:
    with heat_app.app_context():
        written = stored_masks()
        db.session.execute(sa.update(Incident).where(Incident.id % 4 == 0).values(root_cause="   ", lessons_learned=None))
        db.session.commit()
        db.session.remove()
        downgrade(revision="0011")
        try:
            assert "cell_outcomes" not in {c["name"] for c in sa.inspect(db.engine).get_columns("incidents")}
        finally:
            upgrade()
        assert stored_masks() == written
        flags = db.session.execute(sa.select(Incident.id, Incident.root_cause, Incident.has_root_cause, Incident.lessons_learned,
                                             Incident.has_lessons_learned, Incident.timeline, Incident.has_timeline)).all()
        assert {bool(f.has_root_cause) for f in flags} == {True, False}
        for f in flags:
            assert bool(f.has_root_cause) == bool((f.root_cause or "").strip(" "))
            assert bool(f.has_lessons_learned) == bool((f.lessons_learned or "").strip(" "))
            assert bool(f.has_timeline) == bool(f.timeline)


def opened(f: Finding, incident: Incident) -> Any:
    if f.first_failed_at is not None and f.first_failed_at <= incident.first_seen_at and incident.opened_at \
            and incident.opened_at < f.first_failed_at:
        return incident.opened_at
    return f.first_failed_at


def test_the_trend_counts_gaps_opened_and_resolved_on_a_week_bound_in_the_week_it_starts(heat_app: Any) -> None:
    """A time on a bound belongs to the week it starts: opened at or before a week's end is open at its end."""
    with heat_app.app_context():
        scope = Scope(start=NOW - 8 * W, end=NOW + W)
        gap_findings = db.session.scalars(sa.select(Finding).join(Incident, Incident.id == Finding.incident_id)
                                          .where(Finding.kind == GAP, *scope.conditions()).order_by(Finding.id)).all()
        assert len(gap_findings) > 60
        bounds = [monday(NOW) - k * W for k in range(6)]
        for n, f in enumerate(gap_findings[:60]):
            on = bounds[n % len(bounds)]
            if n % 3 == 0:
                f.status, f.first_failed_at, f.resolved_at = FAIL, on, None
            else:
                f.status, f.first_failed_at, f.resolved_at = "pass", on - (n % 2) * W, on + (n % 4 == 1) * W
        for incident in db.session.scalars(sa.select(Incident)):
            incident.first_seen_at = NOW - 60 * W  # the gaps count from when they failed
        db.session.commit()
        weeks = trend(scope, NOW)
        incidents = {i.id: i for i in db.session.scalars(sa.select(Incident).where(*scope.conditions()))}
        counted = [f for f in db.session.scalars(sa.select(Finding).where(Finding.kind == GAP))
                   if f.incident_id in incidents and f.first_failed_at is not None]
        on_bounds = 0
        for w in weeks:
            end = min(w.start + W, NOW)
            at = [(opened(f, incidents[f.incident_id]), f) for f in counted]
            on_bounds += sum(1 for o, _ in at if o == end)
            assert w.open_at_end == sum(1 for o, f in at if o <= end and (f.status == FAIL or (
                end < NOW and f.resolved_at is not None and f.resolved_at > end))), w.label
            assert w.opened == sum(1 for o, _ in at if w.start <= o < end), w.label
            assert w.resolved == sum(1 for _, f in at if f.resolved_at is not None and w.start <= f.resolved_at < end), w.label
        assert on_bounds > 5 and any(w.resolved for w in weeks)


def test_an_acceptance_of_a_business_unit_leaves_open_the_gaps_of_incidents_with_none(heat_app: Any) -> None:
    """The acceptance's scope is not matched by an incident without a business unit: its gap is open, in every count."""
    with heat_app.app_context():
        ruleset = gapbridge().ruleset
        now = max(NOW, utcnow()) + timedelta(hours=1)  # after the sync, which assessed at the real time
        failing = db.session.execute(sa.select(Finding.check_id, Finding.incident_id).where(Finding.is_open_gap)
                                     .order_by(Finding.incident_id)).first()
        assert failing is not None
        check_id, incident_id = failing
        db.session.execute(sa.update(Incident).where(Incident.id == incident_id).values(business_unit=None))
        db.session.commit()
        risk.accept(check_id, scope={"business_unit": "Finance"}, justification="Compensating control: a weekly manual review",
                    approver="CISO", expires_at=now + 30 * timedelta(days=1), actor="test", ruleset=ruleset, max_days=365, now=now)
        acceptances = db.session.scalars(sa.select(RiskAcceptance)).all()
        incidents = {i.id: i for i in db.session.scalars(sa.select(Incident).where(Incident.assessed_ruleset.is_not(None)))}
        open_gaps = [f for f in db.session.scalars(sa.select(Finding).where(Finding.is_open_gap))
                     if f.incident_id in incidents and not any(matches(a, f.check_id, incidents[f.incident_id], now) for a in acceptances)]
        assert any(f.incident_id == incident_id for f in open_gaps)
        assert any(f.check_id == check_id and incidents[f.incident_id].business_unit == "Finance" for f in
                   db.session.scalars(sa.select(Finding).where(Finding.is_open_gap)))  # and the acceptance covers some
        o = overview(ruleset, Scope(), now, [])
        assert o.open_gaps == len(open_gaps) == o.trend[-1].open_at_end
        args = {"status": "open", "sort": "age", "limit": 1000, "kind": GAP, "check": check_id}
        listed, _ = gaps(ruleset, args, now)
        assert incident_id in {row.incident.id for row in listed}
        assert {row.incident.id for row in listed} == {f.incident_id for f in open_gaps if f.check_id == check_id}
        accepted, _ = gaps(ruleset, {**args, "status": "accepted"}, now)
        assert accepted and incident_id not in {row.incident.id for row in accepted}
