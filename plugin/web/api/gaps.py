"""Gaps: open, accepted or resolved findings, filtered, sorted and paged by a stable cursor."""

from __future__ import annotations

from typing import Any

from ...models import utcnow
from ...queries import gaps as q
from ...queries.incidents import columns
from ...schemas.common import page_of
from ...schemas.findings import GapArgs, GapSchema
from ...state import gapbridge
from ..auth import READ, require
from . import Blueprint

blp = Blueprint("gaps", __name__, description="Findings of gap checks (and improvements), by status")


def gap_items(args: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    ruleset = gapbridge().ruleset
    rows, nxt = q.gaps(ruleset, args, utcnow())
    items = []
    for r in rows:
        check = ruleset.check(r.finding.check_id)
        items.append({**columns(r.finding), "gap_status": r.status, "check_title": check.title if check else None,
                      "incident": r.incident, "acceptance": r.acceptance})
    return items, nxt


@blp.route("/gaps")
@require(READ)
@blp.arguments(GapArgs, location="query")
@blp.response(200, page_of(GapSchema, "GapPage"))
def gap_list(args: dict[str, Any]) -> Any:
    """Gaps by control (either edition), check, sub-process, severity, status, source, assignment group and period."""
    items, nxt = gap_items(args)
    return {"items": items, "next_cursor": nxt}
