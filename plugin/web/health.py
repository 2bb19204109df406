"""The health check: the one endpoint that needs no token (load balancers and probes call it)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, jsonify

from ..db_schema import head_revision, schema_status
from ..extensions import db
from ..state import gapbridge

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def health() -> Any:
    """200 only when the database answers and its schema is the one this code needs (a schema behind 500s the API)."""
    state = gapbridge()
    try:
        schema = schema_status(db.session.connection())
        database = "ok"
    except sa.exc.SQLAlchemyError:
        db.session.rollback()
        database = "unavailable"
        schema = {"revision": None, "head": head_revision(), "current": False}
    healthy = database == "ok" and schema["current"]
    body = {"status": "ok" if healthy else "degraded", "database": database, "schema": schema, "ruleset": state.ruleset.hash,
            "checks": len(state.ruleset.checks)}
    return jsonify(body), 200 if healthy else 503
