"""Exports: gaps, coverage and populations as CSV or JSON, and OSCAL assessment results with their plan."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain, islice
from typing import Any

import orjson
from flask import Response, abort, stream_with_context

from ...exports import oscal
from ...exports.tabular import COLUMNS, csv_lines, json_document
from ...models import utcnow
from ...queries import assessment
from ...queries import export_rows as rows
from ...queries.scope import Scope
from ...schemas.exports import OSCAL_DOCUMENTS, CoverageExportArgs, GapExportArgs, OscalArgs, PopulationExportArgs
from ...state import gapbridge
from ..auth import READ, require
from . import Blueprint, _version
from .coverage import _control_group, _subprocess_group

blp = Blueprint("exports", __name__, description="Downloads for auditors' tools and spreadsheets")

_TABLE = {"200": {"description": "the rows, as CSV or JSON", "content": {
    "text/csv": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}}}}


def _meta(scope: Scope) -> dict[str, Any]:
    ruleset = gapbridge().ruleset
    return {"generated_at": utcnow(), "ruleset": ruleset.hash, "overlays": list(ruleset.overlays), "scope": scope.describe()}


def _download(dataset: str, fmt: str, scope: Scope, items: Iterator[dict[str, Any]], name: str) -> Response:
    first = list(islice(items, 1))  # a fault in the query answers 400 before any byte is sent
    everything = chain(first, items)
    if fmt == "json":
        return Response(json_document(dataset, _meta(scope), everything), mimetype="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}.json"'})
    return Response(stream_with_context(csv_lines(COLUMNS[dataset], everything)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


@blp.route("/exports/gaps")
@require(READ)
@blp.arguments(GapExportArgs, location="query")
@blp.doc(responses=_TABLE)
def export_gaps(args: dict[str, Any]) -> Any:
    """Every gap the filters select (the /gaps filters), unpaged."""
    items = rows.gap_rows(gapbridge().ruleset, args, utcnow())
    return _download("gaps", args["format"], Scope.from_args(args), items, f"gapbridge-gaps-{args['status']}")


@blp.route("/exports/coverage")
@require(READ)
@blp.arguments(CoverageExportArgs, location="query")
@blp.doc(responses=_TABLE)
def export_coverage(args: dict[str, Any]) -> Any:
    """Coverage per control or per sub-process."""
    scope = Scope.from_args(args)
    items = rows.coverage_rows(gapbridge().ruleset, scope, args["group"], utcnow())
    return _download("coverage", args["format"], scope, items, f"gapbridge-coverage-{args['group']}")


@blp.route("/exports/population")
@require(READ)
@blp.arguments(PopulationExportArgs, location="query")
@blp.doc(responses=_TABLE)
def export_population(args: dict[str, Any]) -> Any:
    """The incidents behind one control's or sub-process's numbers (optionally one outcome), for sampling."""
    ruleset = gapbridge().ruleset
    group = _control_group(ruleset, args["control"]) if "control" in args else _subprocess_group(ruleset, args["subprocess"])
    scope = Scope.from_args(args)
    items = rows.population_rows(group, scope, args.get("outcome"), utcnow())
    return _download("population", args["format"], scope, items, f"gapbridge-population-{group.key}")


@blp.route("/exports/oscal/<string:document>")
@require(READ)
@blp.arguments(OscalArgs, location="query")
@blp.doc(responses={"200": {"description": "an OSCAL 1.2.1 JSON document", "content": {"application/json": {"schema": {"type": "object"}}}}})
def export_oscal(args: dict[str, Any], document: str) -> Any:
    """OSCAL assessment results for a period, or the minimal assessment plan they import (same query, same period)."""
    if document not in OSCAL_DOCUMENTS:
        abort(404, description=f"no OSCAL document {document!r}; one of {', '.join(OSCAL_DOCUMENTS)}")
    doc = oscal_documents(Scope.from_args(args))[document]
    return Response(orjson.dumps(doc), mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{document}.json"'})


def oscal_documents(scope: Scope) -> dict[str, Any]:
    """Both documents of one assessment: the results import the plan by its file name."""
    assert scope.start is not None and scope.end is not None
    title = f"GapBridge assessment {scope.label or scope.start.date().isoformat() + ' to ' + scope.end.date().isoformat()}"
    a = assessment.build(gapbridge().ruleset, scope, title=title, now=utcnow(), version=_version())
    return {"assessment-plan": oscal.assessment_plan(a), "assessment-results": oscal.assessment_results(a, "assessment-plan.json")}
