"""Signing in to the dashboard: /dashboard/login and /dashboard/logout, and ``signed_in(...)`` for the page views.

A session ends when it has been idle for ``dashboard.idle_timeout_minutes``, ``dashboard.session_lifetime_hours``
after sign-in however active it was, and at once when the user's password is changed, the user is disabled or
signs out: each of those raises the user's session generation, which every session carries. Signing out therefore
ends the user's sessions in every browser, and a copy of the cookie is worth nothing after it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

from flask import flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from ...models import TOKEN_ROLES
from ...services import users
from ..auth import ADMIN, READ, RISK_WRITE, _allowed
from . import bp
from .security import dashboard_state, new_csrf_token

__all__ = ["READ", "RISK_WRITE", "ADMIN", "DashboardUserInfo", "current_user", "signed_in", "safe_next"]

log = logging.getLogger("gapbridge.dashboard")

F = TypeVar("F", bound=Callable[..., Any])

HOME = "/dashboard/"
ROLE_LABELS = {"auditor": "Auditor", "isms_manager": "ISMS manager", "admin": "Administrator"}
# "last seen" is written back into the cookie at most this often, not on every request
_SEEN_RESOLUTION_SECONDS = 60


@dataclass(frozen=True)
class DashboardUserInfo:
    """The signed-in user as views and templates see it (``g.dashboard_user``, ``dashboard_user`` in templates)."""

    id: int
    username: str
    role: str

    @property
    def can_accept_risks(self) -> bool:
        """Accept, amend and revoke risk acceptances: isms_manager and admin; an auditor only reads."""
        return self.role in RISK_WRITE

    @property
    def role_label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)

    @property
    def actor(self) -> str:
        """The user as the actor of an audit record: ``dashboard:<name>``."""
        return users.actor(self.username)


def current_user() -> DashboardUserInfo | None:
    """The signed-in user of this request, or None; a session that ran out or was ended is cleared on the way."""
    if "dashboard_user" not in g:
        g.dashboard_user = _session_user()
    return cast("DashboardUserInfo | None", g.dashboard_user)


def _session_user() -> DashboardUserInfo | None:
    uid, generation, signed_in_at, seen_at = (session.get(k) for k in ("uid", "gen", "at", "seen"))
    if not all(isinstance(v, int) for v in (uid, generation, signed_in_at, seen_at)):
        return None
    state = dashboard_state()
    now = int(state.clock().timestamp())
    if now - cast(int, signed_in_at) >= state.session_lifetime.total_seconds():
        _end("reached its lifetime")
        return None
    if now - cast(int, seen_at) >= state.idle_timeout.total_seconds():
        _end("was idle too long")
        return None
    user = users.session_user(cast(int, uid), cast(int, generation))
    if user is None:  # disabled, a new password, or signed out elsewhere
        _end("was ended")
        return None
    if now - cast(int, seen_at) >= _SEEN_RESOLUTION_SECONDS:
        session["seen"] = now
    return DashboardUserInfo(user.id, user.username, user.role)


def _end(why: str) -> None:
    log.info("dashboard session of user id %s %s", session.get("uid"), why)
    session.clear()


def signed_in(*roles: str | Iterable[str]) -> Callable[[F], F]:
    """A view decorator: a signed-in user whose role is among ``roles`` (each a role or a set such as RISK_WRITE).

    No roles: any signed-in user. ``admin`` passes every guard. Not signed in: a redirect to the sign-in page, which
    comes back here after; signed in with another role: the 403 page. The wrapped view carries ``required_roles``.
    """
    allowed = _allowed(roles) if roles else frozenset(TOKEN_ROLES)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                return _to_sign_in()
            if user.role not in allowed:
                needed = " or ".join(ROLE_LABELS[r] for r in TOKEN_ROLES if r in allowed)
                log.info("dashboard: %s (%s) refused %s %s", user.username, user.role, request.method, request.path)
                return render_template("forbidden.html", needed=needed), 403
            return view(*args, **kwargs)

        guarded.required_roles = allowed  # type: ignore[attr-defined]
        return cast(F, guarded)

    return decorate


def _to_sign_in() -> Response:
    # back to the page after signing in; a form sent without a session goes home instead (its data is gone anyway)
    if request.method in ("GET", "HEAD"):
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    return redirect(url_for("dashboard.login"), code=303)


def safe_next(value: str | None) -> str:
    """``value`` if it is a path of the dashboard on this site, else the dashboard's home: no open redirect."""
    if not value or len(value) > 2048 or "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return HOME  # browsers read a backslash as a slash, and drop tabs and newlines: "/\\evil.example" is another site
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not (parts.path == "/dashboard" or parts.path.startswith("/dashboard/")):
        return HOME
    # browsers resolve dot segments, percent-encoded ones too: /dashboard/%2e%2e/ is outside
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")) or "\\" in unquote(parts.path):
        return HOME
    return value


@bp.app_context_processor
def _template_user() -> dict[str, Any]:
    user = g.get("dashboard_user")
    return {"dashboard_user": user, "can_accept_risks": bool(user is not None and user.can_accept_risks)}


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    target = safe_next(request.values.get("next"))
    next_field = "" if target == HOME else target
    if request.method == "GET":
        if current_user() is not None:
            return redirect(target)
        return render_template("login.html", next=next_field, username="", error=None)
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    result = users.sign_in(username, password, dashboard_state().clock(), remote_addr=request.remote_addr)
    if isinstance(result, users.Refusal):
        return render_template("login.html", next=next_field, username=username[:64], error=result.message)
    now = int(dashboard_state().clock().timestamp())
    session.clear()  # nothing of the session before sign-in is carried into it
    session.update(uid=result.id, gen=result.session_generation, at=now, seen=now)
    new_csrf_token()
    g.dashboard_user = DashboardUserInfo(result.id, result.username, result.role)
    return redirect(target, code=303)


@bp.post("/logout")
def logout() -> Any:
    uid, generation = session.get("uid"), session.get("gen")
    if isinstance(uid, int) and isinstance(generation, int):
        users.sign_out(uid, generation, remote_addr=request.remote_addr)
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("dashboard.login"), code=303)
