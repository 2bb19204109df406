"""Shared pieces: errors, pages, cursors, periods and the filters that narrow incidents."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any, NamedTuple

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from connectors.canonical import RECORD_TYPES, SEVERITIES

MAX_ID = 2**31 - 1  # the integer primary keys
MAX_TEXT = 255
_PERIOD = re.compile(r"^(?P<year>\d{4})(?:-(?:Q(?P<quarter>[1-4])|(?P<month>0[1-9]|1[0-2])|W(?P<week>0[1-9]|[1-4]\d|5[0-3])))?$")


class Strict(Schema):
    """Query and body schemas refuse what they do not know: a typo must not silently widen a query."""

    class Meta:
        unknown = RAISE


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"description": "the HTTP status name"})
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields", keys=fields.String(), metadata={"description": "messages per parameter or body field"})
    allowed = fields.List(fields.String(), metadata={"description": "the methods a path allows (405)"})


def text(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=kwargs.pop("max", MAX_TEXT)), **kwargs)


class PageArgs(Strict):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(validate=validate.Length(min=1, max=2000),
                           metadata={"description": "the next_cursor of the page before; opaque"})


def page_of(item: type[Schema] | Schema, name: str) -> type[Schema]:
    """A page of items with the cursor of the next page (null on the last)."""
    return Schema.from_dict({
        "items": fields.List(fields.Nested(item), required=True),
        "next_cursor": fields.String(allow_none=True, required=True),
    }, name=name)


class Period(NamedTuple):
    start: datetime
    end: datetime
    label: str


def parse_period(value: str) -> Period:
    """2026, 2026-Q3, 2026-09 or 2026-W05 as [start, end) in UTC."""
    m = _PERIOD.match(value)
    if not m:
        raise ValidationError("expected a year (2026), a quarter (2026-Q3), a month (2026-09) or an ISO week (2026-W05)")
    year = int(m["year"])
    if m["quarter"]:
        q = int(m["quarter"])
        start, end = date(year, 3 * q - 2, 1), date(year + (q == 4), 1 if q == 4 else 3 * q + 1, 1)
    elif m["month"]:
        mo = int(m["month"])
        start, end = date(year, mo, 1), date(year + (mo == 12), 1 if mo == 12 else mo + 1, 1)
    elif m["week"]:
        try:
            start = date.fromisocalendar(year, int(m["week"]), 1)
        except ValueError:
            raise ValidationError(f"{year} has no ISO week {m['week']}") from None
        end = date.fromordinal(start.toordinal() + 7)
    else:
        start, end = date(year, 1, 1), date(year + 1, 1, 1)
    return Period(datetime(start.year, start.month, start.day, tzinfo=timezone.utc),
                  datetime(end.year, end.month, end.day, tzinfo=timezone.utc), value)


class PeriodField(fields.Field):
    """A named period, loaded as its [start, end) in UTC; documented as a string."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metadata = {"type": "string", **self.metadata}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Period:
        if not isinstance(value, str) or len(value) > 16:
            raise ValidationError("expected a period such as 2026-Q3")
        return parse_period(value)


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 time with an offset, loaded as UTC; one that has no UTC counterpart (9999-12-31T23:59-05:00) is refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        loaded = super()._deserialize(value, attr, data, **kwargs)
        try:
            return loaded.astimezone(timezone.utc)
        except OverflowError:
            raise ValidationError("outside the range of times in UTC") from None


class ScopeArgs(Strict):
    """What narrows the incidents counted: a period on opened_at or closed_at, and the incident's own fields."""

    period = PeriodField(metadata={"description": "2026, 2026-Q3, 2026-09 or 2026-W05 (UTC); or from/to"})
    from_ = UtcDateTime(data_key="from", metadata={"description": "start of the period, inclusive (ISO 8601 with offset)"})
    to = UtcDateTime(metadata={"description": "end of the period, exclusive"})
    by = fields.String(load_default="opened_at", validate=validate.OneOf(["opened_at", "closed_at"]),
                       metadata={"description": "which time puts an incident in the period"})
    business_unit = text()
    source = text(max=64)
    severity = fields.String(validate=validate.OneOf(SEVERITIES), metadata={"description": "the incident's severity"})
    record_type = fields.String(validate=validate.OneOf(RECORD_TYPES))

    @validates_schema
    def _one_period(self, data: dict[str, Any], **_: Any) -> None:
        if "period" in data and ("from_" in data or "to" in data):
            raise ValidationError("give period or from/to, not both", "period")
        if "from_" in data and "to" in data and data["from_"] >= data["to"]:
            raise ValidationError("must be after from", "to")
