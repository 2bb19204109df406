"""Bearer tokens for the API: ``require(...)`` on a view checks the token, its role and its rate limit.

A view says who may call it, and for audit records who did::

    @require(READ)            # auditor, isms_manager, admin
    @require(RISK_WRITE)      # isms_manager, admin
    @require(ADMIN)           # admin
    def view(): ... audit.record(..., actor=actor())

``admin`` may do everything, so it is allowed wherever a view names any role. Put ``require``
above the other decorators of a view (flask-smorest's ``arguments`` and ``response``): the token
is checked before any argument is parsed, and its answers are Responses, which flask-smorest
passes through. The wrapped view carries ``required_roles``.

The token comes only from the ``Authorization`` header, never from the query string, which
access logs record. Requests are counted per token and UTC hour in memory and written to
``api_token_use`` in the background (``UseRecorder``): a write per request would contend with
the sync for SQLite's single writer.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, jsonify, request

from ..extensions import db
from ..models import TOKEN_ROLES, utcnow
from ..services import tokens
from ..services.tokens import Rejected, Rejection, UseCount
from ..state import gapbridge

log = logging.getLogger("gapbridge.auth")

AUDITOR, ISMS_MANAGER, ADMIN = TOKEN_ROLES
READ = frozenset({AUDITOR, ISMS_MANAGER, ADMIN})
RISK_WRITE = frozenset({ISMS_MANAGER, ADMIN})
ADMIN_ONLY = frozenset({ADMIN})
REALM = "gapbridge"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class TokenInfo:
    """The calling token, as a view sees it in ``flask.g.token`` (a plain value: it outlives the session)."""

    id: int
    name: str
    role: str


def require(*roles: str | Iterable[str]) -> Callable[[F], F]:
    """A view decorator: a valid bearer token whose role is among ``roles`` (each a role or a set of roles), else 401/403/429."""
    allowed = _allowed(roles)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            outcome = _authenticate()
            if isinstance(outcome, Response):
                return outcome
            g.token = outcome
            state = _state()
            # before the role check: a script hammering an endpoint it may not call is throttled too
            wait = state.limiter.take(outcome.id)
            if wait > 0:
                state.usage.note(outcome, denied=True)
                return _too_many_requests(wait, state.limiter)
            if outcome.role not in allowed:
                state.usage.note(outcome, denied=True)
                needed = " or ".join(r for r in TOKEN_ROLES if r in allowed)
                return _error(403, "Forbidden", f"this endpoint needs a token with role {needed}; this token's role is {outcome.role}")
            state.usage.note(outcome, denied=False)
            return view(*args, **kwargs)

        guarded.required_roles = allowed  # type: ignore[attr-defined]
        return cast(F, guarded)

    return decorate


def current_token() -> TokenInfo:
    token = g.get("token")
    if token is None:
        raise RuntimeError("no API token in this request: the view is not guarded by require()")
    return cast(TokenInfo, token)


def actor() -> str:
    """The calling token as the actor of an audit record: ``token:<name>``."""
    return f"token:{current_token().name}"


def _allowed(roles: tuple[str | Iterable[str], ...]) -> frozenset[str]:
    names: set[str] = set()
    for r in roles:
        names.update((r,) if isinstance(r, str) else r)
    if not names:
        raise ValueError("require() needs at least one role")
    unknown = names - set(TOKEN_ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(sorted(unknown))}; roles: {', '.join(TOKEN_ROLES)}")
    return frozenset(names | {ADMIN})


# --- 401, 403, 429 -------------------------------------------------------------------------


def _error(code: int, name: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": name, "message": message})
    response.status_code = code
    response.headers.update(headers or {})
    return response


def _unauthorized(message: str, *, token_given: bool) -> Response:
    # RFC 6750: no error code when the request carried no token, invalid_token when the one it carried is no good
    challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if token_given else "")
    return _error(401, "Unauthorized", message, {"WWW-Authenticate": challenge})


def _authenticate() -> TokenInfo | Response:
    header = request.headers.get("Authorization", "").strip()
    if not header:
        return _unauthorized("this endpoint needs an API token: send the header 'Authorization: Bearer <token>'", token_given=False)
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials or " " in credentials:
        return _unauthorized("malformed Authorization header: expected 'Bearer <token>'", token_given=False)
    result = tokens.authenticate(credentials)
    if isinstance(result, Rejection):
        if result.reason is Rejected.MALFORMED:
            return _unauthorized(f"not a GapBridge API token (those start with {tokens.TOKEN_PREFIX})", token_given=True)
        if result.token is not None:  # an expired or revoked token still in use: counted against it, for the audit
            _state().usage.note(TokenInfo(result.token.id, result.token.name, result.token.role), denied=True)
        # Unknown, expired and revoked read alike: telling them apart would confirm to whoever holds a leaked
        # string that it was once a real credential. The operator sees which in `gapbridge tokens list`.
        return _unauthorized("invalid token: unknown, expired or revoked", token_given=True)
    return TokenInfo(result.id, result.name, result.role)


def _too_many_requests(wait: float, limiter: RateLimiter) -> Response:
    seconds = max(1, math.ceil(wait))
    return _error(429, "Too Many Requests",
                  f"rate limit of {limiter.per_minute} requests per minute for this token exceeded; retry in {seconds} s",
                  {"Retry-After": str(seconds)})


# --- the rate limit ------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per API token: ``burst`` requests at once, refilled at ``per_minute`` / 60 per second.

    In process memory, so each gunicorn worker (and each instance) allows the full rate: the
    effective limit is the configured one times the processes. That is acceptable because the
    limit guards the database against a runaway script of a caller who already holds a valid
    token, not against an attacker; divide ``api.rate_limit_per_minute`` by the workers where the
    exact figure matters. A shared limit would cost a database round trip on every request.
    """

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # token id -> (level, when)
        self._lock = threading.Lock()

    def take(self, key: int) -> float:
        """Spend one request of ``key``'s bucket: 0 if it may go now, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            level, then = self._buckets.get(key, (float(self.burst), now))
            level = min(float(self.burst), level + (now - then) * self.rate)
            if level >= 1:
                self._buckets[key] = (level - 1, now)
                return 0.0
            self._buckets[key] = (level, now)
            return (1 - level) / self.rate


# --- the hourly roll-up of token use -------------------------------------------------------

_KEEP = timedelta(hours=24)  # counts that could not be written for this long are dropped (bounded memory)
_RECORDERS: weakref.WeakSet[UseRecorder] = weakref.WeakSet()


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


class UseRecorder:
    """Counts requests per token and UTC hour; writes them (``tokens.record_use``) off the request thread.

    A request that finds ``flush_seconds`` passed since the last flush, or the hour changed, starts
    a background flush; one runs at a time. The flush opens its own app context (so its own
    session), never fails a request, and on failure keeps the counts for the next one. Counts
    left at exit are written then; a killed process loses at most those of the last ``flush_seconds``.
    Tests call ``flush()``, which writes at once, and may set ``clock``.
    """

    def __init__(self, app: Flask, flush_seconds: float = 30.0) -> None:
        self.app = app
        self.flush_seconds = flush_seconds
        self.clock: Callable[[], datetime] = utcnow
        self._counts: dict[tuple[int, datetime], UseCount] = {}
        self._lock = threading.Lock()  # guards the counts and the flush schedule
        self._flush_lock = threading.Lock()  # one flush at a time
        self._hour: datetime | None = None  # of the last flush started (or the first request)
        self._last_flush = time.monotonic()
        self._flushing = False
        _RECORDERS.add(self)

    def note(self, token: TokenInfo, *, denied: bool) -> None:
        now = self.clock()
        hour = _hour(now)
        with self._lock:
            count = self._counts.get((token.id, hour))
            if count is None:
                count = self._counts[(token.id, hour)] = UseCount(token.id, token.name, hour)
            count.requests += 1
            count.denied += int(denied)
            count.last_used_at = now
            if self._hour is None:
                self._hour = hour
            due = not self._flushing and (hour != self._hour or time.monotonic() - self._last_flush >= self.flush_seconds)
            if due:
                self._flushing, self._hour, self._last_flush = True, hour, time.monotonic()
        if due:
            threading.Thread(target=self._flush_in_background, name="gapbridge-token-use", daemon=True).start()

    @property
    def flushing(self) -> bool:
        """A background flush is under way."""
        return self._flushing

    def pending(self) -> list[UseCount]:
        """A copy of the counts not yet written."""
        with self._lock:
            return [UseCount(**vars(c)) for c in self._counts.values()]

    def flush(self) -> int:
        """Write the counts so far; the token-hours written. Never raises: a failure is logged and the counts kept."""
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, {}
            if not counts:
                return 0
            try:
                with self.app.app_context():
                    try:
                        return tokens.record_use(counts.values())
                    except Exception:
                        db.session.rollback()
                        raise
            except Exception as exc:  # the database is busy or down: try again with the next flush
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                log.warning("could not record API token use, keeping the counts for the next attempt: %s: %s",
                            type(exc).__name__, first_line)
                self._keep(counts)
                return 0

    def _keep(self, counts: dict[tuple[int, datetime], UseCount]) -> None:
        oldest = _hour(self.clock()) - _KEEP
        with self._lock:
            for key, c in counts.items():
                if c.hour < oldest:
                    log.warning("dropping %d uncounted requests of API token %r in the hour from %s", c.requests, c.token_name, c.hour)
                    continue
                mine = self._counts.get(key)
                if mine is None:
                    self._counts[key] = c
                else:
                    mine.requests += c.requests
                    mine.denied += c.denied
                    if c.last_used_at and (mine.last_used_at is None or c.last_used_at > mine.last_used_at):
                        mine.last_used_at = c.last_used_at

    def _flush_in_background(self) -> None:
        try:
            self.flush()
        finally:
            with self._lock:
                self._flushing = False


@atexit.register
def _flush_at_exit() -> None:
    for recorder in list(_RECORDERS):
        recorder.flush()


# --- per-app state ---------------------------------------------------------------------------


@dataclass
class AuthState:
    limiter: RateLimiter
    usage: UseRecorder


_STATE_KEY = "gapbridge.auth"
_state_lock = threading.Lock()


def auth_state(app: Flask | None = None) -> AuthState:
    """The app's rate limiter and use recorder, made on first use from ``api.*`` of the configuration."""
    app = app or cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    state = app.extensions.get(_STATE_KEY)
    if state is None:
        with _state_lock:
            state = app.extensions.get(_STATE_KEY)
            if state is None:
                api = gapbridge(app).config["api"]
                per_minute = api["rate_limit_per_minute"]
                burst = api["rate_limit_burst"] or max(1, per_minute // 6)
                state = app.extensions[_STATE_KEY] = AuthState(RateLimiter(per_minute, burst), UseRecorder(app))
    return cast(AuthState, state)


_state = auth_state
