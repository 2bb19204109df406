"""Which incidents a question is about: a period on opened_at or closed_at, and the incident's own fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..models import Incident


@dataclass(frozen=True)
class Scope:
    start: datetime | None = None
    end: datetime | None = None
    by: str = "opened_at"  # or closed_at
    business_unit: str | None = None
    source: str | None = None
    severity: str | None = None
    record_type: str | None = None
    label: str | None = None  # the period as asked for (2026-Q3)

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> Scope:
        period = args.get("period")
        start, end, label = (period.start, period.end, period.label) if period else (args.get("from_"), args.get("to"), None)
        return cls(start=start, end=end, by=args.get("by", "opened_at"), business_unit=args.get("business_unit"),
                   source=args.get("source"), severity=args.get("severity"), record_type=args.get("record_type"), label=label)

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        """WHERE terms over Incident."""
        when = Incident.closed_at if self.by == "closed_at" else Incident.opened_at
        out: list[sa.ColumnElement[bool]] = [Incident.assessed_ruleset.is_not(None)]
        if self.start is not None:
            out.append(when >= self.start)
        if self.end is not None:
            out.append(when < self.end)
        for value, column in ((self.business_unit, Incident.business_unit), (self.source, Incident.source),
                              (self.severity, Incident.severity), (self.record_type, Incident.record_type)):
            if value is not None:
                out.append(column == value)
        return out

    def describe(self) -> dict[str, Any]:
        return {"period": self.label, "start": self.start, "end": self.end, "by": self.by, "business_unit": self.business_unit, "source": self.source,
                "severity": self.severity, "record_type": self.record_type}
