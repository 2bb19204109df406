"""Whether a failed gap is under an accepted risk, as SQL (for counts and lists) and in Python (for one ticket).

An acceptance is in force from its creation until it expires or is revoked. It covers a finding of its
check on one incident, or on every incident its scope matches (a scope column left empty matches all).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..models import Finding, Incident, RiskAcceptance


def in_force(now: datetime) -> sa.ColumnElement[bool]:
    ra = RiskAcceptance
    return sa.and_(ra.revoked_at.is_(None), ra.expires_at > now)


def covers(acceptance: type[RiskAcceptance] | sa.orm.util.AliasedClass, finding: type[Finding] = Finding,
           incident: type[Incident] = Incident) -> sa.ColumnElement[bool]:
    """The acceptance's check and scope match the finding and its incident (both must be in the query)."""
    ra = acceptance
    return sa.and_(
        ra.check_id == finding.check_id,
        sa.or_(
            ra.incident_id == finding.incident_id,
            sa.and_(
                ra.incident_id.is_(None),
                sa.or_(ra.scope_source.is_(None), ra.scope_source == incident.source),
                sa.or_(ra.scope_business_unit.is_(None), ra.scope_business_unit == incident.business_unit),
                sa.or_(ra.scope_category.is_(None), ra.scope_category == incident.category),
            ),
        ),
    )


def accepted_clause(now: datetime) -> sa.ColumnElement[bool]:
    """A failed gap with an acceptance in force at ``now`` (the query must join Finding and Incident)."""
    return sa.and_(Finding.is_open_gap, sa.exists().where(in_force(now), covers(RiskAcceptance)).correlate(Finding, Incident))


def open_gap_clause(now: datetime) -> sa.ColumnElement[bool]:
    """The open gaps the API, reports and exports count: failed gaps no acceptance covers."""
    return sa.and_(Finding.is_open_gap, ~sa.exists().where(in_force(now), covers(RiskAcceptance)).correlate(Finding, Incident))


def matches(acceptance: RiskAcceptance, check_id: str, incident: Incident, now: datetime) -> bool:
    """The same as ``covers`` and ``in_force``, for one ticket already loaded."""
    if acceptance.revoked_at is not None or acceptance.expires_at <= now or acceptance.check_id != check_id:
        return False
    return reaches(acceptance, incident)


def reaches(acceptance: RiskAcceptance, incident: Any) -> bool:
    """The acceptance's incident or scope takes in ``incident`` (whether or not it is in force)."""
    if acceptance.incident_id is not None:
        return bool(acceptance.incident_id == incident.id)
    return all(want is None or want == have for want, have in (
        (acceptance.scope_source, incident.source), (acceptance.scope_business_unit, incident.business_unit),
        (acceptance.scope_category, incident.category)))


INLINE_LIMIT = 300  # beyond this many acceptances in force, a correlated EXISTS beats a long OR


def accepted_term(now: datetime) -> sa.ColumnElement[bool]:
    """``accepted_clause`` without the open-gap part, for queries over many findings.

    The acceptances in force are few: spelled out inline they let the database test each finding
    without a subquery per row; the same meaning as ``covers`` and ``in_force``.
    """
    from ..extensions import db

    rows = db.session.execute(sa.select(RiskAcceptance).where(in_force(now)).limit(INLINE_LIMIT + 1)).scalars().all()
    if len(rows) > INLINE_LIMIT:
        return sa.exists().where(in_force(now), covers(RiskAcceptance)).correlate(Finding, Incident)
    terms = []
    for ra in rows:
        if ra.incident_id is not None:
            terms.append(sa.and_(Finding.check_id == ra.check_id, Finding.incident_id == ra.incident_id))
            continue
        # IS NOT DISTINCT FROM, not =: an incident without the value is not matched (false, not NULL, which NOT would keep NULL)
        scope = [column.is_not_distinct_from(want) for want, column in (
            (ra.scope_source, Incident.source), (ra.scope_business_unit, Incident.business_unit), (ra.scope_category, Incident.category))
            if want is not None]
        terms.append(sa.and_(Finding.check_id == ra.check_id, *scope))
    return sa.or_(*terms) if terms else sa.false()
