"""The canonical incident: the one shape every connector produces and every check reads.

A canonical incident is a plain ``dict`` keyed by the names in ``FIELDS``. Plain dicts
keep assessment fast (a check is a chain of ``dict.get`` calls) and serialise as-is.
Timestamps are timezone-aware UTC ``datetime`` objects; a missing value is ``None``
for scalars and ``[]`` for lists, never ``""``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

SEVERITIES = ("critical", "high", "medium", "low")
STATES = ("new", "triaged", "in_progress", "on_hold", "resolved", "closed", "cancelled")
OPEN_STATES = ("new", "triaged", "in_progress", "on_hold")
# What a record is: a reported event not yet decided, an incident (an information security
# incident when is_security), a reported security weakness, a service request. Connectors map
# it from category, table or issue type (configuration), with "incident" as the default.
RECORD_TYPES = ("event", "incident", "weakness", "request")
# What a notification is, for the regulatory clocks (GDPR, NIS2, DORA); "update" is anything else.
NOTIFICATION_KINDS = ("early_warning", "initial_notification", "notification", "intermediate_report", "final_report", "update")

# name -> kind. Kinds: str, text, bool, datetime, severity, state, record_type, list.
FIELDS: dict[str, str] = {
    # identity and source
    "source": "str",
    "external_id": "str",
    "number": "str",
    "url": "str",
    # what it is
    "title": "text",
    "description": "text",
    "category": "str",
    "subcategory": "str",
    "record_type": "record_type",
    "is_security": "bool",
    "severity": "severity",
    "state": "state",
    "business_unit": "str",
    "assignment_group": "str",
    "assignee": "str",
    "reporter": "str",
    "reported_via": "str",
    "affected_ci": "str",
    "major_incident": "bool",
    # lifecycle, all UTC
    "opened_at": "datetime",
    "assessed_at": "datetime",
    "acknowledged_at": "datetime",
    "contained_at": "datetime",
    "major_declared_at": "datetime",
    "resolved_at": "datetime",
    "closed_at": "datetime",
    "updated_at": "datetime",
    # what was done
    "close_code": "str",
    "root_cause": "text",
    "resolution_notes": "text",
    "lessons_learned": "text",
    "problem_ref": "str",
    "maintenance_ref": "str",
    "capacity_ref": "str",
    "related_refs": "list",
    "weakness_refs": "list",
    "vulnerability_refs": "list",
    "log_refs": "list",
    "evidence": "list",
    "notifications": "list",
    "escalations": "list",
    "timeline": "list",
    "personal_data_breach": "bool",
    "legal_hold": "bool",
    # the fingerprint of the last GapBridge enrichment found on the ticket
    "enrichment_fingerprint": "str",
}

LIST_FIELDS = frozenset(n for n, k in FIELDS.items() if k == "list")
DATETIME_FIELDS = frozenset(n for n, k in FIELDS.items() if k == "datetime")
BOOL_FIELDS = frozenset(n for n, k in FIELDS.items() if k == "bool")

# Shapes of list items. Checks count and filter items by these keys, and by no others.
EVIDENCE_KEYS = ("what", "where", "collected_by", "collected_at", "sha256", "custody")
CUSTODY_KEYS = ("at", "by", "action")
# to: reporter, authority, csirt, customer, data_subjects, dpo, management, ... (open-ended)
NOTIFICATION_KEYS = ("to", "kind", "at", "channel", "reference")
ESCALATION_KEYS = ("to", "at", "reason")
TIMELINE_KEYS = ("at", "author", "kind", "text")
# the keys of the items of each list of objects (``custody`` is a list inside an evidence item)
ITEM_KEYS: dict[str, tuple[str, ...]] = {
    "evidence": EVIDENCE_KEYS, "custody": CUSTODY_KEYS, "notifications": NOTIFICATION_KEYS,
    "escalations": ESCALATION_KEYS, "timeline": TIMELINE_KEYS,
}
# timestamps inside list items that are parsed to datetimes like top-level fields
ITEM_DATETIME_KEYS = frozenset({"collected_at", "at"})
# closed vocabularies: a check comparing one of these with a value outside it is rejected at load
FIELD_VALUES: dict[str, tuple[str, ...]] = {"severity": SEVERITIES, "state": STATES, "record_type": RECORD_TYPES}
ITEM_VALUES: dict[tuple[str, str], tuple[str, ...]] = {("notifications", "kind"): NOTIFICATION_KINDS}

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


_NONE_INCIDENT = dict.fromkeys(FIELDS)
_LIST_FIELD_NAMES = tuple(n for n in FIELDS if n in LIST_FIELDS)


def empty_incident() -> dict[str, Any]:
    """A canonical incident with every field at its missing value (each list its own)."""
    incident = _NONE_INCIDENT.copy()  # once per record a connector reads: a copy, not a comprehension
    for name in _LIST_FIELD_NAMES:
        incident[name] = []
    return incident


def parse_utc(value: Any) -> datetime | None:
    """Parse a timestamp to an aware UTC datetime; naive input is taken as UTC.

    Accepts datetimes, ISO 8601 strings (with ``T`` or a space, with or without an
    offset or ``Z``) and ServiceNow's ``YYYY-MM-DD HH:MM:SS``. ``""`` and ``None`` are
    missing. Anything else raises ``ValueError`` naming the value.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a timestamp: {value!r}") from None
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and bool(_SHA256.match(value))


def object_items(value: Any) -> list[dict[str, Any]]:
    """A list field's items as canonical objects: each must be an object; times in ``ITEM_DATETIME_KEYS`` parsed.

    ValueError names what is wrong (the connector makes it a NormalizationError with the field).
    """
    if not isinstance(value, list):
        raise ValueError(f"expected a JSON list of objects, got {type(value).__name__}")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"item {i} is {type(item).__name__}, expected an object")
        items.append(_item(item))
    return items


def _item(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in item.items():
        if key in ITEM_DATETIME_KEYS:
            try:
                v = parse_utc(v)
            except ValueError:
                v = None  # an unreadable time counts as missing; the raw record keeps the text
        elif isinstance(v, list):
            v = [_item(x) if isinstance(x, dict) else x for x in v]
        out[key] = v
    return out
