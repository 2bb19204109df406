"""/metrics for Prometheus, behind a token: any API token (``Authorization: Bearer gbt_...``) or ``metrics.token``.

With ``metrics.bind`` the metrics are served on that address only (``plugin.metrics.MetricsServer``), where the
network is the protection and a token is asked only if ``metrics.token`` is set; the web app's /metrics is then a 404.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..metrics import LISTENER_KEY, exposition
from ..state import gapbridge
from .auth import READ, require

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Any:
    """The metrics; 401 without a valid token."""
    options = {"bind": None, "token": None, **(gapbridge().config.get("metrics") or {})}
    on_listener = bool(request.environ.get(LISTENER_KEY))
    if options["bind"] and not on_listener:
        response = jsonify({"error": "Not Found", "message": "metrics are served on the metrics address (metrics.bind) only"})
        response.status_code = 404
        return response
    if on_listener and not options["token"]:
        return _answer()
    given = _bearer()
    # bytes: compare_digest refuses non-ASCII text, which a caller may send
    if options["token"] and given is not None and hmac.compare_digest(given.encode(), options["token"].encode()):
        return _answer()
    return _with_api_token()


@require(READ)
def _with_api_token() -> Response:
    return _answer()


def _bearer() -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _answer() -> Response:
    body, content_type = exposition(current_app._get_current_object())  # type: ignore[attr-defined]
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
