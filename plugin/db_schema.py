"""The database schema's revision: where the database is, where this code needs it, and migrating to it under a lock.

Every process that may migrate (each gunicorn worker, each instance, each CLI command) goes through
``upgrade_under_lock``, so that only one runs the migrations while the others wait and then find nothing to do.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from connectors.base import redact_urls

from .errors import GapBridgeError
from .extensions import db

log = logging.getLogger("gapbridge")

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")
# pg_advisory_lock key shared by every GapBridge process on one database ("gapbridge" in ASCII, within 63 bits)
MIGRATION_LOCK_KEY = 0x67_61_70_62_72_69_64_67
UPGRADE_HINT = "run `gapbridge db upgrade`"


class StartupError(GapBridgeError):
    """An operator's fault found at start-up (database, folders); the message is one line naming what and where."""


class DatabaseUnavailable(StartupError):
    """The database could not be reached or opened (it may come up later)."""


@functools.cache
def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(MIGRATIONS_DIR)


def of_this_dialect(dialect: str) -> Any:
    """Alembic's ``include_object``: leave out of a comparison what the models build only on another database
    (``ddl_if(dialect=...)``: an index SQLite needs where PostgreSQL has INCLUDE columns)."""
    def include(obj: Any, _name: str | None, _type: str, _reflected: bool, _compare_to: Any) -> bool:
        only = getattr(getattr(obj, "_ddl_if", None), "dialect", None)
        return only is None or dialect in ((only,) if isinstance(only, str) else only)
    return include


def head_revision() -> str | None:
    """The revision this code's migrations end at."""
    head: str | None = _script().get_current_head()
    return head


def known_revisions() -> set[str]:
    return {rev.revision for rev in _script().walk_revisions()}


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.migration import MigrationContext

    rev: str | None = MigrationContext.configure(connection).get_current_revision()
    return rev


def schema_status(connection: sa.Connection) -> dict[str, Any]:
    revision, head = current_revision(connection), head_revision()
    return {"revision": revision, "head": head, "current": revision == head}


def where(url: sa.URL) -> str:
    """The database named for a message: the file for SQLite, else the URL without its credentials."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite database {url.database or ':memory:'}"
    return "database " + redact_urls(url.render_as_string(hide_password=True))


def database_error(exc: Exception, url: sa.URL | None) -> DatabaseUnavailable:
    """A driver's error as one line: the driver's words (not SQLAlchemy's wrapper), where, and no credentials."""
    orig = getattr(exc, "orig", None) or exc
    words = " ".join(str(orig).split())
    at = ""
    if url is not None and url.get_backend_name() == "sqlite":
        at = f" (SQLite file {url.database or ':memory:'}"
        folder = Path(url.database).parent if url.database else None
        if folder is not None and "unable to open" in words:
            at += f"; folder {folder} does not exist" if not folder.is_dir() else f"; folder {folder} cannot be written"
        at += ")"
    elif url is not None:
        at = f" (at {redact_urls(url.render_as_string(hide_password=True))})"
    return DatabaseUnavailable(redact_urls(f"cannot use the database: {words}{at}"))


def behind_message(revision: str | None, head: str | None) -> str:
    return f"the database schema is at revision {revision or '(none: empty database)'}, this GapBridge needs {head}: {UPGRADE_HINT}"


def check(app: Flask) -> dict[str, Any]:
    """The schema's status; raises StartupError when the database cannot be used or is at a revision this code does not know."""
    with app.app_context():
        engine = db.engine
        try:
            with engine.connect() as conn:
                status = schema_status(conn)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise database_error(exc, engine.url) from exc  # -v shows the driver's traceback
    _refuse_unknown(status["revision"])
    return status


def _refuse_unknown(revision: str | None) -> None:
    if revision is not None and revision not in known_revisions():
        raise StartupError(f"the database schema is at revision {revision}, which this GapBridge does not know "
                           f"(its newest is {head_revision()}): a newer GapBridge migrated it; run that version")


def upgrade_under_lock(app: Flask, lock_timeout: float) -> bool:
    """Bring the schema to head, one process at a time; True when this process ran migrations."""
    from flask_migrate import upgrade

    if check(app)["current"]:
        return False  # the common start: nothing to do, no lock taken
    with app.app_context():
        engine = db.engine
        try:
            with _migration_lock(engine, lock_timeout):
                with engine.connect() as conn:  # another process may have migrated while this one waited
                    if schema_status(conn)["current"]:
                        return False
                logging.getLogger("alembic").setLevel(logging.WARNING)
                log.info("migrating the %s to %s", where(engine.url), head_revision())
                upgrade(directory=MIGRATIONS_DIR)
                return True
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise database_error(exc, engine.url) from exc  # -v shows the driver's traceback


@contextmanager
def _migration_lock(engine: sa.Engine, timeout: float) -> Iterator[None]:
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        with _pg_lock(engine, timeout):
            yield
    elif backend == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with _file_lock(Path(str(engine.url.database)).with_name(Path(str(engine.url.database)).name + ".migrate-lock"), timeout):
            yield
    else:  # an in-memory database is private to its process
        yield


def _wait(try_lock: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not try_lock():
        if time.monotonic() > deadline:
            raise StartupError(f"gave up after {timeout:g} s waiting for another process migrating the {what}; "
                               f"if none is, {UPGRADE_HINT}")
        time.sleep(0.2)


@contextmanager
def _pg_lock(engine: sa.Engine, timeout: float) -> Iterator[None]:
    # a session-level advisory lock on a connection of its own; Alembic migrates on another connection
    with engine.connect() as conn:
        def take() -> bool:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY}).scalar())
            conn.commit()  # hold no snapshot while waiting or migrating
            return got
        _wait(take, where(engine.url), timeout)
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()


@contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    # not SQLite's own write lock: Alembic's connection needs that one while this is held
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the embedded default serves one process there anyway
        yield
        return
    try:
        fh = open(path, "a")  # noqa: SIM115 (held across the yield)
    except OSError as exc:
        raise StartupError(f"cannot write the migration lock {path}: {exc.strerror}") from None
    with fh:
        def take() -> bool:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
        _wait(take, f"SQLite database {path.with_suffix('')}", timeout)  # the lock file is named after the database
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
