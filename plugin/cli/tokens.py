"""``gapbridge tokens``: API tokens."""

from __future__ import annotations

import getpass
import json
import re
from datetime import datetime, time, timedelta, timezone
from typing import Any

import click

from ..models import TOKEN_ROLES, ApiToken, utcnow
from ..rules.clocks import format_utc
from ..state import gapbridge
from . import Context, echo_table, fail, main, migrate_db

_DAYS = re.compile(r"^(\d{1,5})d$")


@main.group("tokens")
def tokens_group() -> None:
    """Create, list and revoke API tokens."""


def parse_expiry(text: str, now: datetime) -> datetime:
    """``90d`` (from now), ``2027-03-31`` (through that day, UTC) or an ISO time with Z or an offset."""
    text = text.strip()
    if m := _DAYS.match(text):
        return now + timedelta(days=int(m.group(1)))
    try:
        if len(text) == 10:  # a date: the token works through that day
            return datetime.combine(datetime.strptime(text, "%Y-%m-%d").date() + timedelta(days=1), time(), timezone.utc)
        at = datetime.fromisoformat(text)
    except ValueError:
        fail(f"invalid --expires {text!r}: use a number of days (90d), a date (2027-03-31) or a time (2027-03-31T12:00Z)")
    if at.tzinfo is None:
        fail(f"--expires {text!r} has no time zone: add Z for UTC or an offset such as +02:00")
    return at.astimezone(timezone.utc)


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in the environment or the password database (some containers)
        return "cli"


@tokens_group.command("create")
@click.option("--name", required=True, help="A unique name: letters, digits, '.', '_', '-' (e.g. the auditor and the year).")
@click.option("--role", required=True, type=click.Choice(TOKEN_ROLES),
              help="auditor: read; isms_manager: read and accept risks; admin: everything.")
@click.option("--expires", required=True, metavar="WHEN", help="90d, 2027-03-31 (through that day, UTC) or 2027-03-31T12:00Z.")
@click.pass_obj
def tokens_create(obj: Context, name: str, role: str, expires: str) -> None:
    """Create a token and print it once on stdout (only its hash is stored)."""
    from ..services import tokens

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        now = utcnow()
        try:
            token, plaintext = tokens.create(name, role, parse_expiry(expires, now), _operator(), now,
                                             max_days=gapbridge(app).config["api"]["token_max_days"])
        except tokens.TokenError as exc:
            fail(str(exc))
        expires_at = token.expires_at
    click.echo(plaintext)
    click.echo(f"Created token {name!r} ({role}), expires {format_utc(expires_at)}. "
               "Store it now: it is not shown again and cannot be recovered.", err=True)


def _row(token: ApiToken, now: datetime) -> dict[str, Any]:
    from ..services.tokens import status

    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return {"name": token.name, "role": token.role, "prefix": token.prefix, "status": status(token, now),
            "created_at": iso(token.created_at), "created_by": token.created_by, "expires_at": iso(token.expires_at),
            "last_used_at": iso(token.last_used_at), "revoked_at": iso(token.revoked_at), "revoked_by": token.revoked_by}


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout, for scripts.")
@click.pass_obj
def tokens_list(obj: Context, as_json: bool) -> None:
    """Every token with its role, prefix, dates and status (never the token or its hash)."""
    from ..services import tokens

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        now = utcnow()
        found = tokens.list_tokens()
        rows = [_row(t, now) for t in found]
        times = [(t.created_at, t.expires_at, t.last_used_at, t.revoked_at) for t in found]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no tokens (create one with: gapbridge tokens create)", err=True)
        return

    def when(at: datetime | None) -> str:
        return format_utc(at) if at else "-"

    header = ("NAME", "ROLE", "PREFIX", "STATUS", "CREATED", "EXPIRES", "LAST USED", "REVOKED")
    echo_table(header, [(r["name"], r["role"], r["prefix"], r["status"], *(when(t) for t in ts))
                        for r, ts in zip(rows, times, strict=True)])


@tokens_group.command("revoke")
@click.argument("name")
@click.pass_obj
def tokens_revoke(obj: Context, name: str) -> None:
    """Revoke the token NAME (or its id): it stops working at once."""
    from ..services import tokens

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        try:
            token = tokens.revoke(name, _operator())
        except tokens.TokenError as exc:
            fail(str(exc))
        click.echo(f"revoked token {token.name!r} ({token.role})")
