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
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from importlib.metadata import entry_points
from typing import Any, ClassVar

import requests
from marshmallow import Schema

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gapbridge.connectors"


# --- errors -----------------------------------------------------------------------


class ConnectorError(Exception):
    """Anything a connector raises."""


class FatalConnectorError(ConnectorError):
    """Retrying will not help: bad credentials, missing table, bad request."""


class RetriableConnectorError(ConnectorError):
    """The tool is down, slow or rate-limiting; the same call may succeed later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthenticationError(FatalConnectorError):
    """401: the credentials were refused."""


class PermissionDeniedError(FatalConnectorError):
    """403: the credentials are valid but lack a role or ACL."""


class NotFoundError(FatalConnectorError):
    """404: the table or record does not exist."""


class RateLimitedError(RetriableConnectorError):
    """429: the tool asks us to slow down."""


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

    def close(self) -> None:
        """Release sessions and sockets."""


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
