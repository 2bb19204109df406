"""Incident-process KPIs and the maturity level, against a count done here over the canonical incidents stored."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from plugin.extensions import db
from plugin.models import Incident
from plugin.queries.kpis import RECURRENCE_WINDOW, percentile, process_kpis
from plugin.queries.maturity import MET, NO_DATA, NOT_MET, UNKNOWN, Thresholds, maturity
from plugin.queries.scope import Scope
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .conftest import NOW
from .fakes import FakeConnector, FakeTicketing

SEVERITIES = ["critical", "high", "medium", "low", None]
H = timedelta(hours=1)


def population(count: int, seed: int = 7) -> FakeTicketing:
    """Security incidents of every severity with random handling times, some times missing or out of order."""
    rng = random.Random(seed)
    tool = FakeTicketing(count)
    for i, t in enumerate(tool.tickets.values()):
        opened = NOW - timedelta(days=rng.randint(1, 200), hours=rng.randint(0, 23))
        closed = rng.random() < 0.7
        c: dict[str, Any] = {
            "severity": SEVERITIES[i % 5], "opened_at": opened, "business_unit": ["Finance", "Sales", "", "IT"][i % 4],
            "assessed_at": opened + rng.randint(0, 48) * H if rng.random() < 0.9 else None,
            "contained_at": opened + rng.randint(1, 96) * H if rng.random() < 0.8 else None,
            "resolved_at": opened + rng.randint(2, 400) * H if closed else None,
            "closed_at": opened + 500 * H if closed else None,
            "state": ("closed" if i % 2 else "resolved") if closed else rng.choice(["new", "in_progress", "on_hold", "cancelled"]),
            "root_cause": "cause" if rng.random() < 0.6 else rng.choice([None, "", "   "]),
            "lessons_learned": "lesson" if rng.random() < 0.5 else None,
            "record_type": "incident" if i % 11 else "event",
            "reported_via": rng.choice(["email", "phone", "monitoring", "siem"]),
            "timeline": [{"at": opened, "by": "x", "text": "note"}] if rng.random() < 0.7 else [],
        }
        if i % 17 == 3:  # a ticket whose times run backwards
            c["contained_at"] = opened - 2 * H
        t["canonical"] = c
        t["security"] = i % 6 != 0
    return tool


@pytest.fixture
def kpi_app(app_factory: Any) -> Any:
    app = app_factory()
    with app.app_context():
        sync_source(FakeConnector(population(240)), ruleset=gapbridge().ruleset)
        db.session.remove()
    return app


def stored_security_incidents() -> list[Any]:
    return db.session.execute(sa.select(Incident).where(Incident.is_security.is_(True), Incident.record_type == "incident")).scalars().all()


def test_percentile_is_linear_between_ranks_as_percentile_cont() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.9) == pytest.approx(9.1)
    assert percentile([5.0], 0.9) == 5.0 and percentile([], 0.9) is None
    data = sorted(random.Random(3).uniform(0, 100) for _ in range(37))
    assert percentile(data, 0.9) == pytest.approx(statistics.quantiles(data, n=10, method="inclusive")[8])


def test_durations_by_severity_equal_a_count_over_the_stored_incidents(kpi_app: Any) -> None:
    with kpi_app.app_context():
        k = process_kpis(Scope(), NOW)
        incidents = stored_security_incidents()
        assert k.security_incidents == len(incidents) > 100
        for measure, column in (("decide", "assessed_at"), ("contain", "contained_at"), ("resolve", "resolved_at")):
            hours: dict[str, list[float]] = {}
            backwards = 0
            for inc in incidents:
                end = getattr(inc, column)
                if end is None or inc.opened_at is None:
                    continue
                if end < inc.opened_at:
                    backwards += 1
                    continue
                hours.setdefault(inc.severity or "(none)", []).append((end - inc.opened_at).total_seconds() / 3600)
            assert k.out_of_order[measure] == backwards
            assert set(k.durations[measure]) == set(hours)
            assert list(k.durations[measure])[:2] == ["critical", "high"]  # by severity, worst first
            for severity, values in hours.items():
                d = k.durations[measure][severity]
                assert d.count == len(values)
                assert d.mean_hours == pytest.approx(statistics.fmean(values), abs=0.01)
                expected = statistics.quantiles(sorted(values), n=10, method="inclusive")[8] if len(values) > 1 else values[0]
                assert d.p90_hours == pytest.approx(expected, abs=0.01)
        assert k.out_of_order["contain"] > 0


def test_closure_quality_and_business_units_equal_a_count(kpi_app: Any) -> None:
    with kpi_app.app_context():
        k = process_kpis(Scope(business_unit="Finance"), NOW)
        incidents = [i for i in stored_security_incidents() if i.business_unit == "Finance"]
        closed = [i for i in incidents if i.state in ("resolved", "closed")]
        filled = lambda v: bool((v or "").strip())  # noqa: E731
        assert (k.closure.closed, k.closure.with_root_cause, k.closure.with_lessons_learned, k.closure.with_both) == (
            len(closed), sum(filled(i.root_cause) for i in closed), sum(filled(i.lessons_learned) for i in closed),
            sum(filled(i.root_cause) and filled(i.lessons_learned) for i in closed))
        assert 0 < k.closure.with_both < k.closure.closed
        everyone = process_kpis(Scope(), NOW)
        units = Counter((i.business_unit or "(none)", i.state) for i in stored_security_incidents())
        for u in everyone.by_business_unit:
            assert u.closed == units[(u.business_unit, "closed")] + units[(u.business_unit, "resolved")]
            assert u.open == sum(n for (bu, state), n in units.items()
                                 if bu == u.business_unit and state not in ("closed", "resolved", "cancelled"))
        assert {u.business_unit for u in everyone.by_business_unit} == {"Finance", "Sales", "IT", "(none)"}


def test_recurring_groups_are_found_and_a_stopped_one_is_told_apart(app_factory: Any) -> None:
    tool = FakeTicketing(9)
    for i, t in enumerate(tool.tickets.values()):
        group = i // 3  # three groups of three on one item and category
        opened = NOW - timedelta(days=[100, 40, 10][group]) + i % 3 * timedelta(days=5)
        t["canonical"] = {"affected_ci": f"srv-{group}", "category": "malware", "opened_at": opened,
                          "problem_ref": "PRB001" if group == 0 else None}
        t["security"] = True
    spread = FakeTicketing(3)  # three on one item, but over more than the window: not recurring
    for i, t in enumerate(spread.tickets.values()):
        t["canonical"] = {"affected_ci": "srv-spread", "category": "malware", "opened_at": NOW - i * (RECURRENCE_WINDOW / 1.5)}
        t["security"] = True
    app = app_factory()
    with app.app_context():
        sync_source(FakeConnector(tool), ruleset=gapbridge().ruleset)
        sync_source(FakeConnector(spread, name="spread"), ruleset=gapbridge().ruleset)
        k = process_kpis(Scope(), NOW)
        groups = {g.affected_ci: g for g in k.recurring}
        assert set(groups) == {"srv-0", "srv-1", "srv-2"}
        assert groups["srv-0"].stopped and groups["srv-0"].problem_linked and groups["srv-0"].incidents == 3
        assert groups["srv-1"].stopped and not groups["srv-1"].problem_linked  # the last one 30 days ago
        assert not groups["srv-2"].stopped
        assert k.recurring_stopped == 2
        # as of the end of a scope in the past, the latest group had not stopped either
        assert not {g.affected_ci: g for g in process_kpis(Scope(end=NOW - timedelta(days=25)), NOW).recurring}["srv-1"].stopped


def test_maturity_counts_what_ticket_data_cannot_show_as_unknown_never_as_met(kpi_app: Any) -> None:
    with kpi_app.app_context():
        m = maturity(Scope(), NOW, gapbridge().ruleset)
        assert [c.level for c in m.criteria] == sorted(c.level for c in m.criteria)
        assert {c.level for c in m.unknown if c.status == UNKNOWN} == {1, 2, 3, 4, 5}
        assert all(c.value is None and not c.met for c in m.unknown)
        # a fifth of the population has no severity: level 1's measured criterion fails, so no level is supported
        prioritised = m.of(1)[0]
        assert prioritised.status == NOT_MET and prioritised.value == pytest.approx(0.8, abs=0.03)
        assert m.level == 0 and prioritised in m.to_next
        lenient = maturity(Scope(), NOW, gapbridge().ruleset, thresholds=Thresholds(prioritised=0.7, tracked_to_closure=0.5,
                                                                                     with_business_unit=0.7))
        assert lenient.level >= 1 and all(c.met for c in lenient.of(1) if c.status != UNKNOWN)


def test_maturity_of_well_run_incidents_reaches_the_level_its_data_supports(app_factory: Any) -> None:
    """Every incident complete and closed, detected by monitoring: level 5's measured criteria are met as well."""
    tool = FakeTicketing(40)
    for i, t in enumerate(tool.tickets.values()):
        opened = NOW - timedelta(days=40 + i)
        t["canonical"] = {"opened_at": opened, "business_unit": ["Finance", "Sales"][i % 2], "reported_via": "monitoring",
                          "timeline": [{"at": opened, "by": "x", "text": "contained"}], "closed_at": NOW - timedelta(days=5),
                          "affected_ci": f"ci-{i}"}
        t["security"] = True
    app = app_factory()
    with app.app_context():
        m = maturity(Scope(), NOW, gapbridge().ruleset)
        assert m.level == 0  # nothing stored yet: no data is not a level
        assert {c.status for c in m.criteria} == {NO_DATA, UNKNOWN}
        sync_source(FakeConnector(tool), ruleset=gapbridge().ruleset)
        m = maturity(Scope(), NOW, gapbridge().ruleset)
        assert m.level == 5, "\n".join(f"{c.what}: {c.status} {c.shown}" for c in m.criteria if c.status != MET)
        assert m.to_next == [] and len(m.unknown) == 5 and all(c.status == UNKNOWN for c in m.unknown)
        review = next(c for c in m.of(3) if c.what.startswith("lessons"))
        assert review.value == 5 and review.shown == f"5 days ago ({NOW - timedelta(days=5):%Y-%m-%d})"
        # the same incidents a year on: no recent review, so level 3 and above are out of reach
        later = maturity(Scope(), NOW + timedelta(days=365), gapbridge().ruleset)
        assert later.level == 2 and any(c.what.startswith("lessons") for c in later.to_next)
