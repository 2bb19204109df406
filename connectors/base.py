"""The connector contract, the error tree, the shared HTTP session and the paginators.

A connector talks to one ITSM tool. GapBridge calls it in three ways:

* ``fetch_pages(bookmark)`` yields ``Page`` objects in replication order. Each page
  carries the raw records and the bookmark that is safe to store once those records
  are stored. The caller commits a page and its bookmark in one transaction.
* ``normalize(record)`` maps one raw record onto the canonical incident
  (``connectors.canonical``). It raises ``NormalizationError`` for a record it
  cannot map; the caller stores it as rejected and carries on.
* ``write_back(enrichment)`` writes a note, fields and labels onto one ticket, and
  ``current_fingerprint(external_id)`` reads the enrichment fingerprint the ticket
  carries now, so a write-back interrupted after the tool accepted it is not repeated.

This module may import the standard library, ``requests`` and ``marshmallow`` only.
"""

from __future__ import annotations

import abc
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

import requests
from marshmallow import Schema

from .options import ServiceUrl as ServiceUrl
from .redact import redact_urls as redact_urls
from .redact import redacted_traceback as redacted_traceback

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gapbridge.connectors"


# --- errors -----------------------------------------------------------------------


class ConnectorError(Exception):
    """Anything a connector raises.

    Its message is redacted when it is built (``redact_urls``): error texts are logged, stored on
    sync runs and outbox items and shown, and they often quote a URL with its query.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_urls(str(a)) if isinstance(a, str | BaseException) else a for a in args))


class FatalConnectorError(ConnectorError):
    """Retrying will not help: bad credentials, missing table, bad request."""


class RetriableConnectorError(ConnectorError):
    """The tool is down, slow or rate-limiting; the same call may succeed later."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status  # the HTTP status, when there was an answer

    def __reduce__(self) -> tuple[Any, ...]:  # keep retry_after and status across a process boundary
        return type(self), (str(self), self.retry_after, self.status)


class AuthenticationError(FatalConnectorError):
    """401: the credentials were refused."""


class PermissionDeniedError(FatalConnectorError):
    """403: the credentials are valid but lack a role or ACL."""


class NotFoundError(FatalConnectorError):
    """404: the table or record does not exist."""


class RateLimitedError(RetriableConnectorError):
    """429: the tool asks us to slow down."""


class PausedError(RateLimitedError):
    """Not sent: the tool asked this instance to wait (another thread saw it) for longer than a request may wait."""


class ServerError(RetriableConnectorError):
    """5xx from the tool."""


class TransportError(RetriableConnectorError):
    """Timeout, refused connection, reset: no HTTP answer at all."""


class InvalidResponseError(FatalConnectorError):
    """The tool answered 2xx with a body we cannot read (not JSON, wrong shape)."""


class NormalizationError(ConnectorError):
    """One record cannot be mapped onto the canonical incident."""


class ConfigurationError(ConnectorError):
    """The connector's configuration is invalid."""


def error_text(exc: BaseException) -> str:
    """An error as GapBridge stores, logs and shows it: a connector's message, anything else with its type; redacted."""
    text = str(exc) if isinstance(exc, ConnectorError) else f"{type(exc).__name__}: {exc}"
    return redact_urls(text)


# --- the contract ------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """Raw records in replication order and the bookmark that is safe after them."""

    records: list[dict[str, Any]]
    bookmark: dict[str, Any] | None
    total: int | None = None  # the tool's estimate of all records in scope, if it says


@dataclass(frozen=True)
class Enrichment:
    """What GapBridge writes onto one ticket."""

    external_id: str
    fingerprint: str
    note: str | None  # the work note, None when notes are switched off
    fields: dict[str, Any] = field(default_factory=dict)  # canonical name -> value
    labels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WriteResult:
    external_id: str
    written: bool  # False when the ticket already carried the fingerprint
    dry_run: bool = False
    detail: str = ""


class Connector(abc.ABC):
    """One configured instance of an ITSM tool."""

    #: marshmallow schema class for this connector's ``options`` block
    config_schema: ClassVar[type[Schema]]

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = options

    @abc.abstractmethod
    def fetch_pages(self, bookmark: Mapping[str, Any] | None) -> Iterator[Page]:
        """Pages of records changed after ``bookmark`` (all records when None)."""

    @abc.abstractmethod
    def normalize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One raw record as a canonical incident (see ``connectors.canonical``)."""

    @abc.abstractmethod
    def write_back(self, enrichment: Enrichment) -> WriteResult:
        """Write the enrichment onto the ticket."""

    @abc.abstractmethod
    def current_fingerprint(self, external_id: str) -> str | None:
        """The enrichment fingerprint the ticket carries now, read from the tool."""

    #: how many tickets ``current_fingerprints`` reads in one request; 1: it calls ``current_fingerprint`` for each
    fingerprints_per_request: int = 1

    def current_fingerprints(self, external_ids: Sequence[str]) -> dict[str, str | None]:
        """The fingerprints of several tickets; a tool that can read them in one request overrides this."""
        return {external_id: self.current_fingerprint(external_id) for external_id in external_ids}

    def close(self) -> None:  # noqa: B027  (optional hook, most connectors have nothing to release)
        """Release sessions and sockets."""

    def forked(self) -> None:
        """Called in a forked worker process before it fetches: drop connections shared with the parent.

        Pooled keep-alive sockets were inherited; both processes using one would mix their
        requests. Closing the worker's copies leaves the parent's connections intact.
        """
        for value in vars(self).values():
            if isinstance(value, HttpSession):
                value.close()


def available_connectors() -> dict[str, type[Connector]]:
    """Connector classes registered under the ``gapbridge.connectors`` entry points."""
    found: dict[str, type[Connector]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


def connector_class(kind: str) -> type[Connector]:
    classes = available_connectors()
    try:
        return classes[kind]
    except KeyError:
        known = ", ".join(sorted(classes)) or "none installed"
        raise ConfigurationError(f"unknown connector type {kind!r} (known: {known})") from None


# --- HTTP ------------------------------------------------------------------------------

#: statuses worth a retry; 429 and 503 may say when in Retry-After
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
    """Seconds until an ``X-RateLimit-Reset``: epoch seconds (ServiceNow, GitHub) or, if small, seconds from now."""
    if not value:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number >= 1e9:  # an epoch time (2001 onwards), not a wait of 30 years
        return max(0.0, number - (time.time() if now is None else now))
    return max(0.0, number)


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
            if body.get(key):
                return str(body[key])[:200]
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
    if status == 401:
        raise AuthenticationError(message + ": check the credentials")
    if status == 403:
        raise PermissionDeniedError(message + ": the account lacks a role or ACL for this")
    if status == 404:
        raise NotFoundError(message)
    if status == 429:
        raise RateLimitedError(message, retry_after, status)
    if status >= 500 or status in RETRIABLE_STATUSES:
        raise ServerError(message, retry_after, status)
    raise FatalConnectorError(message)


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
    """

    def __init__(self, base_url: str, *, auth: requests.auth.AuthBase | tuple[str, str] | None = None,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0, max_attempts: int = 5,
                 backoff_base: float = 0.5, backoff_max: float = 30.0, max_wait: float = 120.0,
                 user_agent: str = "GapBridge", sleep: Any = time.sleep, clock: Any = time.monotonic) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max(1, max_attempts)
        self.backoff_base, self.backoff_max, self.max_wait = backoff_base, backoff_max, max_wait
        self.sleep = sleep
        self.pace = RateLimit(clock=clock, sleep=sleep)
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
            except RetriableConnectorError as exc:
                error = exc
                # 429 and 503 refuse the request before doing it; 500/502/504 may come after the change was made
                sent = exc.status not in (429, 503)
            slow_down = error.status == 429 or error.retry_after is not None
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
            return response.json(), response
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
        if isinstance(self._auth, OAuth2TokenAuth):
            self._auth.close()


class OAuth2TokenAuth(requests.auth.AuthBase):
    """Bearer tokens from an OAuth 2.0 token endpoint, fetched lazily and refreshed.

    Grants: ``password`` and ``client_credentials``. A refresh token, when the server
    gives one, is used first; if refused, the original grant is repeated.
    """

    def __init__(self, token_url: str, grant: str, client_id: str, client_secret: str, *,
                 username: str | None = None, password: str | None = None, timeout: tuple[float, float] = (5.0, 30.0),
                 skew_seconds: float = 60.0, clock: Any = time.monotonic) -> None:
        if grant not in ("password", "client_credentials"):
            raise ConfigurationError(f"unsupported OAuth grant {grant!r}")
        self.token_url, self.grant = token_url, grant
        self.client_id, self.client_secret = client_id, client_secret
        self.username, self.password = username, password
        self.timeout, self.skew, self.clock = timeout, skew_seconds, clock
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self.expires_at = 0.0
        self.http = requests.Session()
        # threads of one instance share the token: one of them fetches it, the others wait for it
        self._lock = threading.RLock()

    def invalidate(self) -> None:
        self.access_token = None

    def _request_token(self, form: dict[str, str]) -> dict[str, Any]:
        what = f"POST {self.token_url}"
        try:
            response = self.http.post(self.token_url, data=form, timeout=self.timeout, headers={"Accept": "application/json"})
        except requests.Timeout:
            raise TransportError(f"{what}: timed out") from None
        except requests.ConnectionError:
            raise TransportError(f"{what}: no connection") from None
        if response.status_code in (400, 401):
            raise AuthenticationError(f"{what}: OAuth token refused (HTTP {response.status_code}, {_tool_message(response) or 'no reason given'}); "
                                      f"check client_id, client_secret and the {self.grant} grant")
        raise_for_response(response, what)
        try:
            body = response.json()
        except ValueError:
            raise InvalidResponseError(f"{what}: token response is not JSON") from None
        if not isinstance(body, dict) or not body.get("access_token"):
            raise InvalidResponseError(f"{what}: token response has no access_token")
        return body

    def token(self) -> str:
        with self._lock:
            return self._token()

    def _token(self) -> str:
        if self.access_token and self.clock() < self.expires_at - self.skew:
            return self.access_token
        base = {"client_id": self.client_id, "client_secret": self.client_secret}
        body = None
        if self.refresh_token:
            try:
                body = self._request_token({**base, "grant_type": "refresh_token", "refresh_token": self.refresh_token})
            except AuthenticationError:
                self.refresh_token = None  # expired or revoked: fall back to the original grant
        if body is None:
            form = {**base, "grant_type": self.grant}
            if self.grant == "password":
                form.update(username=self.username or "", password=self.password or "")
            body = self._request_token(form)
        self.access_token = str(body["access_token"])
        self.refresh_token = body.get("refresh_token") or self.refresh_token
        try:
            lifetime = float(body.get("expires_in") or 1800)
        except (TypeError, ValueError):
            lifetime = 1800.0
        self.expires_at = self.clock() + lifetime
        return self.access_token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request

    def close(self) -> None:
        self.http.close()


# --- pagination ---------------------------------------------------------------------------


class KeysetPaginator:
    """Pages after a key, in key order, until a short page: stable while records change.

    ``fetch(after, limit)`` returns records ordered by key, all strictly after ``after``
    (None for the start). ``key(record)`` gives a record's key, a tuple of comparables.
    A page whose last key does not move forward means the tool ignored the query: that is
    an error, not an endless loop.
    """

    def __init__(self, fetch: Any, key: Any, page_size: int) -> None:
        self.fetch, self.key, self.page_size = fetch, key, page_size

    def pages(self, after: tuple[Any, ...] | None) -> Iterator[tuple[list[dict[str, Any]], tuple[Any, ...] | None, int | None]]:
        while True:
            records, total = self.fetch(after, self.page_size)
            if not records:
                return
            last = self.key(records[-1])
            if after is not None and not last > after:
                raise InvalidResponseError(f"pagination did not advance past {after!r}: the tool ignored the ordering or the filter")
            yield records, last, total
            if len(records) < self.page_size:
                return
            after = last


class OffsetPaginator:
    """Pages by offset over a set that does not change while we read it (journals, lookups)."""

    def __init__(self, fetch: Any, page_size: int, max_records: int = 100_000) -> None:
        self.fetch, self.page_size, self.max_records = fetch, page_size, max_records

    def records(self) -> Iterator[dict[str, Any]]:
        offset = 0
        while offset < self.max_records:
            records, total = self.fetch(offset, self.page_size)
            yield from records
            offset += len(records)
            if len(records) < self.page_size or (total is not None and offset >= total):
                return
