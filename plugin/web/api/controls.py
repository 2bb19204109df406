"""Controls: the catalogue of both editions with the crosswalk; one control with its checks and sub-process relations."""

from __future__ import annotations

from typing import Any

from ...queries import controls as q
from ...queries.cursor import page_list
from ...schemas.catalogue import ControlDetailSchema, ControlListArgs, ControlSummarySchema
from ...schemas.common import page_of
from ...state import gapbridge
from ..auth import READ, require
from . import Blueprint

blp = Blueprint("controls", __name__, description="ISO/IEC 27001 controls of both editions; either edition's id is taken everywhere")


@blp.route("/controls")
@require(READ)
@blp.arguments(ControlListArgs, location="query")
@blp.response(200, page_of(ControlSummarySchema, "ControlPage"))
def control_list(args: dict[str, Any]) -> Any:
    """The catalogue of one edition, each control with its counterparts in the other."""
    ruleset = gapbridge().ruleset
    controls = [c for c in ruleset.catalogue.controls[args["edition"]].values() if "kind" not in args or c.kind == args["kind"]]
    page, nxt = page_list(controls, lambda c: c.id, "controls", args)
    return {"items": [q.summary(ruleset, c) for c in page], "next_cursor": nxt}


@blp.route("/controls/<string:control_id>")
@require(READ)
@blp.response(200, ControlDetailSchema)
def control_detail(control_id: str) -> Any:
    """One control (A.5.26, 5.26, A.16.1.5, 2013:A.16.1.5): its ids in both editions, its checks, its ITIL relations."""
    ruleset = gapbridge().ruleset
    return q.detail(ruleset, q.resolve_one(ruleset, control_id))
