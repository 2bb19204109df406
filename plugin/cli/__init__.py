"""The ``gapbridge`` command: the group and what every command group shares; one module per group."""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import click
import sqlalchemy as sa
from flask import Flask

from connectors.base import redact_urls

from .. import create_app
from ..config import ConfigError
from ..rules.yamlsource import MappingErrors
from ..state import gapbridge

log = logging.getLogger("gapbridge")

USER_ERROR = 2


def fail(message: str, code: int = USER_ERROR) -> NoReturn:
    click.echo(f"gapbridge: {message}", err=True)
    sys.exit(code)


class Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._app: Flask | None = None

    def app(self, config: dict[str, Any] | None = None) -> Flask:
        if self._app is None:
            try:
                self._app = create_app(config_path=self.config_path, gapbridge_config=config)
                with self._app.app_context():
                    _ = gapbridge(self._app).ruleset  # a bad mapping stops start-up here
            except ConfigError as exc:
                fail(f"configuration error:\n{exc}")
            except MappingErrors as exc:
                fail(f"mapping error ({len(exc.errors)}):\n{exc}")
        return self._app

    def close(self) -> None:
        """Close the database connections of the app this command built."""
        if self._app is not None:
            from ..extensions import db

            with self._app.app_context():
                db.session.remove()
                db.engine.dispose()


def migrate_db(app: Flask) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        logging.getLogger("alembic").setLevel(logging.WARNING)
        try:
            upgrade()  # the first use of the database: an unreachable one fails here
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            # the driver's words, not SQLAlchemy's wrapper (statement, link); no URL credentials, whatever the driver says
            fail(f"cannot use the database: {redact_urls(str(exc.orig or exc)).strip()}", code=1)


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="GAPBRIDGE_CONFIG",
              help="Configuration file (default: $GAPBRIDGE_CONFIG, else built-in defaults).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """GapBridge: ITSM incidents checked against ISO/IEC 27001, gaps written back to the ticket."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Context(config_path)
    ctx.call_on_close(ctx.obj.close)


# the command groups register themselves on ``main``
from . import audit, export, mappings, pipeline, tokens  # noqa: E402,F401
