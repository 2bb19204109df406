"""GapBridge: ITIL incidents checked against ISO/IEC 27001, gaps written back to the ticket."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from flask import Flask

from .config import load_config
from .extensions import db, json_dumps, migrate
from .state import GapBridge

__all__ = ["create_app"]

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")


def create_app(test_config: Mapping[str, Any] | None = None, config_path: str | Path | None = None,
               *, gapbridge_config: dict[str, Any] | None = None) -> Flask:
    """The app factory: defaults, then the config file, then the environment, then extensions."""
    app = Flask(__name__, instance_relative_config=True)
    path = config_path or os.environ.get("GAPBRIDGE_CONFIG")
    config = gapbridge_config if gapbridge_config is not None else load_config(Path(path) if path else None)
    if config.get("instance_path"):
        app.instance_path = str(Path(config["instance_path"]).resolve())
    os.makedirs(app.instance_path, exist_ok=True)
    database_url = config.get("database_url") or f"sqlite:///{Path(app.instance_path) / 'gapbridge.db'}"
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI=normalize_database_url(database_url),
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True, "json_serializer": json_dumps, "json_deserializer": orjson.loads},
        JSON_SORT_KEYS=False,
    )
    app.config.from_prefixed_env("GAPBRIDGE")
    if test_config:
        app.config.update(test_config)
    logging.getLogger("gapbridge").setLevel(config.get("log_level", "INFO"))

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        _sqlite_pragmas(app)
    app.extensions["gapbridge"] = GapBridge(config)

    from .web.api import init_api
    from .web.health import bp as health_bp

    app.register_blueprint(health_bp)
    if config["api"]["enabled"]:
        init_api(app)
    else:  # unknown /api/ paths still answer JSON, not an HTML page
        from .web.api import errors

        errors.init_app(app)
    return app


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs given in the common short forms."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(app: Flask) -> None:
    from sqlalchemy import event

    with app.app_context():
        engine = db.engine

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
