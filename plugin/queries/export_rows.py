"""Rows of gaps, coverage and populations for the exports, read page by page through the API's own queries."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from connectors.redact import redact_urls

from ..rules.model import Ruleset
from . import coverage as cov
from .gaps import gaps
from .scope import Scope

PAGE = 1000


def link(url: str | None) -> str | None:
    """A ticket link as exported: never with credentials, whatever an older row holds."""
    return None if url is None else redact_urls(url)


def gap_rows(ruleset: Ruleset, args: Mapping[str, Any], now: datetime) -> Iterator[dict[str, Any]]:
    query = {**args, "limit": PAGE, "cursor": None}
    while True:
        rows, nxt = gaps(ruleset, query, now)
        for r in rows:
            f, i = r.finding, r.incident
            check = ruleset.check(f.check_id)
            yield {"incident_id": i.id, "source": i.source, "number": i.number, "url": link(i.url), "title": i.title,
                   "business_unit": i.business_unit, "assignment_group": i.assignment_group, "incident_severity": i.severity,
                   "opened_at": i.opened_at, "closed_at": i.closed_at, "check_id": f.check_id,
                   "check_title": check.title if check else None, "kind": f.kind, "gap_severity": f.severity,
                   "subprocess": f.subprocess, "controls_2022": f.controls_2022, "controls_2013": f.controls_2013, "status": r.status,
                   "details": f.details, "first_failed_at": f.first_failed_at, "resolved_at": f.resolved_at, "due_at": f.due_at,
                   "accepted_by": r.acceptance.approver if r.acceptance else None,
                   "accepted_until": r.acceptance.expires_at if r.acceptance else None}
        if nxt is None:
            return
        query["cursor"] = nxt


def groups(ruleset: Ruleset, by: str) -> list[cov.Group]:
    return cov.control_groups(ruleset) if by == "control" else cov.subprocess_groups(ruleset)


def coverage_rows(ruleset: Ruleset, scope: Scope, by: str, now: datetime) -> Iterator[dict[str, Any]]:
    for c in cov.coverage(groups(ruleset, by), scope, now, ruleset):
        g = c.group
        decided = c.in_scope - c.pending
        yield {"group": g.kind, "key": g.key, "title": g.title,
               "ids_2022": [g.key] if g.kind == "control" else None,
               "ids_2013": list(ruleset.catalogue.predecessors(g.key)) if g.kind == "control" else None,
               "checks": list(g.checks), "in_scope": c.in_scope, "passed": c.passed, "failed": c.failed, "accepted": c.accepted,
               "pending": c.pending, "not_applicable": c.not_applicable,
               "pass_rate": round((c.passed + c.accepted) / decided, 4) if decided else None}


def population_rows(group: cov.Group, scope: Scope, outcome: str | None, now: datetime) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        members = cov.population(group, scope, now, outcome, after, PAGE)
        for m in members:
            i = m.incident
            yield {"group": group.kind, "key": group.key, "outcome": m.outcome, "incident_id": i.id, "source": i.source,
                   "number": i.number, "url": link(i.url), "title": i.title, "business_unit": i.business_unit, "incident_severity": i.severity,
                   "opened_at": i.opened_at, "closed_at": i.closed_at, "checks": m.checks}
        if len(members) < PAGE:
            return
        after = members[-1].incident.id
