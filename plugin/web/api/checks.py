"""Checks: what each check asks of an incident, for which controls and sub-process."""

from __future__ import annotations

from typing import Any

from flask import abort

from ...queries import controls as q
from ...queries.cursor import page_list
from ...schemas.catalogue import CheckDetailSchema, CheckListArgs, CheckSummarySchema
from ...schemas.common import page_of
from ...state import gapbridge
from ..auth import READ, require
from . import Blueprint

blp = Blueprint("checks", __name__, description="The checks of the loaded mappings (overlays included)")


@blp.route("/checks")
@require(READ)
@blp.arguments(CheckListArgs, location="query")
@blp.response(200, page_of(CheckSummarySchema, "CheckPage"))
def check_list(args: dict[str, Any]) -> Any:
    """Every check of the loaded mappings."""
    checks = [c for c in gapbridge().ruleset.checks
              if args.get("kind", c.kind) == c.kind and args.get("subprocess", c.subprocess) == c.subprocess]
    page, nxt = page_list(checks, lambda c: c.id, "checks", args)
    return {"items": [q.check_summary(c) for c in page], "next_cursor": nxt}


@blp.route("/checks/<string:check_id>")
@require(READ)
@blp.response(200, CheckDetailSchema)
def check_detail(check_id: str) -> Any:
    """One check: what it asks, why, and how to remedy a failure."""
    check = gapbridge().ruleset.check(check_id.upper()) or abort(404, description=f"no check {check_id!r} in the loaded mappings")
    return q.check_detail(check)
