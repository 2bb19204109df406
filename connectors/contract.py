"""The connector contract: what a connector declares and the methods GapBridge calls on it.

GapBridge calls a connector in these ways:

* ``stream`` declares what is synced: the records' primary key, the bookmark field that
  replication follows, whether records come sorted by it, and how much to re-read before the
  bookmark when the tool's time filter is coarse.
* ``check_configuration()`` runs before a sync reads a page: it resolves what the tool must
  tell (custom field names, the account's time zone) and names what is wrong.
* ``fetch_pages(bookmark)`` yields ``Page`` objects in replication order. Each page carries the
  raw records and the bookmark that is safe to store once those records are stored. The caller
  commits a page and its bookmark in one transaction, and never stores a bookmark that moves back.
* ``normalize(record)`` maps one raw record onto the canonical incident
  (``connectors.canonical``); ``NormalizationError`` for a record it cannot map, which the caller
  stores as rejected under ``record_id(record)`` and carries on.
* ``write_back(enrichment)`` writes a note, fields, labels or properties onto one ticket (what
  ``capabilities`` says it can), and ``current_fingerprint(external_id)`` reads the enrichment
  fingerprint the ticket carries now, so a write-back interrupted after the tool took it is not
  repeated. A read-only connector declares no write capability and implements neither.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from marshmallow import Schema

from .canonical import parse_utc
from .errors import FatalConnectorError, InvalidResponseError
from .http import HttpSession

#: what a connector may write onto a ticket
WRITE_CAPABILITIES = frozenset({"note", "fields", "labels", "properties"})
#: the names in ``Enrichment.fields`` a connector may map onto the ticket's own fields (see plugin.services.enrich)
ENRICHMENT_FIELDS = ("open_gaps", "gap_checks", "controls_2022", "controls_2013", "compliance_status", "worst_severity",
                     "improvements", "improvement_checks", "pending_clocks", "next_due_at", "accepted_risks", "accepted_checks", "ruleset")


@dataclass(frozen=True)
class Stream:
    """What one connector syncs, declared once (the Singer SDK's stream metadata).

    ``primary_key``: the path to a raw record's id (``("sys_id",)``, ``("id",)``), used to name a
    record that cannot be normalized. ``replication_key``: the bookmark's field holding the UTC time
    records are replicated by; bookmarks are compared on it. ``is_sorted``: records come in that
    order, so each page's bookmark may be stored as it commits; an unsorted stream's bookmark is
    stored when the sync ends. ``overlap_seconds``: re-read this much before the bookmark (JQL
    filters to the minute; a record committed in the bookmark's own second can sort before it).
    """

    name: str
    primary_key: tuple[str, ...]
    replication_key: str
    is_sorted: bool = True
    overlap_seconds: int = 0

    def bookmark_time(self, bookmark: Mapping[str, Any] | None) -> datetime | None:
        """The replication time a bookmark stands at; None for no bookmark (read everything)."""
        if not bookmark or bookmark.get(self.replication_key) in (None, ""):
            return None
        try:
            return parse_utc(bookmark[self.replication_key])
        except ValueError:
            raise InvalidResponseError(f"bookmark of stream {self.name!r}: {self.replication_key} "
                                       f"{bookmark[self.replication_key]!r} is not a time") from None


@dataclass(frozen=True)
class Capabilities:
    """What a connector can write onto a ticket: a subset of ``WRITE_CAPABILITIES``; empty: read-only."""

    write_back: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = set(self.write_back) - WRITE_CAPABILITIES
        if unknown:
            raise ValueError(f"unknown write capabilities {sorted(unknown)} (known: {sorted(WRITE_CAPABILITIES)})")

    @property
    def read_only(self) -> bool:
        return not self.write_back


READ_ONLY = Capabilities()


@dataclass(frozen=True)
class Page:
    """Raw records in replication order and the bookmark that is safe after them."""

    records: list[dict[str, Any]]
    bookmark: dict[str, Any] | None
    total: int | None = None  # the tool's estimate of all records in scope, if it says
    warnings: tuple[str, ...] = ()  # what the operator should know about this page (a scope the tool ignored)


@dataclass(frozen=True)
class Enrichment:
    """What GapBridge writes onto one ticket."""

    external_id: str
    fingerprint: str
    note: str | None  # the work note, None when notes are switched off
    fields: dict[str, Any] = field(default_factory=dict)  # enrichment field name -> value
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
    #: what is synced; a connector whose overlap comes from its options sets it in ``__init__``
    stream: Stream
    #: what it can write back; read-only unless the connector says more
    capabilities: Capabilities = READ_ONLY
    #: how many tickets ``current_fingerprints`` reads in one request; 1: it calls ``current_fingerprint`` for each
    fingerprints_per_request: int = 1

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = options

    def check_configuration(self) -> None:  # noqa: B027  (optional: most connectors know all they need from options)
        """Ask the tool what the options depend on before the first page; a ConfigurationError names what is wrong."""

    @abc.abstractmethod
    def fetch_pages(self, bookmark: Mapping[str, Any] | None) -> Iterator[Page]:
        """Pages of records changed after ``bookmark`` (all records when None)."""

    @abc.abstractmethod
    def normalize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One raw record as a canonical incident (see ``connectors.canonical``)."""

    def record_id(self, record: Mapping[str, Any]) -> str | None:
        """The id of a raw record, by the stream's primary key; None when it has none.

        It names a record that cannot be normalized, so it must not fail on a malformed one.
        """
        value: Any = record
        for part in self.stream.primary_key:
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, Mapping):  # ServiceNow with display_value=all: {display_value, value}
            value = value.get("value")
        return None if value in (None, "") else str(value)

    def write_back(self, enrichment: Enrichment) -> WriteResult:
        """Write the enrichment onto the ticket."""
        raise FatalConnectorError(f"connector {self.name!r} is read-only: it writes nothing back")

    def current_fingerprint(self, external_id: str) -> str | None:
        """The enrichment fingerprint the ticket carries now, read from the tool."""
        raise FatalConnectorError(f"connector {self.name!r} is read-only: it reads no fingerprint")

    def current_fingerprints(self, external_ids: Sequence[str]) -> dict[str, str | None]:
        """The fingerprints of several tickets; a tool that can read them in one request overrides this."""
        return {external_id: self.current_fingerprint(external_id) for external_id in external_ids}

    def http_sessions(self) -> list[HttpSession]:
        """The HTTP sessions this connector holds: closed by ``close`` and dropped in a forked worker."""
        return [value for value in vars(self).values() if isinstance(value, HttpSession)]

    def close(self) -> None:
        """Release sessions and sockets."""
        for session in self.http_sessions():
            session.close()

    def forked(self) -> None:
        """Called in a forked worker process before it fetches: drop connections shared with the parent.

        Pooled keep-alive sockets were inherited; both processes using one would mix their
        requests. Closing the worker's copies leaves the parent's connections intact.
        """
        for session in self.http_sessions():
            session.close()
