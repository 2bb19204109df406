"""What guards every dashboard request: the session cookie and its key, the CSRF token, the security headers.

The session is Flask's signed cookie. It holds the user's id and session generation, when they signed in and when
they were last seen (``signin.py`` checks those), and the CSRF token; nothing else, and never a password. Its key is
``GAPBRIDGE_SECRET_KEY`` from the environment, else ``dashboard.secret_key``, else one made by the first dashboard
request and kept in ``dashboard-secret-key`` (mode 0600) in the instance folder, so the gunicorn workers of a host
share it and a restart keeps everyone signed in. Made then, not at start-up: a CLI command run as another user
(root, say) must not leave a key file the service cannot read. It is never logged and never written to the database.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from flask import Flask, Response, current_app, render_template, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.wrappers import Request
from markupsafe import Markup, escape
from werkzeug.exceptions import BadRequest

from ...config import ConfigError
from ...db_schema import StartupError
from ...models import utcnow
from . import bp

log = logging.getLogger("gapbridge.dashboard")

SECRET_KEY_FILE = "dashboard-secret-key"
MIN_SECRET_KEY_LENGTH = 32
COOKIE_NAME = "gapbridge_dashboard"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"  # for a page script that posts with fetch()
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_STATE_KEY = "gapbridge.dashboard"

# no inline script or style anywhere: a page that needs either ships a file under static/
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass
class DashboardState:
    """The dashboard's settings, and the clock sessions are timed by (tests put their own in its place)."""

    idle_timeout: timedelta
    session_lifetime: timedelta
    clock: Callable[[], datetime] = field(default=utcnow)


def dashboard_state(app: Flask | None = None) -> DashboardState:
    app = app or cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    return cast(DashboardState, app.extensions[_STATE_KEY])


def init_app(app: Flask, options: Mapping[str, Any]) -> None:
    app.config["SECRET_KEY"] = _secret_key(app, options)
    app.session_interface = SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH="/dashboard",  # never sent to /api, whose callers use tokens
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=bool(options.get("cookie_secure", True)),
        SESSION_COOKIE_SAMESITE="Lax",  # Strict would drop the session when an auditor follows a link from mail or a ticket
    )
    app.extensions[_STATE_KEY] = DashboardState(idle_timeout=timedelta(minutes=options.get("idle_timeout_minutes", 30)),
                                                session_lifetime=timedelta(hours=options.get("session_lifetime_hours", 12)))


# --- the secret key ------------------------------------------------------------------------------


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, with the instance folder's key read (or made) by the first dashboard request, if none was configured.

    Other requests (the API, /healthz, a test request context of a CLI command) have no use for a session: without
    a key they get Flask's null session, and no key file is made for them.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not app.secret_key and _dashboard_path(request.path):
            app.secret_key = instance_secret_key(Path(app.instance_path))
        return super().open_session(app, request)


def _secret_key(app: Flask, options: Mapping[str, Any]) -> str | None:
    """The configured key, checked; None: the instance folder's, on first use."""
    key = app.config.get("SECRET_KEY")  # GAPBRIDGE_SECRET_KEY (from_prefixed_env) or a test's configuration
    if key:
        # from_prefixed_env reads the value as JSON when it parses as JSON: an all-digit key arrives as an int
        key = str(key)
        if os.environ.get("GAPBRIDGE_SECRET_KEY") and len(key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(f"environment variable GAPBRIDGE_SECRET_KEY: at least {MIN_SECRET_KEY_LENGTH} characters")
        return key
    if options.get("secret_key"):
        return str(options["secret_key"])
    return None


def instance_secret_key(folder: Path) -> str:
    """The key kept in the instance folder, made on first use. Processes starting at once all end up with the same one.

    The new key is written whole to a file of its own, then linked to its name, which fails if another process
    linked one first: nobody ever reads a half-written key.
    """
    path = folder / SECRET_KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    tmp = folder / f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, (secrets.token_urlsafe(48) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
            log.info("dashboard: made a session key in %s (set dashboard.secret_key where several hosts serve the dashboard)", path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    except OSError as exc:
        raise StartupError(f"cannot write the dashboard's session key {path}: {exc.strerror}; "
                           "make the instance folder writable, or set dashboard.secret_key or GAPBRIDGE_SECRET_KEY") from None
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> str:
    try:
        mode = path.stat().st_mode & 0o777
        key = path.read_text().strip()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StartupError(f"cannot read the dashboard's session key {path}: {exc.strerror}") from None
    if mode & 0o077:
        log.warning("dashboard: the session key %s can be read by other users (mode %o); chmod 600 it, and "
                    "delete it to sign everyone out if it may have been read", path, mode)
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise StartupError(f"the dashboard's session key {path} is shorter than {MIN_SECRET_KEY_LENGTH} characters: "
                           "delete the file and a new one is made on start")
    return key


# --- CSRF ------------------------------------------------------------------------------------------


def csrf_token() -> str:
    """This session's CSRF token, made on first use: every form POST of the dashboard sends it back as ``csrf_token``."""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def new_csrf_token() -> str:
    """A fresh token, at sign-in: one seen before it (on the sign-in page, say) is no use after."""
    token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_field() -> Markup:
    """The hidden form field carrying the token: ``{{ csrf_field() }}`` inside each ``<form method="post">``."""
    return Markup(f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(csrf_token())}">')


bp.add_app_template_global(csrf_token, "csrf_token")
bp.add_app_template_global(csrf_field, "csrf_field")


class CSRFError(BadRequest):
    description = "The form was not sent from a page of this site, or the page is too old. Go back, reload it and try again."


@bp.before_request
def _check_csrf() -> None:
    if request.method in _SAFE_METHODS:
        return
    expected = session.get("csrf")
    given = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    # bytes: compare_digest refuses str with characters outside ASCII, and a request may send any
    if not isinstance(expected, str):
        # most often the browser did not keep the cookie: a Secure one over plain http to a host other than localhost
        log.warning("dashboard: %s %s refused: the request has no session (cookie not sent back; plain http with "
                    "dashboard.cookie_secure true?)", request.method, request.path)
        raise CSRFError()
    if not hmac.compare_digest(expected.encode(), given.encode()):
        log.warning("dashboard: %s %s refused: CSRF token %s", request.method, request.path, "wrong" if given else "missing")
        raise CSRFError()


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> Any:
    return render_template("error.html", title="Form refused", message=exc.description), 400


# --- headers ------------------------------------------------------------------------------------------


def _dashboard_path(path: str) -> bool:
    return path == "/dashboard" or path.startswith("/dashboard/")


@bp.after_app_request
def _security_headers(response: Response) -> Response:
    # app-wide, limited to the path: a 404 or 405 under /dashboard has no blueprint, and gets them too
    if not _dashboard_path(request.path):
        return response
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "dashboard.static" and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"  # pages show who may see what: no copy in a shared cache or the back button
    return response
