"""Every error under /api/ is JSON: ``{"error", "message", "fields"?}``; bad input is a 4xx that names what was wrong, never a 500."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from flask import Flask, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

log = logging.getLogger("gapbridge.api")
RETRY_AFTER_SECONDS = 30


def _is_api() -> bool:
    return request.path.startswith("/api/")


def _flatten(messages: Any) -> dict[str, Any]:
    """webargs nests messages by location ({"query": {"limit": [...]}}): the caller knows where, so name the parameter."""
    if not isinstance(messages, dict):
        return {"_": messages}
    out: dict[str, Any] = {}
    for key, value in messages.items():
        if key in ("query", "json", "path", "form", "headers", "view_args") and isinstance(value, dict):
            out.update(value)
        else:
            out[key] = value
    return out


def http_error(exc: HTTPException) -> Any:
    if not _is_api():
        return exc  # Flask's own page outside the API
    body: dict[str, Any] = {"error": exc.name, "message": exc.description}
    headers: dict[str, str] = {}
    data = getattr(exc, "data", None) or {}
    if "message" in data:
        body["message"] = data["message"]
    messages = data.get("errors") or data.get("messages")
    if messages:
        body["fields"] = _flatten(messages)
        if exc.code == 400 and "message" not in data:
            body["message"] = "invalid " + ", ".join(sorted(body["fields"]))
    headers.update(data.get("headers") or {})
    if exc.code == 405 and isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        body["allowed"] = sorted(exc.valid_methods)
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    if exc.code is not None and exc.code >= 500:
        body["message"] = "internal error; the server log has the details"
    headers.update({k: v for k, v in (exc.get_headers() or []) if k.lower() in ("www-authenticate", "retry-after")})
    return jsonify(body), exc.code, headers


def _validation_error(exc: ValidationError) -> Any:
    """Raised by a view or a service on input only it can judge (an unknown control, a cursor of another query)."""
    fields_ = _flatten(exc.messages)
    return jsonify({"error": "Bad Request", "message": "invalid " + ", ".join(sorted(fields_)), "fields": fields_}), 400


def _database_unavailable(exc: Exception) -> Any:
    # down or unreachable: not the caller's fault, and worth retrying
    log.warning("database unavailable for %s %s: %s", request.method, request.path, type(exc).__name__)
    from ...extensions import db

    db.session.rollback()
    if not _is_api():
        return "the database is unavailable; try again shortly\n", 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    body = jsonify({"error": "Service Unavailable", "message": "the database is unavailable; try again shortly"})
    return body, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}


def _no_nul_bytes() -> Any:
    """A NUL byte cannot be stored or compared in PostgreSQL text: refuse it by name, before any query."""
    if not _is_api():
        return None
    bad = sorted({k for k, v in request.args.items(multi=True) if "\x00" in k or "\x00" in v})
    if bad or "\x00" in request.path:
        fields_ = {k.replace("\x00", "\\0"): ["contains a NUL byte"] for k in bad} or {"path": ["contains a NUL byte"]}
        return _validation_error(ValidationError(fields_))
    return None


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(ValidationError, _validation_error)
    for error in (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError):
        app.register_error_handler(error, _database_unavailable)
    app.before_request(_no_nul_bytes)
