"""Leases: run-once work across service instances, claimed in the database (never an in-memory flag)."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import Lease, utcnow


def worker_id() -> str:
    """Who holds a lease or a claim: this process, as host:pid (a dead local holder is taken over at once)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def acquire_lease(name: str, holder: str, seconds: float) -> bool:
    """Claim ``name`` for ``holder`` until now + seconds; False if someone else holds it."""
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    table = Lease.__table__
    # an UPDATE's result is a CursorResult, which has rowcount; Session.execute is typed as plain Result
    result = cast(CursorResult[Any], db.session.execute(
        table.update()
        .where(table.c.name == name, sa.or_(table.c.expires_at < now, table.c.holder == holder))
        .values(holder=holder, expires_at=until)
    ))
    if result.rowcount == 1:
        db.session.commit()
        return True
    try:
        db.session.execute(table.insert().values(name=name, holder=holder, expires_at=until))
        db.session.commit()
        return True
    except IntegrityError:
        db.session.rollback()
    # a holder on this host whose process is gone (killed, crashed) need not block us until expiry
    current = db.session.execute(sa.select(table.c.holder).where(table.c.name == name)).scalar()
    if current and current != holder and _dead_local_holder(current, holder):
        result = cast(CursorResult[Any], db.session.execute(
            table.update().where(table.c.name == name, table.c.holder == current).values(holder=holder, expires_at=until)))
        db.session.commit()
        return result.rowcount == 1
    return False


def _dead_local_holder(current: str, me: str) -> bool:
    """True if ``current`` ("host:pid") is a process of this host that no longer runs."""
    host, _, pid = current.rpartition(":")
    if host != me.rpartition(":")[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    return False


def release_lease(name: str, holder: str) -> None:
    table = Lease.__table__
    db.session.execute(table.delete().where(table.c.name == name, table.c.holder == holder))
    db.session.commit()


def lease_holder(name: str) -> Lease | None:
    return db.session.get(Lease, name)
