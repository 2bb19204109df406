"""HTTP for connectors: one session per instance with timeouts, retries, backoff and a shared pace.

``raise_for_response`` is the one place HTTP statuses become connector errors.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, runtime_checkable

import orjson
import requests

from .errors import (
    AuthenticationError,
    BadRequestError,
    FatalConnectorError,
    GoneError,
    InvalidResponseError,
    NotFoundError,
    PausedError,
    PermissionDeniedError,
    PreconditionFailedError,
    RateLimitedError,
    RecordRateLimitedError,
    RetriableConnectorError,
    ServerError,
    TransportError,
)

log = logging.getLogger("connectors.base")

RETRIABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: methods safe to repeat when we cannot tell whether the tool acted on the first try
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def parse_rate_limit_reset(value: str | None, now: float | None = None) -> float | None:
    """Seconds until an ``X-RateLimit-Reset``: epoch seconds (ServiceNow, GitHub), if small seconds from now, or an
    ISO 8601 time (Jira Cloud: ``2026-11-22T13:57Z``)."""
    if not value:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        text = value.strip()
        try:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    if number >= 1e9:  # an epoch time (2001 onwards), not a wait of 30 years
        return max(0.0, number - (time.time() if now is None else now))
    return max(0.0, number)


def json_body(response: requests.Response) -> Any:
    """A response's JSON body; ValueError when it is not JSON.

    orjson first: a sync's pages are parsed at three times the standard library's speed, and
    parsing was a third of a sync worker's time. A body orjson refuses (not UTF-8, NaN, an
    integer beyond 64 bits) goes to requests' own decoding, which reads what it always read.
    """
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.json()


def _tool_message(response: requests.Response) -> str:
    """The tool's own error text, when its body says one (ServiceNow, Jira and RT shapes)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return text[:200]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            parts = [str(err.get(k)) for k in ("message", "detail") if err.get(k)]
            return ": ".join(parts)
        if isinstance(err, str):
            return str(body.get("error_description") or err)
        for key in ("errorMessages", "message", "errors"):
            said = body.get(key)
            if not said:
                continue
            # Jira: {"errorMessages": ["..."], "errors": {"field": "..."}}; quoted as text, not as a Python repr
            if isinstance(said, list):
                said = "; ".join(str(m) for m in said)
            elif isinstance(said, dict):
                said = "; ".join(f"{k}: {v}" for k, v in said.items())
            return str(said)[:200]
    return ""


def raise_for_response(response: requests.Response, what: str) -> None:
    """Map an HTTP answer onto the error tree. The one place statuses become errors.

    ``what`` names the call (method and path, never credentials or query secrets).
    """
    status = response.status_code
    if status < 400:
        return
    said = _tool_message(response)
    message = f"{what}: HTTP {status}{' ' + response.reason if response.reason else ''}{' (' + said + ')' if said else ''}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429 and retry_after is None:
        retry_after = parse_rate_limit_reset(response.headers.get("X-RateLimit-Reset"))
    if status == 400:
        raise BadRequestError(message, said)
    if status == 401:
        raise AuthenticationError(message + ": check the credentials")
    if status == 403:
        raise PermissionDeniedError(message + ": the account lacks a role or ACL for this")
    if status == 404:
        raise NotFoundError(message)
    if status == 410:
        raise GoneError(message)
    if status == 412:
        raise PreconditionFailedError(message)
    if status == 429:
        raise RateLimitedError(message + rate_limit_said(response), retry_after, status)
    if status >= 500 or status in RETRIABLE_STATUSES:
        raise ServerError(message, retry_after, status)
    raise FatalConnectorError(message)


def rate_limit_said(response: requests.Response) -> str:
    """What a 429's headers say about the limit that was hit: ServiceNow's X-RateLimit-Rule and -Limit, Jira's RateLimit-Reason."""
    headers = response.headers
    parts = []
    if headers.get("X-RateLimit-Rule"):
        parts.append(f"rule {headers['X-RateLimit-Rule'].strip()!r}")
    if headers.get("X-RateLimit-Limit"):
        parts.append(f"limit {headers['X-RateLimit-Limit'].strip()}")
    if headers.get("RateLimit-Reason"):
        parts.append(headers["RateLimit-Reason"].strip())
    return f" [{', '.join(parts)}]" if parts else ""


@runtime_checkable
class _InvalidatableAuth(Protocol):
    """Auth that can drop a cached credential, e.g. :class:`OAuth2TokenAuth`, so the next request fetches a fresh one."""

    def invalidate(self) -> None: ...


class RateLimit:
    """The pace of one connector instance, shared by all its threads: the pauses its tool asks for, and a steady rate.

    A pause (a 429, a Retry-After, an exhausted X-RateLimit-Remaining) holds every thread, not only the
    one that was told: the others would only be told the same. ``per_second`` spaces the acquisitions
    evenly (a token bucket of one); None: as fast as the callers go.
    """

    def __init__(self, per_second: float | None = None, *, clock: Any = time.monotonic, sleep: Any = time.sleep) -> None:
        if per_second is not None and not per_second > 0:
            raise ValueError(f"a rate must be above 0 per second, not {per_second!r}")
        self.interval = 1.0 / per_second if per_second else 0.0
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._resume_at = float("-inf")
        self._next_slot = float("-inf")

    def pause(self, seconds: float) -> float:
        """Hold every thread for ``seconds`` from now (a longer pause already set stands); returns when it ends."""
        with self._lock:
            self._resume_at = max(self._resume_at, self.clock() + max(0.0, seconds))
            return self._resume_at

    def remaining(self) -> float:
        """Seconds left of the current pause (0 when none)."""
        with self._lock:
            return max(0.0, self._resume_at - self.clock())

    def acquire(self, what: str = "request", *, max_wait: float | None = None, served: float | None = None) -> None:
        """Wait out a pause and this caller's turn of the steady rate.

        ``served``: the end of a pause this caller has slept through already (it was the one told).
        A pause longer than ``max_wait`` is not waited: PausedError, with the time left as its retry_after.
        """
        while True:
            with self._lock:
                now = self.clock()
                resume = self._resume_at if served is None or self._resume_at > served else now
                if max_wait is not None and resume - now > max_wait:
                    left = resume - now
                    raise PausedError(f"{what}: not sent, the tool asked to wait {left:.0f} s more", left, 429)
                start = max(now, resume, self._next_slot)
                if self.interval:
                    self._next_slot = start + self.interval
            if start <= now:
                return
            self.sleep(start - now)
            with self._lock:  # a later pause may have been asked for meanwhile
                if self._resume_at <= start:
                    return
            served = None


class HttpSession:
    """One HTTP client per connector: timeouts on every call, retries with backoff, safe to share between threads.

    Each thread gets its own ``requests.Session`` (with the same auth and headers): a session's
    cookies and adapters are not meant to be shared. Retriable failures (no answer, 429, 5xx) are
    retried up to ``max_attempts`` in all, waiting ``Retry-After`` when the tool says, otherwise
    exponential backoff with full jitter. A wait the tool asks for (429, Retry-After,
    X-RateLimit-Reset) holds every thread of the instance (``pace``). A Retry-After longer than
    ``max_wait`` is not slept through: the error goes up so the caller (the outbox, the next sync)
    comes back later instead of blocking. A 401 with token auth refreshes the token once.

    ``instance_wide(response)`` says whether a 429 holds the whole instance (the default: every one does).
    False: the limit is one record's (Jira's per-issue write limit); only this request waits and
    retries, the other threads go on, and when it gives up it raises a ``RecordRateLimitedError``.
    """

    def __init__(self, base_url: str, *, auth: requests.auth.AuthBase | tuple[str, str] | None = None,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0, max_attempts: int = 5,
                 backoff_base: float = 0.5, backoff_max: float = 30.0, max_wait: float = 120.0,
                 user_agent: str = "GapBridge", sleep: Any = time.sleep, clock: Any = time.monotonic,
                 instance_wide: Callable[[requests.Response], bool] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max(1, max_attempts)
        self.backoff_base, self.backoff_max, self.max_wait = backoff_base, backoff_max, max_wait
        self.sleep = sleep
        self.pace = RateLimit(clock=clock, sleep=sleep)
        self.instance_wide = instance_wide or (lambda response: True)
        self._auth, self._headers = auth, {"Accept": "application/json", "User-Agent": user_agent}
        self._sessions_lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._local = threading.local()
        self._owner = threading.get_ident()
        self._main = self._new_session()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.auth = self._auth
        session.headers.update(self._headers)
        with self._sessions_lock:
            self._sessions.append(session)
        return session

    @property
    def session(self) -> requests.Session:
        """This thread's session (the creating thread's is the first one)."""
        if threading.get_ident() == self._owner:
            return self._main
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._new_session()
        return session

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))

    def _mind_the_budget(self, response: requests.Response) -> None:
        """An answer that says the rate-limit budget is spent holds the instance until it resets."""
        if response.status_code == 429 and not self.instance_wide(response):
            return  # one record's budget, not the instance's
        if response.headers.get("X-RateLimit-Remaining", "").strip() == "0":
            reset = parse_rate_limit_reset(response.headers.get("X-RateLimit-Reset"))
            if reset:
                self.pace.pause(reset)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        what = f"{method} {self.url(path).split('?', 1)[0]}"
        refreshed = False
        attempt = 0
        served: float | None = None
        session = self.session
        while True:
            attempt += 1
            self.pace.acquire(what, max_wait=self.max_wait, served=served)
            served = None
            response: requests.Response | None = None
            try:
                response = session.request(method, self.url(path), timeout=self.timeout, **kwargs)
                auth = session.auth
                if response.status_code == 401 and not refreshed and isinstance(auth, _InvalidatableAuth):
                    auth.invalidate()  # the token may have expired early: one fresh try
                    refreshed, attempt = True, attempt - 1
                    continue
                self._mind_the_budget(response)
                raise_for_response(response, what)
                return response
            except requests.ConnectTimeout as exc:
                error: RetriableConnectorError = TransportError(f"{what}: timed out connecting ({type(exc).__name__})")
                sent = False
            except requests.Timeout as exc:
                error = TransportError(f"{what}: timed out waiting for the answer ({type(exc).__name__})")
                sent = True
            except requests.ConnectionError as exc:
                error = TransportError(f"{what}: no connection ({type(exc).__name__})")
                sent = True  # a reset may come after the tool took the request
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
                # the tool answered but the connection closed mid-body: the request was taken, the answer lost
                error = TransportError(f"{what}: the connection closed before the whole answer arrived ({type(exc).__name__})")
                sent = True
            except RetriableConnectorError as exc:
                error = exc
                # 429 and 503 refuse the request before doing it; 500/502/504 may come after the change was made
                sent = exc.status not in (429, 503)
                if exc.status == 429 and response is not None and not self.instance_wide(response):
                    error = RecordRateLimitedError(str(exc), exc.retry_after, 429)
            # a record's own limit: this request waits, the instance's other requests do not
            slow_down = (error.status == 429 or error.retry_after is not None) and not isinstance(error, RecordRateLimitedError)
            if slow_down and error.retry_after is not None and error.retry_after > self.max_wait:
                self.pace.pause(error.retry_after)  # the other threads need not ask again to be told the same
            if sent and method.upper() not in IDEMPOTENT_METHODS:
                # the change may have happened (a work note appended): repeating it blindly could double it.
                # The caller checks what the ticket carries before it tries again.
                raise error
            if attempt >= self.max_attempts:
                raise type(error)(f"{error} (gave up after {attempt} attempts)", error.retry_after) from error
            wait = error.retry_after if error.retry_after is not None else self._backoff(attempt)
            if wait > self.max_wait:
                raise error
            log.warning("%s; retry %d of %d in %.1fs", error, attempt, self.max_attempts - 1, wait)
            if slow_down:
                served = self.pace.pause(wait)  # every thread of this instance waits, not only this one
            self.sleep(wait)

    def json(self, method: str, path: str, **kwargs: Any) -> tuple[Any, requests.Response]:
        """Request and parse the JSON body; a body that is not JSON is an InvalidResponseError."""
        return self.parsed(method, path, self.request(method, path, **kwargs))

    def parsed(self, method: str, path: str, response: requests.Response) -> tuple[Any, requests.Response]:
        """The JSON body of a response to ``method path``; a body that is not JSON is an InvalidResponseError."""
        try:
            return json_body(response), response
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            snippet = response.text[:80].replace("\n", " ")
            raise InvalidResponseError(f"{method} {self.url(path).split('?', 1)[0]}: HTTP {response.status_code} "
                                       f"answered {kind}, not JSON: {snippet!r}") from None

    def close(self) -> None:
        """Close pooled connections (every thread's, and the token endpoint's); the sessions stay usable and reconnect."""
        with self._sessions_lock:
            sessions = list(self._sessions)
            # other threads' sessions are closed and forgotten; a thread still running makes itself a new one
            self._sessions = [self._main]
        self._local = threading.local()
        for session in sessions:
            session.close()
        closer = getattr(self._auth, "close", None)
        if callable(closer):  # a token endpoint's own session (OAuth2TokenAuth)
            closer()
