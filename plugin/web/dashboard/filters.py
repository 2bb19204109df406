"""The filters every page takes from its URL (period, business unit, source, severity, record type), so that a view
can be shared by its link; a bad value is a 400 page that names the parameter and what it expects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import render_template, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from ...queries.scope import Scope
from ...rules.catalogue import EDITIONS
from ...schemas.common import parse_period

FIELDS = ("business_unit", "source", "severity", "record_type")
LABELS = {"period": "Period", "business_unit": "Business unit", "source": "Source", "severity": "Severity", "record_type": "Record type"}
MAX_VALUE = 255


class BadFilter(HTTPException):
    """A filter value the page cannot use: answered with the page's 400, naming the parameter."""

    code = 400

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.parameter, self.problem = name, problem

    def get_response(self, environ: Any = None, scope: Any = None) -> Any:
        from flask import make_response

        body = render_template("error.html", title="This view cannot be shown",
                               message=f"The link asks for {LABELS.get(self.parameter, self.parameter).lower()} "
                                       f"“{request.args.get(self.parameter, '')[:80]}” ({self.parameter}), which the dashboard cannot use: {self.problem}.")
        return make_response(body, 400)


@dataclass(frozen=True)
class Filters:
    """The filters of a request: what was asked (``values``, for the form and the links) and the scope they make."""

    values: dict[str, str] = field(default_factory=dict)
    scope: Scope = field(default_factory=Scope)

    def query(self, **changes: str | None) -> str:
        """The URL query of these filters with ``changes`` (None drops a key), for links that keep the view."""
        merged = {**self.values, **changes}
        kept = {k: v for k, v in merged.items() if v not in (None, "")}
        return urlencode(kept)

    def href(self, path: str, **changes: str | None) -> str:
        query = self.query(**changes)
        return f"{path}?{query}" if query else path

    @property
    def describe(self) -> str:
        parts = [f"{LABELS[k].lower()} {v}" for k, v in self.values.items() if k in LABELS and v]
        return ", ".join(parts) or "all incidents"


def parse(args: Mapping[str, str] | None = None) -> Filters:
    """The filters in ``args`` (the request's query by default); BadFilter for a value that is not one."""
    args = request.args if args is None else args
    values: dict[str, str] = {}
    period = None
    raw = (args.get("period") or "").strip()
    if raw:
        if len(raw) > 16:
            raise BadFilter("period", "expected a year (2026), a quarter (2026-Q3), a month (2026-09) or an ISO week (2026-W05)")
        try:
            period = parse_period(raw)
        except ValidationError as exc:
            raise BadFilter("period", _message(exc)) from None
        values["period"] = raw
    picked: dict[str, str] = {}
    for name in FIELDS:
        value = (args.get(name) or "").strip()
        if len(value) > MAX_VALUE:
            raise BadFilter(name, f"at most {MAX_VALUE} characters")
        if value:
            picked[name] = values[name] = value
    scope = Scope(start=period.start if period else None, end=period.end if period else None, label=period.label if period else None,
                  **picked)
    return Filters(values, scope)


def edition(args: Mapping[str, str] | None = None) -> str:
    args = request.args if args is None else args
    value = args.get("edition") or "2022"
    if value not in EDITIONS:
        raise BadFilter("edition", "expected 2022 or 2013")
    return value


def _message(exc: ValidationError) -> str:
    messages = exc.messages
    if isinstance(messages, list):
        return "; ".join(str(m) for m in messages)
    return str(messages)
