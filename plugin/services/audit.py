"""The append-only audit log: a hash chain, and its verification.

Each row has a ``seq`` (1, 2, 3, ... without a hole), the ``prev_hash`` of the row before it
(``GENESIS`` for seq 1) and its own ``row_hash``, a SHA-256 over its content and ``prev_hash``
(``chain_hash``). A row changed, removed, inserted or moved breaks the chain where it happened,
and ``verify`` says which. Removing the newest rows (or all of them) leaves a shorter chain that
is intact: only a head kept elsewhere (``Verification.head``, checked with ``expect_head``) shows it.

Appends are serialised so that two writers (the sync and the API, say) never fork the chain:
``_lock_chain`` is taken before the head is read, and held until the caller's transaction ends.
The unique ``seq`` is the last line of defence: a fork fails to commit rather than being stored.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from ..extensions import db, json_dumps
from ..models import AuditEvent, utcnow

GENESIS = "0" * 64
# the version of the hash rule; the migration that backfilled the chain carries its own copy of the rule
_HASH_PREFIX = b"gapbridge-audit-chain-1\n"
# pg_advisory_xact_lock key: "gapbridg" in ASCII, so it is recognisable in pg_locks
_LOCK_KEY = 0x6761706272696467

_TABLE = AuditEvent.__table__
_CONTENT = ("seq", "at", "actor", "action", "subject_type", "subject_id", "details", "prev_hash")
_BULK_COLUMNS = ["at", "actor", "action", "subject_type", "subject_id", "details", "seq", "prev_hash", "row_hash"]


# --- the hash rule ------------------------------------------------------------------------
#
# Verification recomputes the hash from what the database returns, so the encoding must not
# change across the round trip: JSONB reorders keys, keeps the last of duplicate keys and stores
# numbers as decimals (1e16 comes back as the integer 10000000000000000); SQLite returns the
# text that was written. Details are therefore stored as they read back from JSON (``_as_stored``),
# keys are sorted, integral numbers are written as integers, and times as UTC to the microsecond.


def chain_hash(seq: int | None, at: datetime, actor: str | None, action: str | None, subject_type: str | None,
               subject_id: str | None, details: Any, prev_hash: str | None) -> str:
    """The row hash: SHA-256 over every content column and ``prev_hash``, canonically encoded."""
    body = json.dumps([seq, _utc_text(at), actor, action, subject_type, subject_id, _canonical(details), prev_hash],
                      ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(_HASH_PREFIX + body.encode("utf-8")).hexdigest()


def _utc_text(at: datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds") + "Z"  # a naive time is UTC, as UTCDateTime stores it


# leaves taken as they are, tested inline rather than by a call per leaf: verify walks every row's details
_AS_IS = frozenset({str, int, bool, type(None)})


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): v if type(v) in _AS_IS else _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _AS_IS else _canonical(v) for v in value]
    if isinstance(value, float):
        return _number(value)
    return value


def _number(value: float) -> int | float | None:
    if not math.isfinite(value):
        return None  # what the JSON encoder writes for NaN and infinities
    if value.is_integer():
        # the shortest decimal that reads back as this float is what a decimal column stores
        return int(Decimal(repr(value)))
    return value


def _as_stored(details: Any) -> tuple[str, Any]:
    """Details as JSON text and as they will read back from the database (string keys, last of duplicates)."""
    text = json_dumps(details)
    return text, orjson.loads(text)


# --- appending ----------------------------------------------------------------------------


def _lock_chain() -> None:
    """Hold the right to append until the current transaction ends (the caller reads the head after).

    PostgreSQL: a transaction-scoped advisory lock, in a statement of its own, so the head is
    read by a later statement (whose snapshot, under READ COMMITTED, sees the last holder's
    commit). SQLite: a write that changes nothing takes the database's write lock now; a read
    before it would run outside a write transaction and could see a head another writer is
    about to move.
    """
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("UPDATE audit_log SET seq = seq WHERE 0 = 1")


def _head_for_append() -> tuple[int, str]:
    _lock_chain()
    return head()


def record(action: str, subject_type: str, subject_id: Any = None, *, actor: str = "gapbridge", **details: Any) -> None:
    """Append an audit event in the current transaction (committed with the change it records)."""
    seq, prev = _head_for_append()
    _, stored = _as_stored(details)
    at, sid = utcnow(), None if subject_id is None else str(subject_id)
    db.session.execute(_TABLE.insert().values(
        seq=seq + 1, at=at, actor=actor, action=action, subject_type=subject_type, subject_id=sid, details=stored, prev_hash=prev,
        row_hash=chain_hash(seq + 1, at, actor, action, subject_type, sid, stored, prev)))


def record_many(rows: Sequence[Mapping[str, Any]]) -> None:
    """Append many events (dicts of action, subject_type, subject_id, details; actor optional) in one statement."""
    if not rows:
        return
    from ..db.bulk import JsonText, bulk_write, copy_text, copy_text_value

    seq, prev = _head_for_append()
    now = utcnow()
    out = []
    for r in rows:
        seq += 1
        text, stored = _as_stored(r.get("details") or {})
        actor = r.get("actor", "gapbridge")
        sid = None if r.get("subject_id") is None else str(r["subject_id"])
        h = chain_hash(seq, now, actor, r["action"], r["subject_type"], sid, stored, prev)
        out.append({"at": now, "actor": actor, "action": r["action"], "subject_type": r["subject_type"], "subject_id": sid,
                    "details": JsonText(text), "seq": seq, "prev_hash": prev, "row_hash": h})
        prev = h
    if db.engine.dialect.name == "postgresql":
        # COPY's text format, each line formatted here (the time once): a sync appends an event for every incident whose
        # gaps changed, and psycopg adapting each value was most of that
        at = copy_text_value(now)
        copy_text(_TABLE, _BULK_COLUMNS, [
            "\t".join((at, *(copy_text_value(e[c]) for c in _BULK_COLUMNS[1:]))) + "\n" for e in out])
        return
    bulk_write(_TABLE, out, _BULK_COLUMNS)


def head() -> tuple[int, str]:
    """The newest row's (seq, row_hash), (0, GENESIS) for an empty log: what an operator keeps elsewhere."""
    row = db.session.execute(
        sa.select(_TABLE.c.seq, _TABLE.c.row_hash).where(_TABLE.c.seq.is_not(None)).order_by(_TABLE.c.seq.desc()).limit(1)
    ).first()
    return (row.seq, row.row_hash) if row is not None else (0, GENESIS)


# --- verifying ----------------------------------------------------------------------------

CHANGED = "changed"  # the row's content does not match its hash
REMOVED = "removed"  # rows are missing (a hole in seq, or the log no longer reaches the expected head)
INSERTED = "inserted"  # a row that is not part of the chain
REORDERED = "reordered"  # the row was written at another seq
UNCHAINED = "unchained"  # the row is intact but does not follow the row before it (that row or this one rewritten)


@dataclass(frozen=True)
class Problem:
    kind: str
    id: int | None
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"row id {self.id}, seq {self.seq}" if self.id is not None else f"seq {self.seq}"
        return f"{self.kind}: {where}: {self.message}"


@dataclass
class Verification:
    rows: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[Problem] = field(default_factory=list)  # the first ``limit``
    problem_count: int = 0

    @property
    def intact(self) -> bool:
        return self.problem_count == 0

    @property
    def head(self) -> str:
        return f"{self.head_seq}:{self.head_hash}"


class ChainRow(NamedTuple):
    """A row as verification reads it (a database row with these names will do)."""

    id: int
    seq: int | None
    at: datetime
    actor: str | None
    action: str | None
    subject_type: str | None
    subject_id: str | None
    details: Any
    prev_hash: str | None
    row_hash: str | None


def _computed(row: Any, seq: int | None = None) -> str:
    return chain_hash(row.seq if seq is None else seq, row.at, row.actor, row.action, row.subject_type, row.subject_id,
                      row.details, row.prev_hash)


def verify(expect_head: tuple[int, str] | None = None, *, limit: int = 50, batch: int = 2000) -> Verification:
    """Check the whole chain, streaming rows in seq order (memory does not grow with the log).

    ``expect_head`` (seq, hash), kept from an earlier run, also catches the newest rows removed.
    Keeps the first ``limit`` problems and counts all. Reads only; the caller ends the read transaction.
    """
    t = _TABLE.c
    connection = db.session.connection()
    stream = {"yield_per": batch}  # a server-side cursor on PostgreSQL; per statement, as options set on a connection stay on it
    checker = ChainChecker(expect_head, limit)
    checker.feed(connection.execute(
        sa.select(t.id, *(t[c] for c in _CONTENT), t.row_hash).where(t.seq.is_not(None)).order_by(t.seq, t.id), execution_options=stream))
    for (row_id,) in connection.execute(sa.select(t.id).where(t.seq.is_(None)).order_by(t.id), execution_options=stream):
        checker.rows += 1
        checker.add(Problem(INSERTED, row_id, None, "the row has no seq: it is not part of the chain"))
    return checker.finish(_rows_by_hash)


def _rows_by_hash(hashes: set[str]) -> dict[str, tuple[int, int]]:
    """The rows (id, seq) that carry these hashes: a scan of the table, run only when rows look moved."""
    t = _TABLE.c
    found: dict[str, tuple[int, int]] = {}
    ordered = sorted(hashes)
    for start in range(0, len(ordered), 500):
        for r in db.session.execute(sa.select(t.id, t.seq, t.row_hash).where(
                t.row_hash.in_(ordered[start:start + 500]), t.seq.is_not(None)).order_by(t.id)):
            found.setdefault(r.row_hash, (r.id, r.seq))
    return found


class ChainChecker:
    """Checks rows fed in (seq, id) order, a seq at a time with the next one in view; keeps O(1) rows."""

    def __init__(self, expect_head: tuple[int, str] | None = None, limit: int = 50) -> None:
        self.expect_head = expect_head
        self.limit = limit
        self.rows = 0
        self.problems: list[Problem] = []
        self.problem_count = 0
        self.last_seq = 0  # the highest seq of the chain so far
        self.link: Any = None  # the row the next one must follow (None: the genesis)
        self.link_changed = False  # its content did not match: the next row's failing to follow it is a consequence
        self.maybe_moved: list[tuple[int, Any]] = []  # (index in problems, row): changed and not following, explained at the end

    def add(self, problem: Problem) -> bool:
        """Count the problem; True if it is among the first ``limit`` kept."""
        self.problem_count += 1
        if len(self.problems) < self.limit:
            self.problems.append(problem)
            return True
        return False

    def feed(self, rows: Iterable[Any]) -> None:
        groups = _by_seq(rows)
        current = next(groups, None)
        while current is not None:
            following = next(groups, None)
            self.rows += len(current)
            self._check(current, following)
            current = following

    def _check(self, group: list[Any], following: list[Any] | None) -> None:
        seq: int = group[0].seq
        if seq < 1:
            for r in group:
                self.add(Problem(INSERTED, r.id, seq, "its seq is below 1, where the chain starts"))
            return
        target = self.link.row_hash if self.link is not None else GENESIS
        ahead = {r.prev_hash for r in following} if following is not None else None
        row = group[0]
        if len(group) > 1:
            # of rows sharing a seq, the chain goes through the one the next seq follows, else the one following the last
            row = next((r for r in group if ahead is not None and r.row_hash in ahead), None) or next(
                (r for r in group if r.prev_hash == target and _computed(r) == r.row_hash), group[0])
            ids = ", ".join(str(r.id) for r in group)
            for other in group:
                if other is not row:
                    self.add(Problem(INSERTED, other.id, seq, f"seq {seq} is on {len(group)} rows (ids {ids}); this one is not in the chain"))
        intact = _computed(row) == row.row_hash
        follows = row.prev_hash == target
        hole = seq > self.last_seq + 1
        if hole:
            first, last = self.last_seq + 1, seq - 1
            span = f"seq {first} is" if first == last else f"seq {first} to {last} ({last - first + 1} rows) are"
            self.add(Problem(REMOVED, row.id, seq, f"{span} missing before this row"))
        if self.expect_head is not None and seq == self.expect_head[0] and row.row_hash != self.expect_head[1]:
            self.add(Problem(CHANGED, row.id, seq, f"the expected head is {self.expect_head[0]}:{self.expect_head[1]} but this row's "
                                                   f"hash is {row.row_hash}: the log was rewritten up to here"))
        if follows and not hole and ahead is not None and target in ahead and row.row_hash not in ahead:
            # this row and the next seq both follow the row before: this one was slipped in between (the chain skips it)
            also = "" if intact else "; its content does not match its hash either"
            self.add(Problem(INSERTED, row.id, seq, f"the next row follows seq {seq - 1} directly: this row was inserted{also}"))
            self.last_seq = seq
            return
        if not intact:
            if follows or hole:
                self.add(Problem(CHANGED, row.id, seq, "its content does not match its hash"))
            elif self.add(Problem(CHANGED, row.id, seq, f"its content does not match its hash, and it does not follow seq {seq - 1}")):
                self.maybe_moved.append((len(self.problems) - 1, row))
        elif not follows and not hole and not self.link_changed:
            self.add(Problem(UNCHAINED, row.id, seq, f"its prev_hash is not the hash of seq {seq - 1}: that row was rewritten with "
                                                     f"a new hash, or this one was altered"))
        self.link, self.last_seq, self.link_changed = row, seq, not intact

    def finish(self, rows_by_hash: Callable[[set[str]], dict[str, tuple[int, int]]] | None = None) -> Verification:
        """The result; ``rows_by_hash`` (which rows carry these hashes) explains rows that were moved."""
        if self.expect_head is not None and self.expect_head[0] > self.last_seq:
            s, h = self.expect_head
            gone = f"seq {s} was" if s == self.last_seq + 1 else f"seq {self.last_seq + 1} to {s} were"
            self.add(Problem(REMOVED, None, s, f"the log ends at seq {self.last_seq} but reached {s}:{h} before: {gone} removed"))
        if self.maybe_moved and rows_by_hash is not None:
            self._explain_moves(rows_by_hash)
        if self.link is None:
            return Verification(self.rows, 0, GENESIS, self.problems, self.problem_count)
        return Verification(self.rows, self.link.seq, self.link.row_hash or "", self.problems, self.problem_count)

    def _explain_moves(self, rows_by_hash: Callable[[set[str]], dict[str, tuple[int, int]]]) -> None:
        """A changed row that does not follow the one before may have been written at another seq: one after the row it names."""
        moved = {r.id: r for _, r in self.maybe_moved}
        found = rows_by_hash({r.prev_hash for r in moved.values() if r.prev_hash and r.prev_hash != GENESIS})
        written: dict[int, int | None] = {}

        def written_seq(row: Any) -> int | None:
            if row.id not in written:
                written[row.id] = None  # a cycle of moved rows resolves to nothing
                before: int | None = None
                if row.prev_hash == GENESIS:
                    before = 0
                elif row.prev_hash in found:
                    pred_id, pred_seq = found[row.prev_hash]
                    before = written_seq(moved[pred_id]) if pred_id in moved else pred_seq  # the row it follows may be moved too
                if before is not None and _computed(row, before + 1) == row.row_hash:
                    written[row.id] = before + 1
            return written[row.id]

        for index, row in self.maybe_moved:
            seq = written_seq(row)
            if seq is not None and seq != row.seq:
                self.problems[index] = replace(self.problems[index], kind=REORDERED, message=f"it was written as seq {seq}: rows were reordered")


def _by_seq(rows: Iterable[Any]) -> Iterator[list[Any]]:
    group: list[Any] = []
    for r in rows:
        if group and r.seq != group[0].seq:
            yield group
            group = []
        group.append(r)
    if group:
        yield group
