"""Dashboard users: created, listed, disabled, given a new password, unlocked; their sign-in, lock-out and sessions.

The CLI (``gapbridge users``) and the dashboard's sign-in (``plugin.web.dashboard.signin``) both come here.
Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended profile) and never
stored, logged or audited in any other form. After ``LOCK_AFTER`` consecutive failures an account is locked,
``LOCK_FIRST`` at first and twice as long with each further failure, up to ``LOCK_MAX``; the count and the lock
are columns of the user, so they hold across processes and instances.

A sign-in is refused with one message whatever the reason (``Refusal.reason`` is for the audit log alone), and an
unknown name costs the same hash verification as a known one, so neither the answer nor its time tells which
names exist.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from ..errors import GapBridgeError
from ..extensions import db
from ..models import TOKEN_ROLES, DashboardUser, utcnow
from . import audit

log = logging.getLogger("gapbridge.users")

MIN_PASSWORD_LENGTH = 12
# argon2 hashes any length, but its cost grows with the input: a cap keeps a megabyte "password" from being a load test
MAX_PASSWORD_LENGTH = 1024
LOCK_AFTER = 5
LOCK_FIRST = timedelta(minutes=1)
LOCK_MAX = timedelta(hours=1)
# ASCII only, so that lowercasing is the whole of "without regard to case" and no two names look alike in the audit log
USERNAME_SHAPE = re.compile(r"^[a-z][a-z0-9._@-]{0,63}$")
REFUSED_MESSAGE = "Wrong username or password, or the account is locked for now"

# module level, so that tests may put a cheaper one in its place; the dummy hash follows whichever is here
HASHER = PasswordHasher()
_dummy: tuple[PasswordHasher, str] | None = None


class UserError(GapBridgeError):
    """A request about dashboard users that cannot be met (the message is for the operator)."""


class Refused(enum.StrEnum):
    """Why a sign-in was refused: recorded in the audit log, never shown to the person signing in."""

    UNKNOWN_USER = "unknown_user"
    WRONG_PASSWORD = "wrong_password"
    LOCKED = "locked"
    DISABLED = "disabled"


@dataclass(frozen=True)
class Refusal:
    reason: Refused
    message: str = REFUSED_MESSAGE


def normalize_username(name: str) -> str:
    return name.strip().lower()


def check_username(name: str) -> str:
    """The stored form of a new user's name; UserError if it is not one."""
    username = normalize_username(name)
    if not USERNAME_SHAPE.match(username):
        raise UserError(f"invalid username {name!r}: use up to 64 letters, digits, '.', '_', '@' or '-', starting with a letter")
    return username


def check_role(role: str) -> str:
    if role not in TOKEN_ROLES:
        raise UserError(f"unknown role {role!r}; roles: {', '.join(TOKEN_ROLES)}")
    return role


def check_password(username: str, password: str) -> None:
    """UserError unless ``password`` may be set for ``username``; the message never repeats the password."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password is too short: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"the password is too long: at most {MAX_PASSWORD_LENGTH} characters")
    if password.strip().lower() == normalize_username(username):
        raise UserError("the password must not be the username")


def status(user: DashboardUser, now: datetime | None = None) -> str:
    """``disabled``, ``locked`` or ``active`` (disabled wins: it was a decision, a lock only counts failures)."""
    if user.disabled_at is not None:
        return "disabled"
    if user.locked_until is not None and user.locked_until > (now or utcnow()):
        return "locked"
    return "active"


def lock_duration(failed_attempts: int) -> timedelta | None:
    """How long the account is locked after this many consecutive failures: None below ``LOCK_AFTER``."""
    if failed_attempts < LOCK_AFTER:
        return None
    doublings = failed_attempts - LOCK_AFTER
    if doublings >= 16:  # far past the cap already; 2 ** doublings would only grow
        return LOCK_MAX
    return min(LOCK_FIRST * 2 ** doublings, LOCK_MAX)


# --- accounts --------------------------------------------------------------------------------


def find(username: str) -> DashboardUser | None:
    """A user by name, in any case."""
    return db.session.scalars(sa.select(DashboardUser).where(DashboardUser.username == normalize_username(username))).first()


def get(username: str) -> DashboardUser:
    user = find(username)
    if user is None:
        raise UserError(f"no dashboard user {normalize_username(username)!r}")
    return user


def list_users() -> list[DashboardUser]:
    """Every user, disabled ones included, by name."""
    return list(db.session.scalars(sa.select(DashboardUser).order_by(DashboardUser.username)))


def create(username: str, role: str, password: str, created_by: str, now: datetime | None = None) -> DashboardUser:
    """Create and commit a user; UserError for a bad or taken name, an unknown role or a password not allowed."""
    now = now or utcnow()
    name = check_username(username)
    check_role(role)
    check_password(name, password)
    if find(name) is not None:
        raise UserError(f"a dashboard user {name!r} already exists (names are compared without regard to case)")
    user = DashboardUser(username=name, role=role, password_hash=HASHER.hash(password), created_at=now, created_by=created_by,
                         failed_attempts=0, password_changed_at=now, session_generation=1)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:  # created by someone else since the check above
        db.session.rollback()
        raise UserError(f"a dashboard user {name!r} already exists") from None
    audit.record("dashboard_user.created", "dashboard_user", user.id, actor=created_by, username=name, role=role)
    db.session.commit()
    return user


def set_password(username: str, password: str, by: str, now: datetime | None = None) -> DashboardUser:
    """A new password: every session of the user ends, and a lock-out is lifted (whoever guessed does not know it)."""
    now = now or utcnow()
    user = get(username)
    check_password(user.username, password)
    _end_sessions(user, password_hash=HASHER.hash(password), password_changed_at=now, failed_attempts=0, locked_until=None)
    audit.record("dashboard_user.password_changed", "dashboard_user", user.id, actor=by, username=user.username)
    db.session.commit()
    return user


def disable(username: str, by: str, now: datetime | None = None) -> DashboardUser:
    """The user can no longer sign in, and every session of theirs ends."""
    now = now or utcnow()
    user = get(username)
    if user.disabled_at is not None:
        raise UserError(f"dashboard user {user.username!r} was already disabled on {user.disabled_at.isoformat(timespec='seconds')}")
    _end_sessions(user, disabled_at=now)
    audit.record("dashboard_user.disabled", "dashboard_user", user.id, actor=by, username=user.username)
    db.session.commit()
    return user


def enable(username: str, by: str) -> DashboardUser:
    """A disabled user may sign in again (the sessions ended by disabling stay ended)."""
    user = get(username)
    if user.disabled_at is None:
        raise UserError(f"dashboard user {user.username!r} is not disabled")
    user.disabled_at = None
    audit.record("dashboard_user.enabled", "dashboard_user", user.id, actor=by, username=user.username)
    db.session.commit()
    return user


def unlock(username: str, by: str, now: datetime | None = None) -> bool:
    """Lift a lock-out and forget the failed attempts; False (nothing written) if there were none."""
    now = now or utcnow()
    user = get(username)
    if user.failed_attempts == 0 and user.locked_until is None:
        return False
    was_locked = user.locked_until is not None and user.locked_until > now
    audit.record("dashboard_user.unlocked", "dashboard_user", user.id, actor=by, username=user.username,
                 failed_attempts=user.failed_attempts, was_locked=was_locked)
    user.failed_attempts, user.locked_until = 0, None
    db.session.commit()
    return True


def _end_sessions(user: DashboardUser, **values: object) -> None:
    """Write ``values`` and raise the session generation in one statement: concurrent changes each end the sessions."""
    db.session.execute(sa.update(DashboardUser).where(DashboardUser.id == user.id)
                       .values(session_generation=DashboardUser.session_generation + 1, **values)
                       .execution_options(synchronize_session=False))
    db.session.refresh(user)


# --- signing in --------------------------------------------------------------------------------


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _dummy_hash() -> str:
    global _dummy
    if _dummy is None or _dummy[0] is not HASHER:
        _dummy = (HASHER, HASHER.hash("not a password: verified for unknown names, so they take as long as known ones"))
    return _dummy[1]


def sign_in(username: str, password: str, now: datetime | None = None, *, remote_addr: str | None = None) -> DashboardUser | Refusal:
    """The user, if the password is theirs and the account neither disabled nor locked; else a Refusal. Commits.

    Every outcome is audited. A failure counts towards the lock-out; an attempt while locked is refused without
    counting, so that an attacker cannot drive a lock towards its maximum, nor learn from it whether a guess was right.
    """
    now = now or utcnow()
    user = find(username)
    fits = len(password) <= MAX_PASSWORD_LENGTH  # no password is longer, and hashing a longer one costs more
    if user is None or not fits:
        _verify(_dummy_hash(), password[:MAX_PASSWORD_LENGTH])
    if user is None:
        # the name as typed, when it could be one: a password typed into the name field is not written down
        typed = normalize_username(username[:64])
        return _refuse(None, Refused.UNKNOWN_USER, remote_addr, username=typed if USERNAME_SHAPE.match(typed) else "(not a username)")
    correct = fits and _verify(user.password_hash, password)
    if user.disabled_at is not None:
        return _refuse(user, Refused.DISABLED, remote_addr)
    if user.locked_until is not None and user.locked_until > now:
        return _refuse(user, Refused.LOCKED, remote_addr, locked_until=user.locked_until.isoformat())
    if not correct:
        return _failed(user, now, remote_addr)
    if HASHER.check_needs_rehash(user.password_hash):  # the parameters were raised since this hash was made
        user.password_hash = HASHER.hash(password)
    user.failed_attempts, user.locked_until, user.last_sign_in_at = 0, None, now
    audit.record("dashboard.signed_in", "dashboard_user", user.id, actor=actor(user.username), username=user.username,
                 role=user.role, remote_addr=remote_addr)
    db.session.commit()
    log.info("dashboard user %s signed in", user.username)
    return user


def _failed(user: DashboardUser, now: datetime, remote_addr: str | None) -> Refusal:
    # counted in the database, atomically: concurrent guesses on several instances each count
    result = db.session.execute(sa.update(DashboardUser).where(DashboardUser.id == user.id)
                                .values(failed_attempts=DashboardUser.failed_attempts + 1)
                                .returning(DashboardUser.failed_attempts).execution_options(synchronize_session=False))
    failures = int(result.scalar_one())
    refusal = _refuse(user, Refused.WRONG_PASSWORD, remote_addr, commit=False, failed_attempts=failures)
    duration = lock_duration(failures)
    if duration is not None:
        until = now + duration
        db.session.execute(sa.update(DashboardUser).where(DashboardUser.id == user.id).values(locked_until=until)
                           .execution_options(synchronize_session=False))
        audit.record("dashboard_user.locked", "dashboard_user", user.id, actor="gapbridge", username=user.username,
                     failed_attempts=failures, locked_until=until.isoformat(), seconds=int(duration.total_seconds()))
        log.warning("dashboard user %s locked for %d s after %d failed sign-ins", user.username, duration.total_seconds(), failures)
    db.session.commit()
    db.session.refresh(user)
    return refusal


def _refuse(user: DashboardUser | None, reason: Refused, remote_addr: str | None, *, commit: bool = True, **details: object) -> Refusal:
    name = user.username if user is not None else details.pop("username")
    audit.record("dashboard.sign_in_refused", "dashboard_user", user.id if user is not None else None, actor=actor(str(name)),
                 username=name, reason=reason.value, remote_addr=remote_addr, **details)
    if commit:
        db.session.commit()
    log.info("dashboard sign-in refused for %s: %s", name, reason.value)
    return Refusal(reason)


def actor(username: str) -> str:
    """A dashboard user as the actor of an audit record: ``dashboard:<name>``."""
    return f"dashboard:{username}"


# --- sessions ------------------------------------------------------------------------------------


def session_user(user_id: int, generation: int) -> DashboardUser | None:
    """The user a session belongs to, while it is still theirs: not disabled, and no new password or sign-out since."""
    user = db.session.get(DashboardUser, user_id)
    if user is None or user.disabled_at is not None or user.session_generation != generation:
        return None
    return user


def sign_out(user_id: int, generation: int, *, remote_addr: str | None = None) -> bool:
    """End every session of the user (a copy of the cookie stops working too). False if the session had ended already."""
    result = db.session.execute(sa.update(DashboardUser)
                                .where(DashboardUser.id == user_id, DashboardUser.session_generation == generation)
                                .values(session_generation=DashboardUser.session_generation + 1)
                                .execution_options(synchronize_session=False))
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        db.session.rollback()
        return False
    user = db.session.get(DashboardUser, user_id)
    name = user.username if user is not None else str(user_id)
    audit.record("dashboard.signed_out", "dashboard_user", user_id, actor=actor(name), username=name, remote_addr=remote_addr)
    db.session.commit()
    log.info("dashboard user %s signed out", name)
    return True
