"""The audit log's hash chain: appends chain, every kind of tampering is found and named, PostgreSQL refuses changes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask_migrate import downgrade, upgrade

from plugin.cli import main
from plugin.extensions import db
from plugin.models import AuditEvent
from plugin.services import audit
from plugin.services.audit import GENESIS, ChainChecker, ChainRow, chain_hash

T = AuditEvent.__table__
AWKWARD = {  # what JSONB reorders, renumbers or merges
    "zeta": {"b": [1, 2.5, None, {"y": "é", "x": 1e16}], "a": "ünïcødé ✓ 漢字"},
    "alpha": [0.1, 1e-7, 1.5e300, -0.0, 2.0, 123456789012345678.0, True, False, None, [], {}],
    "n": None, "big": 9007199254740993, "empty": "", "text": "line 1\n\tindented \\N back\\slash\r", "keys": {1: "int key", "b": 1, "a": 2}, "when": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
}


def is_pg() -> bool:
    return db.engine.dialect.name == "postgresql"


def chain() -> list[Any]:
    return db.session.execute(sa.select(T).order_by(T.c.seq, T.c.id)).all()


def found(result: audit.Verification) -> list[tuple[str, int | None, int | None]]:
    return [(p.kind, p.id, p.seq) for p in result.problems]


def append(n: int, start: int = 1) -> list[Any]:
    for i in range(start, start + n):
        audit.record("test.event", "incident", i, actor=f"user{i}", number=f"INC{i}", values=[i, i / 3])
    db.session.commit()
    return chain()


@contextlib.contextmanager
def tampering() -> Iterator[None]:
    """Write to audit_log as an attacker with the owner's rights would: on PostgreSQL, with the trigger off."""
    if is_pg():
        db.session.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        db.session.commit()
    try:
        yield
        db.session.commit()
    finally:
        db.session.rollback()
        if is_pg():
            db.session.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
            db.session.commit()


def set_row(row_id: int, **values: Any) -> None:
    db.session.execute(T.update().where(T.c.id == row_id).values(**values))


def rechain(from_seq: int, prev: str) -> None:
    """What an attacker who knows the hash rule does to hide a change: recompute the chain from from_seq on."""
    for r in db.session.execute(sa.select(T).where(T.c.seq >= from_seq).order_by(T.c.seq)).all():
        h = chain_hash(r.seq, r.at, r.actor, r.action, r.subject_type, r.subject_id, r.details, prev)
        set_row(r.id, prev_hash=prev, row_hash=h)
        prev = h


def forge(seq: int | None, prev: str, plausible: bool = True) -> int:
    at = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    content = dict(at=at, actor="mallory", action="risk.accepted", subject_type="incident", subject_id="7", details={"why": "forged"})
    h = chain_hash(seq, **content, prev_hash=prev) if plausible else "f" * 64
    return int(db.session.execute(T.insert().values(seq=seq, prev_hash=prev, row_hash=h, **content).returning(T.c.id)).scalar_one())


# --- the hash rule ----------------------------------------------------------------------------


def test_the_hash_covers_every_content_column_and_the_previous_hash() -> None:
    at = datetime(2026, 11, 1, 12, 0, 0, 1, tzinfo=timezone.utc)
    base: dict[str, Any] = dict(seq=3, at=at, actor="a", action="x", subject_type="incident", subject_id="1",
                                details={"k": [1, 2]}, prev_hash="1" * 64)
    other: dict[str, Any] = dict(seq=4, at=at + timedelta(microseconds=1), actor="b", action="y", subject_type="ruleset",
                                 subject_id=None, details={"k": [2, 1]}, prev_hash="2" * 64)
    h = chain_hash(**base)
    for name, value in other.items():
        assert chain_hash(**{**base, name: value}) != h, name
    # the same instant in another zone is the same content, and so is 2.0 read back from a decimal as 2
    assert chain_hash(**{**base, "at": at.astimezone(timezone(timedelta(hours=2)))}) == h
    assert chain_hash(**{**base, "details": {"k": [1, 2.0]}}) == h


# --- appending --------------------------------------------------------------------------------


def test_appends_chain_from_the_genesis_and_verify_passes(app: Flask) -> None:
    with app.app_context():
        assert found(audit.verify()) == [] and audit.verify().head == f"0:{GENESIS}"
        rows = append(5)
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
        assert [r.prev_hash for r in rows] == [GENESIS, *(r.row_hash for r in rows[:-1])]
        result = audit.verify()
        assert result.intact and result.rows == 5 and result.head == f"5:{rows[-1].row_hash}"
        assert audit.head() == (5, rows[-1].row_hash)


def test_details_hash_the_same_after_the_database_round_trip(app: Flask) -> None:
    with app.app_context():
        audit.record("odd.details", "incident", 42, **AWKWARD)
        audit.record_many([{"action": "odd.details", "subject_type": "incident", "subject_id": 43, "details": AWKWARD},
                           {"action": "odd.details", "subject_type": "incident", "subject_id": None, "details": {1: "a", "1": "b"}},
                           {"action": "odd.details", "subject_type": "incident", "subject_id": "INC\t1\\N", "details": {}}])
        db.session.commit()
        db.session.remove()
        result = audit.verify()
        assert result.intact, [str(p) for p in result.problems]
        stored = chain()
        assert stored[0].details["zeta"]["b"][3]["y"] == "é" and stored[1].subject_id == "43" and stored[2].details == {"1": "b"}
        assert stored[1].details["text"] == AWKWARD["text"] and stored[3].subject_id == "INC\t1\\N" and stored[2].subject_id is None
        if is_pg():  # JSONB stored the floats as decimals and handed 1e16 back as an integer
            assert stored[0].details["zeta"]["b"][3]["x"] == 10000000000000000


def test_record_and_record_many_interleaved_keep_one_chain(app: Flask) -> None:
    with app.app_context():
        audit.record("a", "x", 1)
        audit.record_many([{"action": "b", "subject_type": "x", "subject_id": i, "details": {"i": i}} for i in range(3)])
        audit.record("c", "x", 2)
        db.session.commit()
        audit.record_many([{"action": "d", "subject_type": "x", "subject_id": 9, "details": {}}])
        audit.record("e", "x", 3)
        db.session.commit()
        rows = chain()
        assert [(r.seq, r.action) for r in rows] == [(1, "a"), (2, "b"), (3, "b"), (4, "b"), (5, "c"), (6, "d"), (7, "e")]
        assert audit.verify().intact


def test_an_event_rolled_back_leaves_no_hole(app: Flask) -> None:
    with app.app_context():
        append(2)
        audit.record("lost", "x", 1)
        db.session.rollback()
        audit.record("kept", "x", 2)
        db.session.commit()
        assert [(r.seq, r.action) for r in chain()][-1] == (3, "kept") and audit.verify().intact


def test_two_writers_at_once_make_one_chain(app_factory: Any) -> None:
    """The sync and the API, say: two apps (engines, connections) appending at the same moment."""
    apps = [app_factory(), app_factory()]
    rounds, barrier, errors = 25, threading.Barrier(2), []

    def write(app: Flask, name: str) -> None:
        try:
            with app.app_context():
                barrier.wait()
                for i in range(rounds):
                    if i % 3:
                        audit.record("concurrent", "writer", name, i=i)
                    else:
                        audit.record_many([{"action": "concurrent", "subject_type": "writer", "subject_id": name, "details": {"i": i, "j": j}}
                                           for j in range(2)])
                    db.session.commit()
                db.session.remove()
        except Exception as exc:  # a forked head fails on the unique seq
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(a, n)) for a, n in zip(apps, "ab", strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with apps[0].app_context():
        result = audit.verify()
        per_writer = rounds + len(range(0, rounds, 3))
        assert result.intact and result.rows == 2 * per_writer and result.head_seq == 2 * per_writer


# --- tampering --------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["details", "actor", "at", "action", "subject_id"])
def test_a_changed_row_is_named(app: Flask, column: str) -> None:
    with app.app_context():
        rows = append(5)
        value = {"details": {**rows[2].details, "number": "INC999"}, "actor": "someone else", "action": "other",
                 "subject_id": "999", "at": rows[2].at + timedelta(microseconds=1)}[column]
        with tampering():
            set_row(rows[2].id, **{column: value})
        assert found(audit.verify()) == [("changed", rows[2].id, 3)]


def test_a_row_rewritten_with_a_fresh_hash_breaks_the_link_to_the_next(app: Flask) -> None:
    with app.app_context():
        rows = append(5)
        r = rows[2]
        with tampering():
            set_row(r.id, actor="mallory", row_hash=chain_hash(r.seq, r.at, "mallory", r.action, r.subject_type, r.subject_id,
                                                              r.details, r.prev_hash))
        assert found(audit.verify()) == [("unchained", rows[3].id, 4)]


@pytest.mark.parametrize("gone", [[3], [1], [2, 3, 4]])
def test_removed_rows_are_named_by_the_hole(app: Flask, gone: list[int]) -> None:
    with app.app_context():
        rows = append(5)
        with tampering():
            db.session.execute(T.delete().where(T.c.seq.in_(gone)))
        after = rows[gone[-1]]
        result = audit.verify()
        assert found(result) == [("removed", after.id, after.seq)]
        assert (f"seq {gone[0]} is missing" if len(gone) == 1 else f"seq {gone[0]} to {gone[-1]} (3 rows) are missing") in str(result.problems[0])


def test_a_forged_row_without_seq_is_inserted(app: Flask) -> None:
    with app.app_context():
        rows = append(3)
        with tampering():
            forged = forge(None, rows[-1].row_hash)
        assert found(audit.verify()) == [("inserted", forged, None)]


@pytest.mark.parametrize("plausible", [True, False], ids=["plausible-hash", "bad-hash"])
def test_a_forged_row_slipped_into_the_chain_is_inserted(app: Flask, plausible: bool) -> None:
    """The rows after it moved up one seq and re-hashed from their old links, to make room."""
    with app.app_context():
        rows = append(5)
        with tampering():
            for r in reversed(rows[2:]):
                set_row(r.id, seq=r.seq + 1)
            forged = forge(3, rows[1].row_hash, plausible)
            rechain(4, rows[1].row_hash)
        result = audit.verify()
        assert found(result) == [("inserted", forged, 3)]
        assert ("does not match its hash" in result.problems[0].message) is not plausible


def test_rows_sharing_a_seq_name_the_one_outside_the_chain() -> None:
    """Only possible without the unique constraint, so checked on rows in memory."""
    at = datetime(2026, 11, 1, tzinfo=timezone.utc)
    rows, prev = [], GENESIS
    for seq in range(1, 5):
        h = chain_hash(seq, at, "a", "x", "t", str(seq), {}, prev)
        rows.append(ChainRow(seq * 10, seq, at, "a", "x", "t", str(seq), {}, prev, h))
        prev = h
    forged = ChainRow(5, 3, at, "m", "x", "t", "3", {}, rows[1].row_hash, chain_hash(3, at, "m", "x", "t", "3", {}, rows[1].row_hash))
    # mid-chain the next row says which is in the chain (the forged one sorts first here); at the head, the earlier row is
    for body, forged_id in (([*rows[:2], forged, *rows[2:]], 5), ([*rows[:3], forged._replace(id=50)], 50)):
        checker = ChainChecker()
        checker.feed(sorted(body, key=lambda r: (r.seq, r.id)))
        result = checker.finish()
        assert found(result) == [("inserted", forged_id, 3)] and result.rows == len(body)
    checker = ChainChecker()
    checker.feed([rows[0]._replace(seq=0), *rows[1:]])
    assert found(checker.finish())[0] == ("inserted", 10, 0)


@pytest.mark.parametrize("a,b", [(2, 5), (2, 3)], ids=["apart", "adjacent"])
def test_swapped_rows_are_named_as_reordered(app: Flask, a: int, b: int) -> None:
    with app.app_context():
        rows = append(6)
        ra, rb = rows[a - 1], rows[b - 1]
        with tampering():
            set_row(ra.id, seq=-1)
            set_row(rb.id, seq=a)
            set_row(ra.id, seq=b)
        result = audit.verify()
        assert found(result) == [("reordered", rb.id, a), ("reordered", ra.id, b)]
        assert f"written as seq {b}" in result.problems[0].message


def test_removed_newest_rows_show_only_against_the_expected_head(app: Flask) -> None:
    with app.app_context():
        rows = append(5)
        kept = audit.verify().head_seq, audit.verify().head_hash
        assert audit.verify(kept).intact
        with tampering():
            db.session.execute(T.delete().where(T.c.seq >= 4))
        assert audit.verify().intact  # a shorter chain is a chain
        result = audit.verify(kept)
        assert found(result) == [("removed", None, 5)] and "ends at seq 3" in result.problems[0].message
        assert audit.verify((3, rows[2].row_hash)).intact


def test_a_log_rewritten_from_a_change_on_shows_against_the_expected_head(app: Flask) -> None:
    with app.app_context():
        rows = append(5)
        with tampering():
            set_row(rows[1].id, details={"number": "INC-rewritten"})
            rechain(2, rows[0].row_hash)
        assert audit.verify().intact
        assert found(audit.verify((5, rows[4].row_hash))) == [("changed", rows[4].id, 5)]


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"])
def test_postgresql_refuses_to_change_or_remove_audit_rows(app: Flask, statement: str) -> None:
    with app.app_context():
        if not is_pg():
            pytest.skip("the append-only trigger is PostgreSQL's; SQLite has no roles to keep from writing")
        append(2)
        with pytest.raises(sa.exc.DBAPIError, match="audit_log is append-only"):
            db.session.execute(sa.text(statement))
        db.session.rollback()
        assert [r.actor for r in chain()] == ["user1", "user2"] and audit.verify().intact


# --- the command ------------------------------------------------------------------------------


def cli(tmp_path: Path, database_url: str, *args: str) -> Any:
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\ninstance_path: {tmp_path / 'cli-instance'}\n")
    return CliRunner().invoke(main, ["--config", str(config), "audit", "verify", *args])


def test_verify_command_prints_the_head_and_exits_0_when_intact(app: Flask, _migrated: str, tmp_path: Path) -> None:
    with app.app_context():
        rows = append(4)
        db.session.remove()
    result = cli(tmp_path, _migrated)
    assert result.exit_code == 0, result.output
    assert result.output == f"audit log intact: 4 rows, head 4:{rows[-1].row_hash}\n"
    assert cli(tmp_path, _migrated, "--expect-head", f"4:{rows[-1].row_hash}").exit_code == 0
    assert cli(tmp_path, _migrated, "--expect-head", f"2:{rows[1].row_hash}").exit_code == 0


def test_verify_command_lists_problems_and_exits_1(app: Flask, _migrated: str, tmp_path: Path) -> None:
    with app.app_context():
        rows = append(60)
        with tampering():
            db.session.execute(T.update().values(actor="mallory"))
        db.session.remove()
    result = cli(tmp_path, _migrated)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"audit log tampered: 60 problems in 60 rows, head 60:{rows[-1].row_hash}"
    assert lines[1] == f"  changed: row id {rows[0].id}, seq 1: its content does not match its hash"
    assert len([line for line in lines if line.startswith("  changed: ")]) == 50
    assert "  ... and 10 more" in lines and "tampered with" in lines[-1]


def test_verify_command_with_the_expected_head_finds_the_tail_removed(app: Flask, _migrated: str, tmp_path: Path) -> None:
    with app.app_context():
        rows = append(3)
        with tampering():
            db.session.execute(T.delete().where(T.c.seq == 3))
        db.session.remove()
    assert cli(tmp_path, _migrated).exit_code == 0
    result = cli(tmp_path, _migrated, "--expect-head", f"3:{rows[-1].row_hash.upper()}")
    assert result.exit_code == 1 and "removed: seq 3: the log ends at seq 2" in result.output


@pytest.mark.parametrize("head", ["3", "x:" + "a" * 64, "3:abc", f"0:{'a' * 64}"])
def test_verify_command_rejects_a_malformed_head_with_2(tmp_path: Path, head: str) -> None:
    result = CliRunner().invoke(main, ["audit", "verify", "--expect-head", head])
    assert result.exit_code == 2 and "--expect-head" in result.output


# --- the migration ----------------------------------------------------------------------------


def test_the_migration_chains_rows_stored_before_it_in_id_order(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        downgrade(revision="0002")
        try:
            conn = db.session.connection()
            if is_pg():
                assert conn.execute(sa.text("SELECT count(*) FROM pg_trigger WHERE tgname = 'audit_log_append_only'")).scalar() == 0
            # as 0002's application wrote them, times not in id order, details JSONB would reorder
            stamps = (["2026-11-01 14:00:00.123456+02", "2026-10-01 09:30:00+00", "2026-11-02 00:00:00.000001+00"] if is_pg()
                      else ["2026-11-01 12:00:00.123456", "2026-10-01 09:30:00.000000", "2026-11-02 00:00:00.000001"])
            details = ['{"zeta": {"b": [1, 2.5, null, {"y": "é", "x": 1e16}]}, "alpha": [0.1, 1e-7, 1.5e300, -0.0]}',
                       '{"k": 1, "k": 2}', '{}']
            for i, (at, d) in enumerate(zip(stamps, details, strict=True)):
                conn.execute(sa.text("INSERT INTO audit_log (at, actor, action, subject_type, subject_id, details) "
                                     "VALUES (:at, 'gapbridge', :action, 'incident', :sid, :details)"),
                             {"at": at, "action": f"old.{i}", "sid": None if i == 2 else str(i), "details": d})
            db.session.commit()
        finally:
            upgrade()
        rows = db.session.execute(sa.select(T).order_by(T.c.id)).all()
        assert [(r.seq, r.action) for r in rows] == [(1, "old.0"), (2, "old.1"), (3, "old.2")]
        result = audit.verify()
        assert result.intact, [str(p) for p in result.problems]
        audit.record("new", "x", 1)
        db.session.commit()
        assert audit.verify().intact and chain()[-1].prev_hash == rows[-1].row_hash
        if is_pg():
            with pytest.raises(sa.exc.DBAPIError, match="audit_log is append-only"):
                db.session.execute(sa.text("DELETE FROM audit_log"))
            db.session.rollback()
