"""API tokens: created (shown once), stored as a hash, listed, revoked, checked; their hourly use.

A token is ``gbt_`` and 43 base64url characters (256 random bits). The fixed prefix lets
secret scanners (GitHub push protection, gitleaks, ...) recognise a leaked token. Only
its SHA-256 is stored, with its first ``PREFIX_CHARS`` characters so that listings can
tell tokens apart; the plaintext exists only in the answer to ``create``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from ..errors import GapBridgeError
from ..extensions import db
from ..models import TOKEN_ROLES, ApiToken, ApiTokenUse, utcnow
from . import audit

log = logging.getLogger("gapbridge.tokens")

TOKEN_PREFIX = "gbt_"
TOKEN_BYTES = 32  # 256 bits
PREFIX_CHARS = 10  # "gbt_" and 6 random characters: enough to tell tokens apart, 220 secret bits remain
DEFAULT_MAX_DAYS = 365
TOKEN_SHAPE = re.compile(rf"^{TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}$")
# Starts with a letter, so that ``revoke`` can read an all-digit argument as an id; no spaces or
# control characters, because the name appears in audit actors ("token:<name>") and log lines.
NAME_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")


class TokenError(GapBridgeError):
    """A request about tokens that cannot be met (the message is for the user)."""


class Rejected(enum.StrEnum):
    """Why a presented token does not authenticate."""

    MALFORMED = "malformed"  # not shaped like a GapBridge token at all
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Rejection:
    reason: Rejected
    token: ApiToken | None = None  # when it is known, but expired or revoked: its use is still counted



def token_hash(plaintext: str) -> str:
    # A fast hash is right here: a slow one (bcrypt, scrypt, Argon2) protects low-entropy passwords
    # against guessing, but nobody can enumerate 2**256 candidates, and SHA-256 keeps each request cheap.
    return hashlib.sha256(plaintext.encode()).hexdigest()


def status(token: ApiToken, now: datetime | None = None) -> str:
    """``active``, ``expired`` or ``revoked`` (revoked wins: it was a decision, expiry only time)."""
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.expires_at <= (now or utcnow()) else "active"


def create(name: str, role: str, expires_at: datetime, created_by: str, now: datetime | None = None, *,
           max_days: int = DEFAULT_MAX_DAYS) -> tuple[ApiToken, str]:
    """Create and commit a token; returns it and its plaintext, which is not kept anywhere.

    ``max_days`` is ``api.token_max_days`` of the configuration. Raises TokenError for a
    name in use or badly formed, an unknown role, or an expiry not within (now, now + max_days].
    """
    now = now or utcnow()
    if not NAME_SHAPE.match(name):
        raise TokenError(f"invalid token name {name!r}: use up to 64 letters, digits, '.', '_' or '-', starting with a letter")
    if role not in TOKEN_ROLES:
        raise TokenError(f"unknown role {role!r}; roles: {', '.join(TOKEN_ROLES)}")
    if expires_at.tzinfo is None:
        raise TokenError("the expiry needs a time zone (Z for UTC, or an offset such as +02:00)")
    if expires_at <= now:
        raise TokenError(f"the expiry {expires_at.isoformat()} is not in the future")
    latest = now + timedelta(days=max_days)
    if expires_at > latest:
        raise TokenError(f"the expiry {expires_at.isoformat()} is more than {max_days} days ahead "
                         f"(api.token_max_days); the latest allowed now is {latest.isoformat(timespec='minutes')}")
    if db.session.execute(sa.select(ApiToken.id).where(ApiToken.name == name)).first() is not None:
        raise TokenError(f"a token named {name!r} already exists (names are never reused, even once revoked)")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken(name=name, role=role, prefix=plaintext[:PREFIX_CHARS], token_hash=token_hash(plaintext),
                     created_at=now, created_by=created_by, expires_at=expires_at)
    db.session.add(token)
    try:
        db.session.flush()
    except IntegrityError:  # created by someone else since the check above
        db.session.rollback()
        raise TokenError(f"a token named {name!r} already exists") from None
    audit.record("token.created", "api_token", token.id, actor=created_by, name=name, role=role, prefix=token.prefix,
                 expires_at=expires_at.isoformat())
    db.session.commit()
    return token, plaintext


def list_tokens() -> list[ApiToken]:
    """Every token, revoked and expired ones included, oldest first."""
    return list(db.session.scalars(sa.select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)))


def find(name_or_id: str) -> ApiToken | None:
    """A token by name, or by id when the argument is all digits (names start with a letter)."""
    if name_or_id.isdigit():
        return db.session.get(ApiToken, int(name_or_id))
    return db.session.scalars(sa.select(ApiToken).where(ApiToken.name == name_or_id)).first()


def revoke(name_or_id: str, by: str, now: datetime | None = None) -> ApiToken:
    """Revoke and commit; TokenError if there is no such token or it was revoked already."""
    now = now or utcnow()
    token = find(name_or_id)
    if token is None:
        raise TokenError(f"no token {name_or_id!r}")
    if token.revoked_at is not None:
        raise TokenError(f"token {token.name!r} was already revoked on {token.revoked_at.isoformat(timespec='seconds')} "
                         f"by {token.revoked_by}")
    # conditional, so that of two concurrent revocations exactly one succeeds and is audited
    result = db.session.execute(sa.update(ApiToken).where(ApiToken.id == token.id, ApiToken.revoked_at.is_(None))
                                .values(revoked_at=now, revoked_by=by).execution_options(synchronize_session=False))
    if _rowcount(result) != 1:
        db.session.rollback()
        raise TokenError(f"token {token.name!r} was already revoked")
    audit.record("token.revoked", "api_token", token.id, actor=by, name=token.name, role=token.role, prefix=token.prefix)
    db.session.commit()
    return token


def authenticate(plaintext: str, now: datetime | None = None) -> ApiToken | Rejection:
    """The token a presented plaintext belongs to, if it is neither expired nor revoked; else why not.

    The lookup is by hash, on the unique index, and that index comparison is not constant
    time. It need not be: what a timing difference could reveal is how many leading
    characters of the attacker's own hash match a stored hash, and knowing part of a
    SHA-256 brings no one closer to an input that produces it. Comparing the plaintext
    itself in SQL would leak what matters. The compare_digest after it makes the match
    exact whatever the column's collation.
    """
    if not TOKEN_SHAPE.match(plaintext):
        return Rejection(Rejected.MALFORMED)
    digest = token_hash(plaintext)
    token = db.session.scalars(sa.select(ApiToken).where(ApiToken.token_hash == digest)).first()
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        return Rejection(Rejected.UNKNOWN)
    if token.revoked_at is not None:
        return Rejection(Rejected.REVOKED, token)
    if token.expires_at <= (now or utcnow()):
        return Rejection(Rejected.EXPIRED, token)
    return token


# --- hourly use ----------------------------------------------------------------------------


@dataclass
class UseCount:
    """Requests of one token in one UTC hour, counted in memory by the web layer."""

    token_id: int
    token_name: str
    hour: datetime  # the start of the hour, UTC
    requests: int = 0
    denied: int = 0  # refused: wrong role (403), over the rate limit (429), or expired or revoked (401)
    last_used_at: datetime | None = None


def record_use(counts: Iterable[UseCount]) -> int:
    """Add counts to ``api_token_use`` and commit; the first write of a token-hour is audited as ``token.used``.

    Returns how many token-hours were written. Counts of tokens no longer in the database are dropped.
    An INSERT .. ON CONFLICT DO NOTHING tells, through its row count, whether this process made the
    row: so exactly one ``token.used`` event is written per token and hour, however many
    processes count requests of that token in that hour.
    """
    counts = [c for c in counts if c.requests or c.denied]
    if not counts:
        return 0
    known = set(db.session.scalars(sa.select(ApiToken.id).where(ApiToken.id.in_({c.token_id for c in counts}))))
    table = ApiTokenUse.__table__
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    written = 0
    last_used: dict[int, datetime] = {}
    for c in counts:
        if c.token_id not in known:
            continue
        written += 1
        made = db.session.execute(insert(table).values(token_id=c.token_id, hour=c.hour, requests=c.requests, denied=c.denied)
                                  .on_conflict_do_nothing(index_elements=["token_id", "hour"])
                                  # an INSERT's row count is kept only when asked for (psycopg reports -1 otherwise)
                                  .execution_options(preserve_rowcount=True))
        if _rowcount(made) == 1:
            audit.record("token.used", "api_token", c.token_id, actor=f"token:{c.token_name}", name=c.token_name,
                         hour=c.hour.isoformat())
        else:
            db.session.execute(table.update().where(table.c.token_id == c.token_id, table.c.hour == c.hour)
                               .values(requests=table.c.requests + c.requests, denied=table.c.denied + c.denied))
        if c.last_used_at is not None and (c.token_id not in last_used or c.last_used_at > last_used[c.token_id]):
            last_used[c.token_id] = c.last_used_at
    tokens = ApiToken.__table__
    for token_id, at in last_used.items():
        db.session.execute(tokens.update().where(tokens.c.id == token_id, sa.or_(tokens.c.last_used_at.is_(None), tokens.c.last_used_at < at))
                           .values(last_used_at=at))
    db.session.commit()
    return written


def _rowcount(result: object) -> int:
    # an INSERT's result is a CursorResult, which has rowcount; Session.execute is typed as plain Result
    return result.rowcount if isinstance(result, CursorResult) else -1
