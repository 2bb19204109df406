"""The tool double: what a connector's author implements so the contract suite can drive their connector.

A double stands in for one ITSM tool. It holds records in memory (or in a local server), serves
them through the tool's own API the way the tool does, builds connector instances pointed at
itself, injects faults on the n-th matching request, and tells what was written onto a ticket.
The suite knows nothing of the tool's shapes: it speaks in ``RecordSpec``, ``Fault`` and
``TicketWrites`` and reads the connector only through the contract (``connectors.contract``).

This module needs neither pytest nor GapBridge's database.
"""

from __future__ import annotations

import abc
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ..contract import Connector

#: canonical states a spec may carry (``connectors.canonical``)
STATES = ("new", "triaged", "in_progress", "on_hold", "resolved", "closed", "cancelled")

#: what a fault does to the request it hits
FaultKind = Literal[
    "rate_limited",       # 429 with Retry-After: <retry_after> seconds (a whole number)
    "server_error",       # 503 (on a read) or 500 (on a write) with the tool's error body; the request is not carried out
    "timeout",            # no answer within the connector's read timeout (the connector sees requests' ReadTimeout)
    "connection_closed",  # the request is carried out, the answer starts, the connection closes mid-body (ChunkedEncodingError)
    "unauthorized",       # 401: the credentials are refused
    "token_expired",      # the access token the connector holds expires now (a 401 until it fetches a new one); token auth only
    "not_json",           # 200 with a body that is not JSON (a proxy's or maintenance page, text/plain)
]
FAULT_KINDS: tuple[str, ...] = ("rate_limited", "server_error", "timeout", "connection_closed", "unauthorized", "token_expired", "not_json")
#: what a double's records may need beyond faults; a double that cannot do one names it in ``unsupported``
DATA_FEATURES: tuple[str, ...] = ("hidden_records", "unnormalizable_record", "write_back")

#: which requests a fault counts: ``page`` reads a page of records (each try counts, retries included);
#: ``write`` changes a ticket (a note, fields, labels, properties)
FaultTarget = Literal["page", "write"]


@dataclass(frozen=True)
class RecordSpec:
    """One record, said in the suite's words; the double makes a record of its tool's shape from it.

    ``updated_at``: the record's replication time (UTC, whole seconds; several specs may share one).
    ``title`` and ``state`` (one of ``STATES``) must come back from ``normalize`` as canonical
    ``title`` and ``state``, ``updated_at`` as ``updated_at``. ``hidden``: the record exists in the
    tool but the integration user may not see it, and the tool applies its page limit before it
    filters such records out (ServiceNow's ACLs): the page that held it comes back short, or empty,
    while more follow. ``unnormalizable``: a record the connector must refuse in ``normalize``
    (``NormalizationError``) while ``record_id`` still names it and paging goes on past it: e.g. a
    time column holding "yesterday" or a JSON column holding broken JSON.
    """

    updated_at: datetime
    title: str
    state: str = "new"
    hidden: bool = False
    unnormalizable: bool = False

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"RecordSpec.state {self.state!r} is not a canonical state ({', '.join(STATES)})")
        if self.updated_at.tzinfo is None:
            raise ValueError("RecordSpec.updated_at must be timezone-aware (UTC)")


@dataclass
class Fault:
    """A fault on matching requests: from the ``nth`` request of ``target`` on, ``times`` of them (None: all).

    Requests are counted per target from the double's creation, retries included (``nth=2``: the
    second page read, which may be the retry of the first). ``served`` counts the requests the
    fault was produced on, so the suite can tell a fault that never fired.
    """

    kind: str
    target: FaultTarget = "page"
    nth: int = 1
    times: int | None = 1
    retry_after: int | None = None  # seconds, for rate_limited
    served: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"Fault.kind {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if self.target not in ("page", "write"):
            raise ValueError(f"Fault.target {self.target!r} must be 'page' or 'write'")
        if self.nth < 1 or (self.times is not None and self.times < 1):
            raise ValueError("Fault.nth and Fault.times count from 1")


@dataclass(frozen=True)
class TicketWrites:
    """What the integration has written onto one ticket, as the tool holds it now.

    ``notes``: the notes or comments written, oldest first, their text as sent. ``fields``: the
    enrichment fields written (keyed by GapBridge's enrichment field name, e.g. ``open_gaps``,
    values as text the way the tool stores them). ``labels``: labels or tags. ``properties``:
    anything else written (Jira entity properties, RT custom fields), by the tool's own name.
    """

    notes: tuple[str, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)
    labels: frozenset[str] = frozenset()
    properties: Mapping[str, str] = field(default_factory=dict)


class ToolDouble(abc.ABC):
    """One ITSM tool, in memory, for the contract suite. A connector's author subclasses it.

    Implement ``seed``, ``edit``, ``connector``, ``secrets`` and ``writes``, and, where the tool
    serves a request, call ``fault_for(target)`` and produce what it returns (see ``FaultKind``).
    Declare what the double cannot produce in ``unsupported`` (a kind of ``FAULT_KINDS`` or
    ``DATA_FEATURES`` -> why): the suite skips those cases with that reason. The suite's records
    are dated in 2024 (``suite.BASE``), before any double's "now".

    The connector ``connector()`` builds must: point at this double; pass ``self.sleep`` as its
    retry sleep (so retries are instant and the suite sees the waits); try a failing read at least
    3 times in all; have a read timeout short enough for the ``timeout`` fault to be quick (under a
    second); hold the credentials ``secrets()`` names.
    """

    #: names the double in skip reasons and failure messages
    name: str = "tool"
    #: fault kinds or data features this double cannot produce, with the reason (the case is skipped with it)
    unsupported: Mapping[str, str] = {}

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.faults: list[Fault] = []
        self._requests: Counter[str] = Counter()
        self._fault_lock = threading.Lock()

    # --- records ---------------------------------------------------------------------------

    @abc.abstractmethod
    def seed(self, specs: Sequence[RecordSpec]) -> list[str]:
        """Store these records (the double held none before); their external ids, in the order of ``specs``.

        The external id is what ``normalize`` gives as ``external_id`` and ``record_id`` names.
        """

    @abc.abstractmethod
    def edit(self, external_id: str, title: str) -> None:
        """A person changes the record's title now: its replication time moves after every record's."""

    # --- the connector ---------------------------------------------------------------------

    @abc.abstractmethod
    def connector(self, page_size: int) -> Connector:
        """A fresh connector instance pointed at this double, reading ``page_size`` records a request.

        Each call builds a new one (a restarted process). It may write back (notes, and fields
        ``open_gaps`` and ``compliance_status`` where it writes fields) unless the double declares
        ``write_back`` unsupported. The suite closes it.
        """

    @abc.abstractmethod
    def secrets(self) -> list[str]:
        """Every credential the connectors were given or were issued so far (passwords, client secrets, tokens).

        The suite asserts none of them appears in an error message, a log line, a warning or a write result.
        """

    @abc.abstractmethod
    def writes(self, external_id: str) -> TicketWrites:
        """What the integration has written onto this ticket so far."""

    # --- faults ----------------------------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        """Arm a fault; returns it (its ``served`` tells later how often it fired)."""
        if fault.kind in self.unsupported:
            raise ValueError(f"{self.name} cannot produce {fault.kind}: {self.unsupported[fault.kind]}")
        with self._fault_lock:
            self.faults.append(fault)
        return fault

    def fault_for(self, target: FaultTarget) -> Fault | None:
        """Count one request of ``target`` and return the fault it must get, if any. The double calls it on each such request."""
        with self._fault_lock:
            self._requests[target] += 1
            n = self._requests[target]
            for fault in self.faults:
                if fault.target == target and n >= fault.nth and (fault.times is None or fault.served < fault.times):
                    fault.served += 1
                    return fault
        return None

    def requests(self, target: FaultTarget) -> int:
        """How many requests of ``target`` the double has served (faulted ones included)."""
        with self._fault_lock:
            return self._requests[target]

    def sleep(self, seconds: float) -> None:
        """The connector's retry sleep: recorded, not slept."""
        self.slept.append(seconds)

    def close(self) -> None:  # noqa: B027  (a double with a server or files overrides it)
        """Release what the double holds (a server, a temporary file)."""
