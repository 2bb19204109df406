"""The ``gapbridge`` command: the group and what every command group shares; one module per group."""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import click
import sqlalchemy as sa
from flask import Flask

from connectors.base import redacted_traceback

from .. import create_app, db_schema, logs
from ..config import ConfigError
from ..db_schema import StartupError
from ..errors import GapBridgeError
from ..rules.yamlsource import MappingErrors
from ..state import gapbridge

log = logging.getLogger("gapbridge")

USER_ERROR = 2  # the operator's input: configuration, mappings, arguments
RUNTIME_ERROR = 1  # the environment: a database that cannot be reached, a folder that cannot be written


def fail(message: str, code: int = USER_ERROR) -> NoReturn:
    click.echo(f"gapbridge: {message}", err=True)
    sys.exit(code)


def config_failure(exc: ConfigError) -> NoReturn:
    fail(f"configuration error:\n{exc}")  # then one line per fault, each naming its key


class Context:
    def __init__(self, config_path: str | None, verbose: bool = False) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self._app: Flask | None = None

    def app(self, config: dict[str, Any] | None = None) -> Flask:
        if self._app is None:
            try:
                # each command that uses the database migrates it itself (migrate_db), the others never touch it
                self._app = create_app(config_path=self.config_path, gapbridge_config=config, manage_schema=False)
                with self._app.app_context():
                    _ = gapbridge(self._app).ruleset  # a bad mapping stops start-up here
            except ConfigError as exc:
                config_failure(exc)
            except MappingErrors as exc:
                fail(f"mapping error ({len(exc.errors)}):\n{exc}")
        return self._app

    def database_url(self) -> sa.URL | None:
        if self._app is None:
            return None
        from ..extensions import db

        with self._app.app_context():
            return db.engine.url

    def close(self) -> None:
        """Close the database connections of the app this command built."""
        if self._app is not None:
            from ..extensions import db

            with self._app.app_context():
                db.session.remove()
                db.engine.dispose()


def migrate_db(app: Flask, *, force: bool = False) -> None:
    """The first use of the database in a command: bring the schema to head under the lock (an unreachable database fails here).

    With ``database.migrate_on_start`` off only ``force`` (``gapbridge db upgrade``) migrates; other commands refuse a schema behind.
    """
    options = gapbridge(app).config.get("database") or {}
    # a StartupError (database unreachable, lock not had) is the top group's to report
    if force or options.get("migrate_on_start", True):
        db_schema.upgrade_under_lock(app, options.get("migrate_lock_timeout_seconds", 600))
        return
    schema = db_schema.check(app)  # not ``status``: that is the command module's name here
    if not schema["current"]:
        fail(db_schema.behind_message(schema["revision"], schema["head"]), code=RUNTIME_ERROR)


class Group(click.Group):
    """The top group: an operator's environment fault met anywhere in a command is one line, exit 1 (``-v`` adds the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            config_failure(exc)
        except (StartupError, OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            if isinstance(ctx.obj, Context) and ctx.obj.verbose:
                click.echo(redacted_traceback(exc), err=True)
            if isinstance(exc, sa.exc.DBAPIError):  # the database went away during the command
                message = str(db_schema.database_error(exc, ctx.obj.database_url() if isinstance(ctx.obj, Context) else None))
            elif isinstance(exc, OSError):
                message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            else:
                message = str(exc)
            fail(message, code=RUNTIME_ERROR)
        except MappingErrors as exc:
            fail(f"mapping error ({len(exc.errors)}):\n{exc}")
        except GapBridgeError as exc:  # any other fault of ours carries its own words; a traceback would only hide them
            if isinstance(ctx.obj, Context) and ctx.obj.verbose:
                click.echo(redacted_traceback(exc), err=True)
            fail(str(exc), code=RUNTIME_ERROR)


@click.group(cls=Group)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="GAPBRIDGE_CONFIG",
              help="Configuration file (default: $GAPBRIDGE_CONFIG, else built-in defaults).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail, and the traceback of an error.")
@click.version_option(package_name="gapbridge", prog_name="gapbridge")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """GapBridge: ITSM incidents checked against ISO/IEC 27001, gaps written back to the ticket."""
    # timestamped text until the configuration is read; create_app then applies log_level and log_format (-v stays DEBUG)
    logs.configure("INFO", "text", debug=verbose)
    ctx.obj = Context(config_path, verbose)
    ctx.call_on_close(ctx.obj.close)



def echo_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Rows as columns padded to their widest cell (``tokens list``, ``users list``)."""
    table = [header, *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())

# the command groups register themselves on ``main``
from . import audit, export, mappings, pipeline, status, tokens, users, worker  # noqa: E402,F401
