"""Coverage: per control and per ITIL sub-process, for a period and scope, with the population behind each number."""

from __future__ import annotations

from typing import Any

from flask import abort

from ...models import utcnow
from ...queries import controls as cq
from ...queries import coverage as q
from ...queries import cursor as cursors
from ...queries.scope import Scope
from ...rules.model import GAP, Ruleset
from ...schemas.coverage import (
    CoverageArgs,
    CoverageOneSchema,
    CoveragePageSchema,
    OneCoverageArgs,
    PopulationArgs,
    PopulationPageSchema,
)
from ...state import gapbridge
from ..auth import READ, require
from . import Blueprint

blp = Blueprint("coverage", __name__, description="How well each control and sub-process is met, and by which incidents")


def _row(ruleset: Ruleset, c: q.Counts) -> dict[str, Any]:
    g = c.group
    row: dict[str, Any] = {"key": g.key, "title": g.title, "checks": list(g.checks), "in_scope": c.in_scope, "passed": c.passed,
                           "failed": c.failed, "accepted": c.accepted, "pending": c.pending, "not_applicable": c.not_applicable}
    decided = c.in_scope - c.pending
    row["pass_rate"] = round((c.passed + c.accepted) / decided, 4) if decided else None
    if g.kind == "control":
        control = ruleset.catalogue.get(g.edition, g.key)
        if control is not None:
            row["ids_2022"], row["ids_2013"] = cq.crosswalk(ruleset, control)
    return row


def _control_group(ruleset: Ruleset, control_id: str) -> q.Group:
    control = cq.resolve_one(ruleset, control_id)
    checks = tuple(c.id for c in cq.checks_of(ruleset, control) if c.kind == GAP)
    return q.Group("control", control.id, control.title, checks, control.edition)


def _subprocess_group(ruleset: Ruleset, subprocess_id: str) -> q.Group:
    for g in q.subprocess_groups(ruleset):
        if g.key == subprocess_id:
            return g
    abort(404, description=f"no sub-process {subprocess_id!r}; known: {', '.join(ruleset.subprocesses)}")


def _page(groups: list[q.Group], name: str, args: dict[str, Any]) -> dict[str, Any]:
    ruleset = gapbridge().ruleset
    scope = Scope.from_args(args)
    page, nxt = cursors.page_list(groups, lambda g: g.key, name, args)
    rows = q.coverage(page, scope, utcnow(), ruleset)
    # every row counts the same incidents, applicable or not
    total = rows[0].in_scope + rows[0].not_applicable if rows else q.in_scope_total(scope)
    return {"scope": scope.describe(), "ruleset": ruleset.hash, "incidents_in_scope": total,
            "items": [_row(ruleset, c) for c in rows], "next_cursor": nxt}


def _one(group: q.Group, args: dict[str, Any]) -> dict[str, Any]:
    ruleset = gapbridge().ruleset
    scope = Scope.from_args(args)
    (counts,) = q.coverage([group], scope, utcnow(), ruleset)
    return {**_row(ruleset, counts), "scope": scope.describe(), "ruleset": ruleset.hash}


def _population(group: q.Group, args: dict[str, Any]) -> dict[str, Any]:
    scope = Scope.from_args(args)
    key = cursors.query_key(f"population:{group.kind}:{group.key}", args)
    after = cursors.decode(args["cursor"], key, (int,))[0] if args.get("cursor") else 0
    members = q.population(group, scope, utcnow(), args.get("outcome"), after, args["limit"])
    nxt = cursors.encode(key, [members[-1].incident.id]) if len(members) == args["limit"] else None
    return {"key": group.key, "outcome": args.get("outcome"), "scope": scope.describe(),
            "items": [{"incident": m.incident, "outcome": m.outcome, "checks": m.checks} for m in members], "next_cursor": nxt}


@blp.route("/coverage/controls")
@require(READ)
@blp.arguments(CoverageArgs, location="query")
@blp.response(200, CoveragePageSchema)
def controls_coverage(args: dict[str, Any]) -> Any:
    """Per 2022 control: incidents in scope, passed, failed, accepted, pending, not applicable."""
    return _page(q.control_groups(gapbridge().ruleset), "coverage:controls", args)


@blp.route("/coverage/controls/<string:control_id>")
@require(READ)
@blp.arguments(OneCoverageArgs, location="query")
@blp.response(200, CoverageOneSchema)
def control_coverage(args: dict[str, Any], control_id: str) -> Any:
    """One control of either edition (a 2013 id counts the checks of its 2022 counterparts and its own)."""
    return _one(_control_group(gapbridge().ruleset, control_id), args)


@blp.route("/coverage/controls/<string:control_id>/population")
@require(READ)
@blp.arguments(PopulationArgs, location="query")
@blp.response(200, PopulationPageSchema)
def control_population(args: dict[str, Any], control_id: str) -> Any:
    """The incidents behind a control's numbers, each with its ticket link, to sample."""
    return _population(_control_group(gapbridge().ruleset, control_id), args)


@blp.route("/coverage/subprocesses")
@require(READ)
@blp.arguments(CoverageArgs, location="query")
@blp.response(200, CoveragePageSchema)
def subprocesses_coverage(args: dict[str, Any]) -> Any:
    """Per ITIL incident-management sub-process."""
    return _page(q.subprocess_groups(gapbridge().ruleset), "coverage:subprocesses", args)


@blp.route("/coverage/subprocesses/<string:subprocess_id>")
@require(READ)
@blp.arguments(OneCoverageArgs, location="query")
@blp.response(200, CoverageOneSchema)
def subprocess_coverage(args: dict[str, Any], subprocess_id: str) -> Any:
    return _one(_subprocess_group(gapbridge().ruleset, subprocess_id), args)


@blp.route("/coverage/subprocesses/<string:subprocess_id>/population")
@require(READ)
@blp.arguments(PopulationArgs, location="query")
@blp.response(200, PopulationPageSchema)
def subprocess_population(args: dict[str, Any], subprocess_id: str) -> Any:
    return _population(_subprocess_group(gapbridge().ruleset, subprocess_id), args)
