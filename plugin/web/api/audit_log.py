"""The audit log, newest first: syncs, findings opened and closed, accepted risks, write-backs, token use."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ...extensions import db
from ...models import AuditEvent
from ...queries import cursor as cursors
from ...queries.incidents import columns
from ...schemas.common import page_of
from ...schemas.operations import AuditArgs, AuditEventSchema
from ..auth import READ, require
from . import Blueprint

blp = Blueprint("audit_log", __name__, description="The append-only, hash-chained audit log")


@blp.route("/audit-log")
@require(READ)
@blp.arguments(AuditArgs, location="query")
@blp.response(200, page_of(AuditEventSchema, "AuditEventPage"))
def audit_log(args: dict[str, Any]) -> Any:
    key = cursors.query_key("audit-log", args)
    q = sa.select(AuditEvent)
    for name in ("action", "actor", "subject_type", "subject_id"):
        if name in args:
            q = q.where(getattr(AuditEvent, name) == args[name])
    if "since" in args:
        q = q.where(AuditEvent.at >= args["since"])
    if "until" in args:
        q = q.where(AuditEvent.at < args["until"])
    if args.get("cursor"):
        (before,) = cursors.decode(args["cursor"], key, (int,))
        q = q.where(AuditEvent.id < before)
    rows = list(db.session.execute(q.order_by(AuditEvent.id.desc()).limit(args["limit"])).scalars())
    return {"items": [columns(r) for r in rows], "next_cursor": cursors.encode(key, [rows[-1].id]) if len(rows) == args["limit"] else None}
