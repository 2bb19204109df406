"""The dashboard overview's numbers against a count done here over the stored findings and incidents."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from plugin.extensions import db
from plugin.models import Finding, Incident, RiskAcceptance
from plugin.queries import coverage as cov
from plugin.queries.overview import DUE_WITHIN, monday, overview, trend, weeks_of
from plugin.queries.scope import Scope
from plugin.rules.model import GAP
from plugin.services.assess import assess
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .conftest import NOW
from .fakes import FakeConnector, FakeTicketing
from .test_api import varied_tool

W = timedelta(weeks=1)


@pytest.fixture
def gaps_app(app_factory: Any) -> Any:
    """Stored incidents whose gaps opened and came to pass at random times over the last twenty weeks."""
    app = app_factory()
    rng = random.Random(11)
    with app.app_context():
        sync_source(FakeConnector(varied_tool(90)), ruleset=gapbridge().ruleset)
        gaps = db.session.scalars(sa.select(Finding).where(Finding.kind == GAP)).all()
        assert len(gaps) > 100
        for f in gaps:
            roll = rng.random()
            if roll < 0.45:
                f.status, f.first_failed_at, f.resolved_at = "fail", NOW - timedelta(hours=rng.randint(1, 20 * 24 * 7)), None
            elif roll < 0.8:
                opened = NOW - timedelta(hours=rng.randint(2, 20 * 24 * 7))
                f.status, f.first_failed_at = "pass", opened
                f.resolved_at = opened + (NOW - opened) * rng.random()
            else:
                f.status, f.first_failed_at, f.resolved_at = "pass", None, None
        # half the incidents were first seen long before their gaps failed; for the others the gap was found at first sight
        for n, incident in enumerate(db.session.scalars(sa.select(Incident).order_by(Incident.id))):
            if n % 2:
                incident.first_seen_at = NOW - 30 * W
        some = next(f for f in gaps if f.status == "fail")
        db.session.add(RiskAcceptance(check_id=some.check_id, incident_id=some.incident_id, justification="compensating control",
                                      approver="CISO", created_by="isms", expires_at=NOW + 30 * timedelta(days=1)))
        db.session.commit()
        db.session.remove()
    return app


def accepted_now(f: Finding, acceptances: list[RiskAcceptance]) -> bool:
    return f.status == "fail" and any(a.check_id == f.check_id and a.incident_id == f.incident_id and a.revoked_at is None
                                      and a.expires_at > NOW for a in acceptances)


def test_each_week_counts_the_gaps_open_at_its_end_and_those_that_opened_and_resolved_in_it(gaps_app: Any) -> None:
    with gaps_app.app_context():
        scope = Scope(start=NOW - 10 * W, end=NOW + W)
        weeks = trend(scope, NOW)
        gaps = db.session.scalars(sa.select(Finding).where(Finding.kind == GAP)).all()
        acceptances = db.session.scalars(sa.select(RiskAcceptance)).all()
        opened_in_scope = {i.id for i in db.session.scalars(sa.select(Incident).where(*scope.conditions()))}
        counted = [f for f in gaps if f.incident_id in opened_in_scope and not accepted_now(f, acceptances)]
        incidents = {i.id: i for i in db.session.scalars(sa.select(Incident))}

        def opened(f: Finding) -> datetime | None:
            """A gap found at the incident's first sight counts from the incident's opening."""
            i = incidents[f.incident_id]
            if f.first_failed_at is not None and f.first_failed_at <= i.first_seen_at and i.opened_at and i.opened_at < f.first_failed_at:
                return i.opened_at
            return f.first_failed_at
        assert any(opened(f) != f.first_failed_at for f in counted) and any(opened(f) == f.first_failed_at for f in counted)
        assert [w.start for w in weeks] == weeks_of(scope, NOW)
        assert weeks[0].start == monday(NOW - 10 * W) and weeks[-1].start == monday(NOW)
        for w in weeks:
            end = min(w.start + W, NOW)
            expected_open = sum(1 for f in counted if (o := opened(f)) is not None and o <= end
                                and (f.status == "fail" or (f.resolved_at is not None and f.resolved_at > end and end < NOW)))
            assert w.open_at_end == expected_open, w.label
            assert w.opened == sum(1 for f in counted if (o := opened(f)) is not None and w.start <= o < end), w.label
            assert w.resolved == sum(1 for f in counted if f.resolved_at is not None and w.start <= f.resolved_at < end), w.label
        assert any(w.resolved for w in weeks) and any(w.opened for w in weeks)
        # the last week ends now: what is open at its end is what is open now
        assert weeks[-1].open_at_end == overview(gapbridge().ruleset, scope, NOW, []).open_gaps


def test_no_period_shows_the_last_twelve_weeks() -> None:
    starts = weeks_of(Scope(), NOW)
    assert len(starts) == 12 and starts[-1] == monday(NOW) and all(s.weekday() == 0 and s.hour == 0 for s in starts)
    assert weeks_of(Scope(start=datetime(2020, 1, 1, tzinfo=timezone.utc), end=datetime(2026, 1, 1, tzinfo=timezone.utc)), NOW)[-1] \
        == monday(datetime(2025, 12, 31, tzinfo=timezone.utc))  # a long period: its last weeks


def test_the_overview_numbers_equal_the_counts_of_open_gaps_controls_and_clocks(gaps_app: Any) -> None:
    with gaps_app.app_context():
        ruleset = gapbridge().ruleset
        pending = db.session.scalars(sa.select(Finding).limit(7)).all()
        for n, f in enumerate(pending):  # clocks: three due within a day, one later, one already past
            f.status, f.due_at = "pending", NOW + [timedelta(hours=2), timedelta(hours=23), timedelta(hours=5),
                                                   timedelta(hours=30), -timedelta(hours=1), timedelta(days=3), timedelta(hours=1)][n]
        db.session.commit()
        scope = Scope(business_unit=db.session.scalar(sa.select(Incident.business_unit).where(Incident.is_security.is_(True)).limit(1)))
        o = overview(ruleset, scope, NOW, ["fake", "never-synced"])
        incidents = db.session.scalars(sa.select(Incident).where(*scope.conditions())).all()
        ids = {i.id for i in incidents}
        acceptances = db.session.scalars(sa.select(RiskAcceptance)).all()
        gaps = [f for f in db.session.scalars(sa.select(Finding)) if f.incident_id in ids and f.is_open_gap and not accepted_now(f, acceptances)]
        assert o.open_gaps == len(gaps) > 0
        assert o.incidents_in_scope == len(incidents) < 90
        security = [i for i in incidents if i.is_security and i.record_type == "incident"]
        with_gap = {f.incident_id for f in gaps}
        assert o.security_incidents == len(security) > 0
        assert o.security_without_open_gap == sum(1 for i in security if i.id not in with_gap)
        assert o.share_security_clear == pytest.approx(o.security_without_open_gap / len(security))
        # the worst controls: most incidents failing, as the coverage API counts them
        by_control = {c.group.key: c.failed for c in cov.coverage(cov.control_groups(ruleset), scope, NOW, ruleset)}
        worst = [c.group.key for c in o.worst_controls]
        assert len(worst) == min(5, sum(1 for v in by_control.values() if v))
        assert [by_control[k] for k in worst] == sorted((v for v in by_control.values() if v), reverse=True)[:len(worst)]
        due = [f for f in pending if f.incident_id in ids and NOW <= f.due_at < NOW + DUE_WITHIN]
        assert o.due_soon_total == len(due) and [c.due_at for c in o.due_soon] == sorted(f.due_at for f in due)
        assert [s.source for s in o.sources] == ["fake", "never-synced"]
        assert o.sources[0].last_finished is not None and o.sources[0].last_finished.status == "succeeded"
        assert o.sources[1].last_run is None


def test_a_gap_that_comes_to_pass_keeps_when_it_opened(app_factory: Any) -> None:
    app = app_factory()
    tool = FakeTicketing(1)
    (ticket,) = tool.tickets
    tool.tickets[ticket].update(security=True, canonical={"state": "closed", "severity": "high", "record_type": "incident",
                                                           "root_cause": None, "lessons_learned": None})
    with app.app_context():
        ruleset = gapbridge().ruleset
        sync_source(FakeConnector(tool), ruleset=ruleset)
        failing = db.session.scalars(sa.select(Finding).where(Finding.check_id == "LEARN-001")).one()
        assert failing.status == "fail" and failing.first_failed_at is not None
        opened_at = failing.first_failed_at
        tool.tickets[ticket]["canonical"].update(root_cause="expired certificate", lessons_learned="monitor expiry")
        tool.touch(ticket)
        sync_source(FakeConnector(tool), ruleset=ruleset)
        assess(ruleset)
        db.session.expire_all()
        learn = sa.select(Finding).where(Finding.check_id == "LEARN-001")  # by its check: a store may replace the row
        after = db.session.scalars(learn).one()
        assert after.status == "pass" and after.resolved_at is not None
        assert after.first_failed_at == opened_at < after.resolved_at
        tool.touch(ticket)  # passing again: both times stay
        sync_source(FakeConnector(tool), ruleset=ruleset)
        db.session.expire_all()
        again = db.session.scalars(learn).one()
        assert (again.first_failed_at, again.resolved_at) == (opened_at, after.resolved_at)
