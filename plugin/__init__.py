"""GapBridge: ITIL incidents checked against ISO/IEC 27001, gaps written back to the ticket."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from flask import Flask

from . import db_schema, extensions, logs
from .config import check_database_url, load_config, normalize_database_url
from .db_schema import MIGRATIONS_DIR, StartupError
from .extensions import json_dumps, migrate
from .state import GapBridge

__all__ = ["create_app", "normalize_database_url", "MIGRATIONS_DIR", "StartupError"]

log = logging.getLogger("gapbridge")


def create_app(test_config: Mapping[str, Any] | None = None, config_path: str | Path | None = None,
               *, gapbridge_config: dict[str, Any] | None = None, manage_schema: bool = True) -> Flask:
    """The app factory: defaults, then the config file, then the environment, then extensions, then the schema.

    With ``database.migrate_on_start`` the schema is brought to head under a lock, else a schema behind is logged.
    ``manage_schema=False`` leaves the schema alone: the CLI does, in each command that uses the database.
    Raises ConfigError for bad settings and StartupError when the database or the instance folder cannot be used.
    """
    app = Flask(__name__, instance_relative_config=True)
    path = config_path or os.environ.get("GAPBRIDGE_CONFIG")
    config = gapbridge_config if gapbridge_config is not None else load_config(Path(path) if path else None)
    if config.get("instance_path"):
        app.instance_path = str(Path(config["instance_path"]).resolve())
    try:
        os.makedirs(app.instance_path, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the instance folder {app.instance_path} (instance_path): {exc.strerror}") from None
    if config.get("database_url"):
        check_database_url(config["database_url"], "database_url")  # a config built in code skipped load_config's check
    database_url = config.get("database_url") or f"sqlite:///{Path(app.instance_path) / 'gapbridge.db'}"
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI=normalize_database_url(database_url),
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True, "json_serializer": json_dumps, "json_deserializer": orjson.loads},
        JSON_SORT_KEYS=False,
    )
    app.config.from_prefixed_env("GAPBRIDGE")
    if test_config:
        app.config.update(test_config)
    # here, not only in the CLI: gunicorn workers log (and redact) the same way
    logs.configure(config.get("log_level", "INFO"), config.get("log_format", "text"))

    # extensions.db, not a module-level name: importing the plugin.db package rebinds ``plugin.db``
    db = extensions.db
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        _sqlite_pragmas(app)
    app.extensions["gapbridge"] = GapBridge(config)

    from .web.api import init_api
    from .web.health import bp as health_bp

    app.register_blueprint(health_bp)
    if (config.get("metrics") or {}).get("enabled", True):
        from .metrics import check_multiprocess_dir
        from .web.metrics import bp as metrics_bp

        check_multiprocess_dir()
        app.register_blueprint(metrics_bp)
    if config["api"]["enabled"]:
        init_api(app)
    else:  # unknown /api/ paths still answer JSON, not an HTML page
        from .web.api import errors

        errors.init_app(app)
    dashboard = config.get("dashboard") or {}
    if dashboard.get("enabled", True):
        from .web.dashboard import init_dashboard

        init_dashboard(app, dashboard)
    if manage_schema:
        _schema_on_start(app, config.get("database") or {})
    return app


def _schema_on_start(app: Flask, options: Mapping[str, Any]) -> None:
    """Migrate under the lock, or (switched off) only say that the schema is behind: /healthz then answers 503."""
    if options.get("migrate_on_start", True):
        try:
            db_schema.upgrade_under_lock(app, options.get("migrate_lock_timeout_seconds", 600))
        except db_schema.DatabaseUnavailable as exc:
            # serve anyway: the API answers 503 with Retry-After and /healthz says why, rather than a crash loop
            log.error("%s; /healthz answers 503 until the schema is current (restart, or %s)", exc, db_schema.UPGRADE_HINT)
        except StartupError as exc:
            log.error("gapbridge cannot start: %s", exc)  # gunicorn's worker log shows this line above its traceback
            with app.app_context():
                extensions.db.engine.dispose()  # the app is not returned: close what its pool holds
            raise
        return
    try:
        status = db_schema.check(app)
    except StartupError as exc:
        log.warning("%s", exc)
        return
    if not status["current"]:
        log.warning("%s", db_schema.behind_message(status["revision"], status["head"]))


def _sqlite_pragmas(app: Flask) -> None:
    from sqlalchemy import event

    with app.app_context():
        engine = extensions.db.engine

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # only takes effect on a new file: an incident row (raw record included) is about 4 KiB,
            # which at the default 4 KiB page spills each row onto an overflow page
            cur.execute("PRAGMA page_size=8192")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
