"""An in-memory connector for service tests: keyset pages, failures on demand."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from marshmallow import Schema

from connectors.base import (
    Capabilities,
    Connector,
    Enrichment,
    FatalConnectorError,
    NormalizationError,
    Page,
    ServerError,
    Stream,
    WriteResult,
)

from .conftest import NOW, create_incident


class FakeTicketing:
    """The tool's side: tickets, the notes written to them, and failures to inject."""

    def __init__(self, count: int) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}
        for i in range(count):
            sid = f"{i:032x}"
            # pairs of tickets share an update time, as real tools do
            self.tickets[sid] = {"id": sid, "number": f"INC{i:07d}", "updated": (NOW - timedelta(hours=count - i // 2)).isoformat(),
                                 "security": i % 3 != 0, "evidence": i % 2 == 0, "fingerprint": None}
        self.notes: dict[str, list[str]] = {}
        self.fail_writes = 0
        self.fatal_writes = False
        self.crash_after_pages: int | None = None
        self.bad_ids: set[str] = set()
        self.requests = 0

    def touch(self, sid: str, **changes: Any) -> None:
        t = self.tickets[sid]
        t.update(changes)
        latest = max(x["updated"] for x in self.tickets.values())
        t["updated"] = (NOW + timedelta(seconds=1) if latest < (NOW + timedelta(seconds=1)).isoformat() else NOW + timedelta(days=1)).isoformat()


class FakeConnector(Connector):
    config_schema = Schema
    stream = Stream("tickets", ("id",), "updated_at")
    capabilities = Capabilities(frozenset({"note"}))

    def __init__(self, tool: FakeTicketing, name: str = "fake", page_size: int = 7) -> None:
        super().__init__(name, {})
        self.tool, self.page_size = tool, page_size

    def fetch_pages(self, bookmark: Mapping[str, Any] | None) -> Iterator[Page]:
        ordered = sorted(self.tool.tickets.values(), key=lambda t: (t["updated"], t["id"]))
        if bookmark:
            key = (bookmark["updated_at"], bookmark["id"])
            ordered = [t for t in ordered if (t["updated"], t["id"]) > key]
        for n, start in enumerate(range(0, len(ordered), self.page_size)):
            if self.tool.crash_after_pages is not None and n >= self.tool.crash_after_pages:
                raise ServerError("simulated crash of the process")
            self.tool.requests += 1
            chunk = [dict(t) for t in ordered[start:start + self.page_size]]
            yield Page(chunk, {"updated_at": chunk[-1]["updated"], "id": chunk[-1]["id"]}, len(ordered))

    def normalize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        if record["id"] in self.tool.bad_ids:
            raise NormalizationError(f"{record['number']}: field 'opened_at': not a timestamp: 'yesterday'")
        # a ticket's own canonical fields win over these defaults
        return create_incident(**{
            "source": self.name, "external_id": record["id"], "number": record["number"], "is_security": record["security"],
            "evidence": create_incident()["evidence"] if record["evidence"] else [],
            "enrichment_fingerprint": record["fingerprint"], "affected_ci": f"ci-{record['number']}",
            "raw": {k: v for k, v in record.items() if k != "canonical"},
            **record.get("canonical", {}),
        })

    def write_back(self, enrichment: Enrichment) -> WriteResult:
        self.tool.requests += 1
        if self.tool.fatal_writes:
            raise FatalConnectorError("403 Forbidden: the integration user lacks the itil role")
        if self.tool.fail_writes:
            self.tool.fail_writes -= 1
            raise ServerError("503 Service Unavailable", retry_after=None)
        self.tool.notes.setdefault(enrichment.external_id, []).append(enrichment.note or "")
        self.tool.tickets[enrichment.external_id]["fingerprint"] = enrichment.fingerprint
        return WriteResult(enrichment.external_id, True)

    def current_fingerprint(self, external_id: str) -> str | None:
        if self.tool.fail_writes:
            self.tool.fail_writes -= 1
            raise ServerError("503 Service Unavailable")
        return self.tool.tickets[external_id]["fingerprint"]
