"""Leases: run-once work across service instances, claimed in the database (never an in-memory flag)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import Lease, utcnow

log = logging.getLogger("gapbridge.leases")


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
    if current and current != holder and dead_local_holder(current, holder):
        result = cast(CursorResult[Any], db.session.execute(
            table.update().where(table.c.name == name, table.c.holder == current).values(holder=holder, expires_at=until)))
        db.session.commit()
        return result.rowcount == 1
    return False


def renew_lease(name: str, holder: str, seconds: float) -> bool:
    """Extend ``holder``'s lease in the caller's transaction (committed with the work it guards); False if it is not theirs.

    A sync renews at every page this way: the page commits only if the lease was still its own,
    and no transaction (nor a flush of the log to disk) of its own is spent on the renewal. A lease
    no one holds any more (another sync of this process released it) is taken again, as
    ``acquire_lease`` would.
    """
    table = Lease.__table__
    until = utcnow() + timedelta(seconds=seconds)
    result = cast(CursorResult[Any], db.session.execute(
        table.update().where(table.c.name == name, table.c.holder == holder).values(expires_at=until)))
    if result.rowcount == 1:
        return True
    try:
        with db.session.begin_nested():
            db.session.execute(table.insert().values(name=name, holder=holder, expires_at=until))
    except IntegrityError:  # another holder's
        return False
    return True


def dead_local_holder(current: str, me: str) -> bool:
    """True if ``current`` ("host:pid") is a process of this host that no longer runs (a lease's or an outbox claim's)."""
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


class LeaseBusy(Exception):
    """Another process holds the lease: its work is under way there (a step skipped here, not a failure)."""

    def __init__(self, name: str, holder: str | None, until: Any) -> None:
        self.name, self.holder, self.until = name, holder, until
        by = f" by {holder} until {until:%Y-%m-%d %H:%M:%S} UTC" if holder else ""
        super().__init__(f"the lease {name!r} is held{by}")


@contextmanager
def held_lease(name: str, seconds: float, holder: str | None = None) -> Iterator[None]:
    """Hold ``name`` while the block runs, renewed every third of ``seconds``; LeaseBusy if someone else holds it.

    The renewal runs in a thread with its own session (the block's transactions are its own), so a long
    job keeps its lease, and a killed process's lease runs out ``seconds`` later (at once on this host).
    """
    from flask import current_app

    me = holder or worker_id()
    db.session.commit()  # the lease is taken in a transaction of its own
    if not acquire_lease(name, me, seconds):
        table = Lease.__table__
        current = db.session.execute(sa.select(table.c.holder, table.c.expires_at).where(table.c.name == name)).first()
        db.session.commit()
        raise LeaseBusy(name, current.holder if current else None, current.expires_at if current else None)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(seconds / 3):
            with app.app_context():
                try:
                    if not acquire_lease(name, me, seconds):
                        log.error("the lease %r was taken over while %s held it (it ran out): another process may do this work too", name, me)
                        return
                except Exception as exc:  # the database away for a moment: try again at the next renewal
                    log.warning("could not renew the lease %r: %s", name, exc)
                finally:
                    db.session.remove()

    renewal = threading.Thread(target=renew, name=f"gapbridge-lease-{name}", daemon=True)
    renewal.start()
    try:
        yield
    finally:
        stop.set()
        renewal.join(timeout=10)
        db.session.rollback()  # a block that failed may leave its transaction aborted
        release_lease(name, me)
