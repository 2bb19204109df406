"""The health check: the one endpoint that needs no token (load balancers and probes call it)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, jsonify

from ..extensions import db
from ..state import gapbridge

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def health() -> Any:
    state = gapbridge()
    try:
        db.session.execute(sa.text("SELECT 1"))
        database = "ok"
    except sa.exc.SQLAlchemyError:
        db.session.rollback()
        database = "unavailable"
    body = {"status": "ok" if database == "ok" else "degraded", "database": database, "ruleset": state.ruleset.hash,
            "checks": len(state.ruleset.checks)}
    return jsonify(body), 200 if database == "ok" else 503
