"""Sync runs: what each sync fetched, stored and rejected, how long it took, and why it failed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ...extensions import db
from ...models import SyncRun
from ...queries import cursor as cursors
from ...queries.incidents import columns
from ...schemas.common import page_of
from ...schemas.operations import SyncRunArgs, SyncRunSchema
from ..auth import READ, require
from . import Blueprint

blp = Blueprint("sync_runs", __name__, description="Syncs from the ITSM tools, newest first")


@blp.route("/sync-runs")
@require(READ)
@blp.arguments(SyncRunArgs, location="query")
@blp.response(200, page_of(SyncRunSchema, "SyncRunPage"))
def sync_runs(args: dict[str, Any]) -> Any:
    key = cursors.query_key("sync-runs", args)
    q = sa.select(SyncRun)
    for name in ("source", "status"):
        if name in args:
            q = q.where(getattr(SyncRun, name) == args[name])
    if args.get("cursor"):
        (before,) = cursors.decode(args["cursor"], key, (int,))
        q = q.where(SyncRun.id < before)
    runs = list(db.session.execute(q.order_by(SyncRun.id.desc()).limit(args["limit"])).scalars())
    items = [{**columns(r), "duration_s": (r.finished_at - r.started_at).total_seconds() if r.finished_at else None} for r in runs]
    return {"items": items, "next_cursor": cursors.encode(key, [runs[-1].id]) if len(runs) == args["limit"] else None}
