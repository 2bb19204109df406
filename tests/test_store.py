"""Storing incidents: the COPY of new incidents (PostgreSQL) stores what INSERT ... ON CONFLICT stores, on both databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from plugin.db.bulk import copy_text_value
from plugin.extensions import db
from plugin.models import Finding, Incident, utcnow
from plugin.services import store
from plugin.services.assess import FINDING_COLUMNS, check_constants, insert_findings, refresh_outcome_masks
from plugin.services.store import encode_incidents, upsert_incidents
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .conftest import NOW, create_incident
from .fakes import FakeConnector, FakeTicketing

RULESET = "r" * 16


def tricky(source: str, n: int, **overrides: Any) -> dict[str, Any]:
    """An incident whose values test the encodings: quotes, backslashes, tabs, newlines, non-ASCII, NULLs, nested times."""
    text = 'a "quoted" \\ backslash\ttab\nnewline \\N é ü 中文 \U0001F512'
    inc = create_incident(
        source=source, external_id=f"{n:032x}", number=f"INC{n:07d}", title=f"{text} {n}", description=None if n % 2 else text,
        assignee=None, major_incident=n % 3 == 0, opened_at=NOW - timedelta(days=n, microseconds=n),
        resolved_at=None if n % 2 else NOW, related_refs=[text, "PRB0001"], weakness_refs=[],
        raw={"sys_id": f"{n:032x}", "text": text, "nested": {"list": [1, 2.5, None, True, text]}, "empty": {}},
    )
    inc["timeline"] = [{"at": NOW - timedelta(hours=n), "author": "Ana", "kind": "work_note", "text": text}]
    inc.update(overrides)
    return inc


def stored(source: str) -> list[dict[str, Any]]:
    """The rows of ``source`` as the database returns them, but for the row id, the source and the hash (over the source)."""
    table = Incident.__table__
    columns = [c for c in table.c if c.name not in ("id", "source", "content_hash")]
    rows = db.session.execute(sa.select(*columns).where(table.c.source == source).order_by(table.c.external_id))
    return [dict(r._mapping) for r in rows]


def upsert_page(source: str, incidents: list[dict[str, Any]], now: Any, masks: bool = True) -> store.Upserted:
    encoded = encode_incidents(incidents, now, db.engine.dialect.name)
    return upsert_incidents(source, encoded, now, RULESET, [(7 * n, n, 3 * n) for n in range(len(incidents))] if masks else None)


def outcomes_of(monkeypatch: pytest.MonkeyPatch, name: str) -> list[bool]:
    """What each call of ``store.<name>`` (``_copy_new``, ``_merge_staged``: PostgreSQL only) came to."""
    results: list[bool] = []
    real = getattr(store, name)

    def spy(table: Any, rows: Any) -> bool:
        results.append(real(table, rows))
        return results[-1]
    monkeypatch.setattr(store, name, spy)
    return results


def copies(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each COPY of new incidents came to (SQLite inserts them)."""
    return outcomes_of(monkeypatch, "_copy_new")


def on_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


def insert_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Write every incident by INSERT ... ON CONFLICT (what SQLite does, and PostgreSQL when a COPY fails)."""
    monkeypatch.setattr(store, "_copy_new", lambda table, rows: False)
    monkeypatch.setattr(store, "_merge_staged", lambda table, rows: False)


def merges(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each staged merge of stored incidents came to."""
    return outcomes_of(monkeypatch, "_merge_staged")


def row_facts(source: str) -> list[tuple[Any, ...]]:
    """(id, revision, number, source, external_id) of the stored rows of ``source``, as ``Upserted.stored`` names them."""
    t = Incident.__table__.c
    return [tuple(r) for r in db.session.execute(
        sa.select(t.id, t.revision, t.number, t.source, t.external_id).where(t.source == source))]


def test_new_incidents_are_stored_the_same_by_copy_and_by_insert(app, monkeypatch) -> None:
    now = utcnow()
    with app.app_context():
        with monkeypatch.context() as m:
            done = copies(m)
            upsert_page("copy", [tricky("copy", n) for n in range(12)], now)
        assert done == ([True] if on_postgres() else [])
        with monkeypatch.context() as m:
            insert_only(m)
            upsert_page("insert", [tricky("insert", n) for n in range(12)], now)
        db.session.commit()
        copied, inserted = stored("copy"), stored("insert")
        assert len(copied) == 12 and copied == inserted
        first = copied[0]
        assert first["title"].startswith('a "quoted" \\ backslash\ttab\nnewline \\N é') and first["raw"]["nested"]["list"][4] == first["title"][:-2]
        assert first["raw"]["empty"] == {} and first["weakness_refs"] == [] and first["related_refs"][1] == "PRB0001"
        assert (first["revision"], first["assessed_ruleset"], first["assessed_revision"]) == (1, RULESET, 1)
        assert [(r["control_outcomes"], r["subprocess_outcomes"], r["cell_outcomes"]) for r in copied] == [(7 * n, n, 3 * n) for n in range(12)]


def test_a_page_of_new_changed_and_unchanged_incidents(app) -> None:
    """New ones are copied, the others updated: revision bumped only on a change, first_seen_at and masks kept."""
    t1 = utcnow()
    with app.app_context():
        upsert_page("s", [tricky("s", n) for n in range(6)], t1)
        db.session.execute(sa.update(Incident).where(Incident.external_id == f"{1:032x}").values(control_outcomes=99))
        db.session.commit()
        t2 = t1 + timedelta(minutes=5)
        page = [tricky("s", n, title="changed" if n == 2 else tricky("s", n)["title"]) for n in range(6)] + [tricky("s", 6)]
        up = upsert_page("s", page, t2, masks=False)
        db.session.commit()
        assert up.new == [f"{6:032x}"] and up.changed == 2 and up.stale == [f"{2:032x}", f"{6:032x}"]
        rows = {r["external_id"]: r for r in stored("s")}
        assert len(rows) == 7
        for n in range(6):
            r = rows[f"{n:032x}"]
            assert r["first_seen_at"] == t1 and r["last_synced_at"] == t2
            assert r["revision"] == (2 if n == 2 else 1) and r["assessed_revision"] == r["revision"]
            assert r["last_assessed_on"] == (t2 if n == 2 else t1)
        assert rows[f"{2:032x}"]["title"] == "changed"
        assert rows[f"{1:032x}"]["control_outcomes"] == 99  # not the new page's business: the assessment writes them
        assert rows[f"{3:032x}"]["control_outcomes"] == 21
        assert rows[f"{6:032x}"]["first_seen_at"] == t2 and rows[f"{6:032x}"]["control_outcomes"] is None


def test_an_incident_twice_in_a_page_is_stored_once_with_its_last_content(app, monkeypatch) -> None:
    """The COPY fails on the unique key; undone to its savepoint, the page goes in by INSERT ... ON CONFLICT, in order."""
    now = utcnow()
    with app.app_context():
        with monkeypatch.context() as m:
            done = copies(m)
            upsert_page("dup", [tricky("dup", 1), tricky("dup", 2), tricky("dup", 1, title="second")], now)
        assert done == ([False] if on_postgres() else [])
        with monkeypatch.context() as m:
            insert_only(m)
            upsert_page("ref", [tricky("ref", 1), tricky("ref", 2), tricky("ref", 1, title="second")], now)
        db.session.commit()
        assert [r["title"] for r in stored("dup")] == ["second", tricky("dup", 2)["title"]]
        assert stored("dup") == stored("ref")


def test_a_value_not_of_its_columns_type_is_cast_as_insert_casts_it(app, monkeypatch) -> None:
    """A number where a text is expected: binary COPY cannot send it, INSERT lets the server cast it."""
    now = utcnow()
    with app.app_context():
        with monkeypatch.context() as m:
            done = copies(m)
            upsert_page("num", [tricky("num", 1, number=10023, category=7)], now)
        assert done == ([False] if on_postgres() else [])
        with monkeypatch.context() as m:
            insert_only(m)
            upsert_page("numref", [tricky("numref", 1, number=10023, category=7)], now)
        db.session.commit()
        (row,) = stored("num")
        assert (row["number"], row["category"]) == ("10023", "7")
        assert stored("num") == stored("numref")


def test_the_masks_a_sync_writes_with_new_incidents_are_those_of_their_findings(app) -> None:
    tool = FakeTicketing(30)
    for n, sid in enumerate(tool.tickets):
        tool.tickets[sid]["canonical"] = {"severity": ["critical", "high", "medium", "low"][n % 4],
                                          "state": ["closed", "in_progress", "new"][n % 3], "major_incident": n % 5 == 0}
    with app.app_context():
        ruleset = gapbridge(app).ruleset
        summary = sync_source(FakeConnector(tool), ruleset=ruleset)
        assert summary.assessed == 30
        t = Incident.__table__.c
        written = db.session.execute(sa.select(t.id, t.control_outcomes, t.subprocess_outcomes).order_by(t.id)).all()
        assert len(written) == 30 and all(c is not None for _, c, _ in written) and len({c for _, c, _ in written}) > 1
        findings = db.session.scalar(sa.select(sa.func.count()).select_from(Finding))
        assert findings and findings > 30
        refresh_outcome_masks(ruleset, [i for i, _, _ in written])  # what the database computes from the findings
        assert db.session.execute(sa.select(t.id, t.control_outcomes, t.subprocess_outcomes).order_by(t.id)).all() == written
        db.session.rollback()



def _second_page(source: str) -> list[dict[str, Any]]:
    """Of incidents 0..5 stored before: 2 and 4 changed, the others the same; 6 and 7 new."""
    return [tricky(source, n, title=f"changed {n}" if n in (2, 4) else tricky(source, n)["title"]) for n in range(6)] + [
        tricky(source, n) for n in (6, 7)]


def test_stored_incidents_are_updated_the_same_by_the_staged_merge_and_by_insert(app, monkeypatch) -> None:
    """PostgreSQL: COPY into a temporary table and one INSERT ... SELECT ... ON CONFLICT stores what one INSERT a row stores,
    masks and first_seen_at kept, and names each assessed row (id, revision) without reading it back."""
    t1 = utcnow()
    t2 = t1 + timedelta(minutes=5)
    with app.app_context():
        for source in ("staged", "ref"):
            upsert_page(source, [tricky(source, n) for n in range(6)], t1)
        db.session.commit()
        with monkeypatch.context() as m:
            done = merges(m)
            up = upsert_page("staged", _second_page("staged"), t2, masks=False)
            again = upsert_page("staged", _second_page("staged"), t2 + timedelta(minutes=1), masks=False)  # the temp table reused
        assert done == ([True, True] if on_postgres() else [])
        with monkeypatch.context() as m:
            insert_only(m)
            ref = upsert_page("ref", _second_page("ref"), t2, masks=False)
            upsert_page("ref", _second_page("ref"), t2 + timedelta(minutes=1), masks=False)
        db.session.commit()
        assert (up.changed, up.stale, up.new) == (ref.changed, ref.stale, ref.new) == (
            4, [f"{n:032x}" for n in (2, 4, 6, 7)], [f"{n:032x}" for n in (6, 7)])
        assert (again.changed, again.stale) == (0, [])
        assert stored("staged") == stored("ref")
        rows = {r["external_id"]: r for r in stored("staged")}
        assert rows[f"{2:032x}"]["title"] == "changed 2" and rows[f"{2:032x}"]["revision"] == 2
        assert rows[f"{3:032x}"]["control_outcomes"] == 21 and rows[f"{3:032x}"]["first_seen_at"] == t1
        if on_postgres():
            facts = {f[4]: f for f in row_facts("staged")}
            assert up.stored is not None and [tuple(s) for s in up.stored] == [facts[e] for e in up.stale]
        else:
            assert up.stored is None  # the assessment reads them back


def test_a_page_holding_a_stored_incident_twice_is_written_row_by_row_with_its_last_content(app, monkeypatch) -> None:
    """One INSERT ... SELECT may update a row only once: such a page is not merged from the temporary table."""
    t1 = utcnow()
    with app.app_context():
        for source in ("twice", "ref2"):
            upsert_page(source, [tricky(source, n) for n in range(3)], t1)
        db.session.commit()
        with monkeypatch.context() as m:
            done = merges(m)
            up = upsert_page("twice", [tricky("twice", 1, title="first"), tricky("twice", 2), tricky("twice", 1, title="last")],
                             t1 + timedelta(minutes=5), masks=False)
        assert done == []
        with monkeypatch.context() as m:
            insert_only(m)
            upsert_page("ref2", [tricky("ref2", 1, title="first"), tricky("ref2", 2), tricky("ref2", 1, title="last")],
                        t1 + timedelta(minutes=5), masks=False)
        db.session.commit()
        assert up.stored is None
        rows = stored("twice")
        assert [r["title"] for r in rows][1] == "last" and rows == stored("ref2")
        assert rows[1]["revision"] == 2  # one revision for the page, however often it holds the incident


def test_finding_details_with_backslashes_tabs_and_line_ends_are_stored_as_they_are(app) -> None:
    """PostgreSQL writes findings by COPY in text format, each value escaped by hand: what is read back is what was meant."""
    with app.app_context():
        ruleset = gapbridge(app).ruleset
        upsert_page("f", [tricky("f", 1)], utcnow())
        incident_id = db.session.scalar(sa.select(Incident.id).where(Incident.source == "f"))
        details = ['a \\ backslash', "tab\there", "line\nend", "\\N", "\r", 'quote " é 中']
        check = ruleset.incident_checks[0]
        at = utcnow()
        encode = store.column_encoder(Finding.__table__, "evaluated_at", db.engine.dialect.name)
        insert_findings([(*check_constants(check, ruleset.hash), incident_id, "fail", orjson.dumps(details).decode(),
                          encode(at), encode(at), None, None)])
        row = db.session.execute(sa.select(*(Finding.__table__.c[c] for c in FINDING_COLUMNS))
                                 .where(Finding.incident_id == incident_id)).one()._mapping
        assert row["details"] == details and row["check_id"] == check.id and row["status"] == "fail"
        assert row["evaluated_at"] == at and row["first_failed_at"] == at and row["due_at"] is None
        db.session.rollback()


@pytest.mark.parametrize("value, text", [
    (None, "\\N"), (True, "t"), (False, "f"), ("plain", "plain"), ("\\N", "\\\\N"),
    ("a\tb\nc\rd\\e", "a\\tb\\nc\\rd\\\\e"), (7, "7"),
])
def test_copy_text_values(value: Any, text: str) -> None:
    assert copy_text_value(value) == text


def test_a_batch_collects_the_youngest_generation_less_often_and_restores_the_collector_after() -> None:
    import gc

    from plugin.db.bulk import heap_frozen

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with heap_frozen():
            assert gc.get_threshold() == (20_000, 10, 10) and gc.get_freeze_count() > 0
        assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0
        gc.set_threshold(0)  # collection turned off by the embedding program stays off
        with heap_frozen():
            assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)
