"""``gapbridge users``: the people who sign in to the dashboard."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from ..models import TOKEN_ROLES, DashboardUser, utcnow
from ..rules.clocks import format_utc
from . import Context, echo_table, fail, main, migrate_db
from .tokens import _operator


@main.group("users")
def users_group() -> None:
    """Create, list, disable and unlock dashboard users; set their passwords."""


def _password(username: str, from_stdin: bool, prompt: str = "Password") -> str:
    """The new password: one line of stdin (scripts), else asked twice without echo. Checked before anything is written."""
    from ..services import users

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(prompt, hide_input=True, confirmation_prompt="Repeat it", prompt_suffix=": ")
    try:
        users.check_password(username, password)
    except users.UserError as exc:
        fail(str(exc))
    return password


_PASSWORD_STDIN = click.option("--password-stdin", "password_stdin", is_flag=True,
                               help="Read the password from the first line of stdin instead of asking (for scripts).")


@users_group.command("create")
@click.argument("name")
@click.option("--role", required=True, metavar="ROLE",
              help=f"{' | '.join(TOKEN_ROLES)}. auditor: reads; isms_manager: reads and accepts risks; admin: everything.")
@_PASSWORD_STDIN
@click.pass_obj
def users_create(obj: Context, name: str, role: str, password_stdin: bool) -> None:
    """Create the user NAME (compared without regard to case) with a password of at least 12 characters."""
    from ..services import users

    try:  # before the password is asked: a typo in the name or role should not cost typing it twice
        username = users.check_username(name)
        users.check_role(role)
    except users.UserError as exc:
        fail(str(exc))
    app = obj.app()
    migrate_db(app)
    with app.app_context():
        if users.find(username) is not None:
            fail(f"a dashboard user {username!r} already exists (names are compared without regard to case)")
        password = _password(username, password_stdin)
        try:
            user = users.create(username, role, password, _operator())
        except users.UserError as exc:
            fail(str(exc))
        click.echo(f"created dashboard user {user.username!r} ({user.role}); they sign in at /dashboard/login")


def _row(user: DashboardUser, now: datetime) -> dict[str, Any]:
    from ..services.users import status

    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return {"username": user.username, "role": user.role, "status": status(user, now), "created_at": iso(user.created_at),
            "created_by": user.created_by, "last_sign_in_at": iso(user.last_sign_in_at), "failed_attempts": user.failed_attempts,
            "locked_until": iso(user.locked_until) if status(user, now) == "locked" else None,
            "disabled_at": iso(user.disabled_at), "password_changed_at": iso(user.password_changed_at)}


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout, for scripts.")
@click.pass_obj
def users_list(obj: Context, as_json: bool) -> None:
    """Every user with role, status and dates (never a password or its hash)."""
    from ..services import users

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        now = utcnow()
        found = users.list_users()
        rows = [_row(u, now) for u in found]
        times = [(u.created_at, u.last_sign_in_at, u.locked_until if r["locked_until"] else None) for u, r in zip(found, rows, strict=True)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no dashboard users (create one with: gapbridge users create NAME --role ROLE)", err=True)
        return

    def when(at: datetime | None) -> str:
        return format_utc(at) if at else "-"

    header = ("USERNAME", "ROLE", "STATUS", "CREATED", "LAST SIGN-IN", "FAILED", "LOCKED UNTIL")
    echo_table(header, [(r["username"], r["role"], r["status"], when(created), when(last), str(r["failed_attempts"]), when(locked))
                        for r, (created, last, locked) in zip(rows, times, strict=True)])


@users_group.command("disable")
@click.argument("name")
@click.pass_obj
def users_disable(obj: Context, name: str) -> None:
    """Disable NAME: they cannot sign in, and their sessions end at once."""
    from ..services import users

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        try:
            user = users.disable(name, _operator())
        except users.UserError as exc:
            fail(str(exc))
        click.echo(f"disabled dashboard user {user.username!r}; their sessions have ended")


@users_group.command("enable")
@click.argument("name")
@click.pass_obj
def users_enable(obj: Context, name: str) -> None:
    """Let a disabled NAME sign in again."""
    from ..services import users

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        try:
            user = users.enable(name, _operator())
        except users.UserError as exc:
            fail(str(exc))
        click.echo(f"enabled dashboard user {user.username!r}")


@users_group.command("set-password")
@click.argument("name")
@_PASSWORD_STDIN
@click.pass_obj
def users_set_password(obj: Context, name: str, password_stdin: bool) -> None:
    """Give NAME a new password: their sessions end, and a lock-out is lifted."""
    from ..services import users

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        try:
            username = users.get(name).username  # an unknown name is told before the password is asked
            user = users.set_password(username, _password(username, password_stdin, "New password"), _operator())
        except users.UserError as exc:
            fail(str(exc))
        click.echo(f"set a new password for dashboard user {user.username!r}; their sessions have ended")


@users_group.command("unlock")
@click.argument("name")
@click.pass_obj
def users_unlock(obj: Context, name: str) -> None:
    """Lift NAME's lock-out after failed sign-ins, and forget those failures."""
    from ..services import users

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        try:
            username = users.get(name).username
            changed = users.unlock(username, _operator())
        except users.UserError as exc:
            fail(str(exc))
        click.echo(f"unlocked dashboard user {username!r}" if changed else f"dashboard user {username!r} was not locked")
