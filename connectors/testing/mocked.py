"""A tool double that answers through ``responses``: the suite's faults carried out the same way for every tool.

A subclass registers its routes on ``self.mock`` with callbacks that call ``_serve``, and says
what its tool answers: the error body (``_error``), the rate-limit headers, the page a
maintenance window shows instead of JSON, and how a request proves who sent it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
import responses

from .double import ToolDouble

Answer = tuple[int, dict[str, str], str]  # what a ``responses`` callback returns: status, headers, body


class MockedToolDouble(ToolDouble):
    mock: responses.RequestsMock
    url: str
    # what the tool (or the proxy in front of it) says for each fault
    rate_limit_message: tuple[str, ...] = ("Too Many Requests",)
    rate_limit_headers: dict[str, str] = {}
    unauthorized_message: tuple[str, ...] = ("Unauthorized",)
    maintenance_page: tuple[str, str] = ("text/plain", "Down for maintenance. Please try again in a few minutes.")

    @abc.abstractmethod
    def _error(self, status: int, *messages: str) -> Answer:
        """The tool's error answer."""

    @abc.abstractmethod
    def _authenticated(self, request: requests.PreparedRequest) -> bool:
        """Whether the request carries credentials the tool takes now."""

    def _expire_tokens(self) -> None:  # noqa: B027  (only a tool whose tokens expire overrides it)
        """From now on, refuse the tokens the connector holds."""

    def close(self) -> None:
        self.mock.stop()
        self.mock.reset()

    def _serve(self, request: requests.PreparedRequest, target: Any, handler: Callable[[], Answer]) -> Answer:
        """The fault due for ``target`` (``page``, ``write``; None: no fault), else ``handler``'s answer.

        A timeout or a connection closed mid-body comes after the handler ran: a write is taken
        even when its answer is lost.
        """
        fault = self.fault_for(target) if target else None
        kind = fault.kind if fault else None
        if fault is not None and kind == "rate_limited":
            status, headers, body = self._error(429, *self.rate_limit_message)
            return status, {**headers, "Retry-After": str(fault.retry_after or 1), **self.rate_limit_headers}, body
        if kind == "server_error":
            return self._error(503 if target == "page" else 500, "Service Unavailable" if target == "page" else "Internal Server Error")
        if kind == "unauthorized":
            return self._error(401, *self.unauthorized_message)
        if kind == "not_json":
            content_type, page = self.maintenance_page
            return 200, {"Content-Type": content_type}, page
        if kind == "token_expired":
            self._expire_tokens()
        if not self._authenticated(request):
            return self._error(401, *self.unauthorized_message)
        answer = handler()
        if kind == "timeout":
            raise requests.exceptions.ReadTimeout(f"HTTPSConnectionPool(host='{urlsplit(self.url).hostname}', port=443): "
                                                  "Read timed out. (read timeout=0.5)")
        if kind == "connection_closed":
            raise requests.exceptions.ChunkedEncodingError("('Connection broken: IncompleteRead(512 bytes read, 2048 more expected)', "
                                                           "IncompleteRead(512 bytes read, 2048 more expected))")
        return answer
