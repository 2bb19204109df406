"""The append-only audit log."""

from __future__ import annotations

from typing import Any

from ..extensions import db
from ..models import AuditEvent, utcnow


def record(action: str, subject_type: str, subject_id: Any = None, *, actor: str = "gapbridge", **details: Any) -> None:
    """Add an audit event to the current transaction (committed with the change it records)."""
    db.session.add(AuditEvent(at=utcnow(), actor=actor, action=action, subject_type=subject_type,
                              subject_id=None if subject_id is None else str(subject_id), details=details))


def record_many(rows: list[dict[str, Any]]) -> None:
    """Add many events (dicts of action, subject_type, subject_id, details) in one statement."""
    if rows:
        from .store import bulk_write

        now = utcnow()
        bulk_write(AuditEvent.__table__, [{"at": now, "actor": "gapbridge", **r} for r in rows],
                   ["at", "actor", "action", "subject_type", "subject_id", "details"])
