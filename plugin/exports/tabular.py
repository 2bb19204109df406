"""Gaps, coverage and populations as CSV or JSON: the rows an auditor samples from or loads into a spreadsheet.

The rows come from the same queries as the API, so an export and the API never disagree.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import orjson

DATASETS = ("gaps", "coverage", "population")

GAP_COLUMNS = ["incident_id", "source", "number", "url", "title", "business_unit", "assignment_group", "incident_severity",
               "opened_at", "closed_at", "check_id", "check_title", "kind", "gap_severity", "subprocess", "controls_2022",
               "controls_2013", "status", "details", "first_failed_at", "resolved_at", "due_at", "accepted_by", "accepted_until"]
COVERAGE_COLUMNS = ["group", "key", "title", "ids_2022", "ids_2013", "checks", "in_scope", "passed", "failed", "accepted", "pending",
                    "not_applicable", "pass_rate"]
POPULATION_COLUMNS = ["group", "key", "outcome", "incident_id", "source", "number", "url", "title", "business_unit", "incident_severity",
                      "opened_at", "closed_at", "checks"]
COLUMNS = {"gaps": GAP_COLUMNS, "coverage": COVERAGE_COLUMNS, "population": POPULATION_COLUMNS}
# a cell a spreadsheet would run as a formula (OWASP CSV injection); a ticket title is text anyone may type
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={v}" for k, v in value.items())
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_lines(columns: list[str], rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The header and one line per row, as they are produced (a large export streams)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    yield buffer.getvalue()
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_cell(row.get(c)) for c in columns])
        yield buffer.getvalue()


def json_document(dataset: str, meta: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> bytes:
    items = [{c: row.get(c) for c in COLUMNS[dataset]} for row in rows]
    return orjson.dumps({"dataset": dataset, **meta, "items": items}, default=str,
                        option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
