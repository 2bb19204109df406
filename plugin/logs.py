"""Logging: timestamped lines or JSON, context fields (source, run id, incident) and no secret in any record.

``configure(level, fmt)`` is called by the CLI and by ``create_app`` (so gunicorn workers log the same way).
``log_context(source=..., run_id=..., incident=...)`` sets fields that every record logged inside it carries::

    with log_context(source="prod"):
        with log_context(run_id=run.id):
            log.info("page stored")   # JSON: {"time": ..., "level": "INFO", ..., "source": "prod", "run_id": 7}

The fields live in a ``contextvars.ContextVar``, so threads and asyncio tasks each see their own.
Redaction is a Filter on the handlers: a record is formatted once, its text cleaned, and every handler
after it (pytest's, gunicorn's, another library's) sees the clean text only.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from connectors.base import redact_urls, redacted_traceback

from .config import SECRET_KEYS, redact

FORMATS = ("text", "json")
CONTEXT_FIELDS = ("source", "run_id", "incident")

_context: ContextVar[Mapping[str, Any] | None] = ContextVar("gapbridge_log_context", default=None)
_debug = False  # -v of the CLI: DEBUG wins over the configured level, also when create_app configures again

# what redact_urls does not know: an Authorization header's value and a GapBridge API token anywhere in text
_CREDENTIAL = re.compile(r"\b((?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=-]{8,}|\bgbt_[A-Za-z0-9_-]{16,}", re.IGNORECASE)
# attributes every LogRecord has: anything else was added by extra= or a filter, and is redacted as well
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextmanager
def log_context(*, source: str | None = None, run_id: int | str | None = None, incident: str | None = None) -> Iterator[None]:
    """Add fields to every record logged inside; nested contexts add to (or override) the outer one's."""
    given = {k: v for k, v in (("source", source), ("run_id", run_id), ("incident", incident)) if v is not None}
    token = _context.set({**(_context.get() or {}), **given})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


def scrub(text: str) -> str:
    """``text`` without URL credentials, credential parameters, Authorization values or API tokens."""
    return _CREDENTIAL.sub(lambda m: (m.group(1) or "") + "***", redact_urls(text))


def _scrub_value(key: str, value: Any) -> Any:
    if key in SECRET_KEYS and value:
        return "***"
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping | list):
        return _scrub_tree(redact(value))
    return value


def _scrub_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _scrub_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_tree(v) for v in value]
    return scrub(value) if isinstance(value, str) else value


class ContextFilter(logging.Filter):
    """Copies the fields of ``log_context`` onto the record (a field given by ``extra=`` is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class RedactFilter(logging.Filter):
    """Formats the message once and removes secrets from it, from its traceback and from extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        # a second handler sees the clean record: formatting and redacting it again changes nothing
        args = record.args
        if isinstance(args, Mapping):
            args = redact(args)
        elif isinstance(args, tuple):
            args = tuple(redact(a) if isinstance(a, Mapping | list) else a for a in args)
        record.args = args
        try:
            message = record.getMessage()
        except Exception:  # a wrong format string: logging's own error report says which call
            return True
        record.msg, record.args = scrub(message), None
        if record.exc_info and record.exc_info[1] is not None:
            # the formatters print exc_text as it is; without exc_info they format no traceback of their own
            record.exc_text = scrub(redacted_traceback(record.exc_info[1]))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        for key in set(vars(record)) - _RECORD_ATTRIBUTES:
            if not key.startswith("_"):
                setattr(record, key, _scrub_value(key, getattr(record, key)))
        return True


class TextFormatter(logging.Formatter):
    """``2026-12-02T06:18:47.123Z INFO gapbridge.sync [source=prod run_id=7]: message``: UTC, to the millisecond."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        fields = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, None) is not None)
        return self._style._fmt % {**vars(record), "context": f" [{fields}]" if fields else ""}  # type: ignore[operator]


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    # every attribute a filter or extra= added (source, run_id, incident, ...) becomes a key of its own
    return JsonFormatter("%(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level", "name": "logger"},
                         timestamp="time")


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it), as logging's last resort does."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure(level: str | int = "INFO", fmt: str = "text", *, debug: bool | None = None, force: bool = False) -> None:
    """Log GapBridge's records at ``level`` to stderr as ``fmt`` (other libraries' at WARNING); ``debug`` (the CLI's -v): at DEBUG.

    Like ``logging.basicConfig``, no handler is added where the host already gave the root logger its own
    (pytest, a gunicorn ``--log-config``, an application embedding GapBridge) unless ``force``; those
    handlers get the context and redaction filters all the same. Calling it again replaces what an
    earlier call installed.
    """
    global _debug
    if fmt not in FORMATS:
        raise ValueError(f"log_format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if debug is not None:
        _debug = debug
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(handler)
    if force or not root.handlers:
        handler = _Stderr()
        handler.setFormatter(json_formatter() if fmt == "json" else TextFormatter())
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if _debug else logging.WARNING)  # the root's level is the host's where it has handlers
    for h in root.handlers:
        for f in (ContextFilter, RedactFilter):
            if not any(isinstance(x, f) for x in h.filters):
                h.addFilter(f())
    logging.getLogger("gapbridge").setLevel(logging.DEBUG if _debug else level)
