"""The gap report of a dashboard view, downloaded as PDF or CSV: the same report ``gapbridge report --period`` writes,
for the page's filters (and edition), made from the same templates as the pages."""

from __future__ import annotations

import re
from typing import Any

from flask import Response

from ...models import utcnow
from ...queries.overview import known_sources
from ...services import period_report as pr
from ...state import gapbridge
from . import bp
from .filters import edition, parse
from .signin import signed_in

MEDIA = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8"}


@bp.get("/report.<string:fmt>")
@signed_in()
def report(fmt: str) -> Any:
    if fmt not in MEDIA:
        return Response(f"no {fmt!r} report: pdf or csv\n", status=404, mimetype="text/plain")
    f = parse()
    ed = edition()
    state = gapbridge()
    from ..api import _version

    built = pr.build(state.ruleset, f.scope, utcnow(), edition=ed, sources=known_sources(state.config["connectors"]),
                     version=_version(), overrides=str(state.overrides_path) if state.overrides_path else None)
    body = pr.RENDERERS[fmt](built)
    data = body if isinstance(body, bytes) else body.encode()
    name = "gap-report-" + re.sub(r"[^A-Za-z0-9._-]+", "-", f.values.get("period") or "all") + f".{fmt}"
    return Response(data, mimetype=MEDIA[fmt], headers={"Content-Disposition": f'attachment; filename="{name}"'})
