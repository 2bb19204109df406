"""The connector error tree: what a connector raises and how the core reads it.

Fatal errors stop what they are in (a sync, a write-back item) until someone changes something;
retriable ones may succeed later. Every message is redacted when it is built.
"""

from __future__ import annotations

from typing import Any

from .redact import redact_urls


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


class BadRequestError(FatalConnectorError):
    """400: the tool refused the request itself (a query it cannot parse); ``tool_message`` is what it said."""

    def __init__(self, message: str, tool_message: str = "") -> None:
        super().__init__(message)
        self.tool_message = redact_urls(tool_message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.tool_message)


class PreconditionFailedError(FatalConnectorError):
    """412: the record changed since it was read (an If-Match that no longer holds); read it again."""


class AuthenticationError(FatalConnectorError):
    """401: the credentials were refused."""


class PermissionDeniedError(FatalConnectorError):
    """403: the credentials are valid but lack a role or ACL."""


class NotFoundError(FatalConnectorError):
    """404: the table or record does not exist."""


class GoneError(NotFoundError):
    """410: the tool removed this API for good (Jira Cloud's old /rest/api/3/search); another endpoint is needed."""


class RateLimitedError(RetriableConnectorError):
    """429: the tool asks us to slow down."""


class RecordRateLimitedError(RateLimitedError):
    """429 for one record only (Jira's per-issue write limit): slow down writes to that record, not the whole instance."""


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
