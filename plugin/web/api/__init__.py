"""The auditor and ISMS API under /api/v1: flask-smorest blueprints, one module per resource, documented at /api/openapi.json.

Views stay thin: arguments loaded by a schema, a query or a service called, the answer dumped by a schema.
Errors are JSON everywhere under /api/ (``errors.py``); every view but the health check needs a token (``..auth``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import flask_smorest
from flask import Flask
from webargs.flaskparser import FlaskParser

from ...schemas.common import ErrorSchema
from . import errors


class Parser(FlaskParser):
    # bad input is a 400 with field-level messages; webargs' default 422 is for bodies that parse but do not validate
    DEFAULT_VALIDATION_STATUS = 400

    def __init__(self) -> None:
        # no per-location default: each schema's Meta.unknown (RAISE) decides, so an unknown parameter is named, not dropped
        super().__init__(unknown=None)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = Parser()


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: Any) -> Any:
        return errors.http_error(error)


def _version() -> str:
    try:
        return version("gapbridge")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def init_api(app: Flask) -> Api:
    from swagger_ui_bundle import swagger_ui_path

    app.config.update(
        API_TITLE="GapBridge API",
        API_VERSION=_version(),
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # served from the installed swagger-ui-bundle package: no CDN, these machines and many customers' have no internet
        OPENAPI_SWAGGER_UI_URL="/api/docs/assets/",
        API_SPEC_OPTIONS={
            "info": {"description": (
                "Control coverage, gaps, evidence and accepted risks of the incidents GapBridge checks against "
                "ISO/IEC 27001 Annex A (2013 and 2022). Every endpoint needs a bearer token (`gapbridge tokens create`); "
                "auditors read, ISMS managers also accept risks. Times are UTC ISO 8601; lists are paged by an opaque cursor.")},
            "security": [{"bearerAuth": []}],
        },
    )
    api = Api(app)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer",
                                                        "description": "an API token from `gapbridge tokens create`"})
    errors.init_app(app)

    assets = flask_smorest.Blueprint("api_docs_assets", __name__, static_folder=swagger_ui_path,
                                     static_url_path="/api/docs/assets")
    app.register_blueprint(assets)

    from . import audit_log, checks, controls, coverage, exports, gaps, incidents, risks, sync_runs

    for module in (controls, checks, coverage, gaps, incidents, risks, sync_runs, audit_log, exports):
        api.register_blueprint(module.blp, url_prefix="/api/v1")
    _document_guard_responses(api, app)
    return api


_GUARD_RESPONSES = {
    "401": "no token, or one that is unknown, expired or revoked (WWW-Authenticate says which)",
    "403": "the token's role may not do this",
    "429": "this token's rate limit is spent; Retry-After says when to try again",
    "503": "the database is unavailable; Retry-After says when to try again",
}


def _document_guard_responses(api: Api, app: Flask) -> None:
    """Every guarded operation may answer 401, 403, 429 and 503 with the error body: say so in the document."""
    error = {"description": "", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path in api.spec._paths.values():  # apispec keeps no public way to amend registered operations
        for operation in path.values():
            if isinstance(operation, dict) and "responses" in operation:
                for code, text in _GUARD_RESPONSES.items():
                    operation["responses"].setdefault(code, {**error, "description": text})
