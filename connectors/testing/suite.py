"""The connector contract suite: pytest cases every connector passes, over the ``tool_double`` fixture a test module gives.

Subclass ``ConnectorContract`` in a test module that defines a ``tool_double`` fixture yielding a
``ToolDouble`` (see ``connectors.testing`` for the whole recipe). Each case drives the connector
as GapBridge's core does, through the contract only.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

try:
    import pytest
except ImportError as exc:  # pytest is GapBridge's test extra, not a dependency of the package
    raise ImportError("connectors.testing.suite runs under pytest, which is not installed: "
                      "pip install 'gapbridge[test]' (or pytest itself) to run the connector contract suite") from exc

from ..contract import Connector, Enrichment, Page, WriteResult
from ..errors import (
    AuthenticationError,
    ConnectorError,
    FatalConnectorError,
    InvalidResponseError,
    NormalizationError,
    RetriableConnectorError,
)
from .double import Fault, RecordSpec, ToolDouble

PAGE_SIZE = 5
#: the records' times: a fixed day in the past of every double's clock
BASE = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
_STATES = ("new", "in_progress", "on_hold", "resolved", "closed", "cancelled")
#: the fields a write-back carries; a double whose connector writes fields configures these two
ENRICHMENT_FIELDS = {"open_gaps": 2, "compliance_status": "gaps"}
#: the most requests a connector may spend on one persisting fault before it gives up
MAX_TRIES = 20


def record_specs(count: int, *, hidden: Iterable[int] = (), unnormalizable: Iterable[int] = (), ties: bool = True) -> list[RecordSpec]:
    """``count`` records a minute apart, in pairs with ``ties`` (two records share each time: keyset paging must break the tie by id).

    Without ties the tool's order is the specs' order, so a record's index says which page it falls on.
    """
    hide, bad = set(hidden), set(unnormalizable)
    return [RecordSpec(BASE + timedelta(minutes=i // 2 if ties else i), f"Contract record {i}", _STATES[i % len(_STATES)],
                       hidden=i in hide, unnormalizable=i in bad) for i in range(count)]


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def enrichment(external_id: str, version: int = 1) -> Enrichment:
    """An enrichment as the core builds one: the note ends with its fingerprint's marker."""
    fp = fingerprint(f"{external_id}:{version}")
    note = f"GapBridge contract suite, version {version}: 2 open gaps.\n\n[gapbridge:{fp}]"
    return Enrichment(external_id, fp, note, fields=dict(ENRICHMENT_FIELDS), labels=["gapbridge-gaps"])


# --- the core's side, said again without its database --------------------------------------------------


@dataclass
class SyncRun:
    """What one sync run saw, as the core would have stored it."""

    start: dict[str, Any] | None
    pages: list[Page] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # record_id of every record fetched, in order
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)  # external_id -> canonical incident
    rejected: dict[str, str] = field(default_factory=dict)  # record id -> why normalize refused it
    stored: dict[str, Any] | None = None  # the bookmark stored when the run stopped
    finished: bool = False


class Tool:
    """A double, the specs it holds, and connectors built from it as a restarting process would."""

    def __init__(self, double: ToolDouble, specs: Sequence[RecordSpec], page_size: int = PAGE_SIZE) -> None:
        self.double, self.page_size = double, page_size
        self.ids = double.seed(specs)
        assert len(self.ids) == len(specs) and len(set(self.ids)) == len(specs), \
            f"{double.name}.seed must return one distinct external id per spec, got {self.ids!r}"
        self.specs = dict(zip(self.ids, specs, strict=True))
        self.times: dict[str, datetime] = {i: s.updated_at for i, s in self.specs.items()}  # known replication times
        self.edited: dict[str, str] = {}

    @property
    def visible(self) -> list[str]:
        return [i for i, s in self.specs.items() if not s.hidden]

    @property
    def normalizable(self) -> list[str]:
        return [i for i, s in self.specs.items() if not s.hidden and not s.unnormalizable]

    def edit(self, external_id: str, title: str) -> None:
        self.double.edit(external_id, title)
        self.edited[external_id] = title
        self.times.pop(external_id, None)  # the tool chose its new time

    def connector(self) -> Connector:
        return self.double.connector(self.page_size)

    def sync(self, bookmark: Mapping[str, Any] | None, stop_after: int | None = None, into: SyncRun | None = None) -> SyncRun:
        """Fetch, normalize and "store" pages from ``bookmark`` as the core does; stop (a kill) after ``stop_after`` pages.

        A page's bookmark is stored with it unless it is before the one stored (the overlap
        re-read); a page whose bookmark is before the previous page's fails the case.
        """
        run = into if into is not None else SyncRun(dict(bookmark) if bookmark else None)
        run.stored = run.start
        conn = self.connector()
        try:
            self._fetch(conn, run, stop_after)
        finally:
            conn.close()
        return run

    def _fetch(self, conn: Connector, run: SyncRun, stop_after: int | None) -> None:
        stream = conn.stream
        start_at = stream.bookmark_time(run.start)
        stored_at, last_at, latest = start_at, None, None
        conn.check_configuration()
        for page in conn.fetch_pages(run.start):
            run.pages.append(page)
            n = len(run.pages)
            assert len(page.records) <= self.page_size, f"page {n} holds {len(page.records)} records, more than the page size {self.page_size}"
            if page.records:
                assert page.bookmark is not None, f"page {n} has records but no bookmark to store after them"
            at = stream.bookmark_time(page.bookmark) if page.bookmark is not None else None
            ids = [self._record(conn, run, record, n) for record in page.records]
            if page.bookmark is not None and stream.is_sorted:
                assert at is not None, (f"page {n}'s bookmark {page.bookmark!r} has no {stream.replication_key!r} time: "
                                        "a sorted stream's bookmark carries its replication time")
                assert last_at is None or at >= last_at, f"the bookmark moved back within a run, on page {n}: {at} after {last_at}"
                late = [i for i in ids if i in self.times and self.times[i] > at]
                assert not late, f"page {n}'s bookmark {at} is before its records {late}: storing it would read them again and again"
                last_at = at
                if stored_at is None or at >= stored_at:
                    run.stored, stored_at = dict(page.bookmark), at
            elif page.bookmark is not None:
                latest = dict(page.bookmark)
            if start_at is not None and stream.is_sorted:
                window = start_at - timedelta(seconds=stream.overlap_seconds)
                early = [i for i in ids if i in self.times and self.times[i] < window]
                assert not early, (f"a run from the bookmark at {start_at} (overlap {stream.overlap_seconds} s) read records "
                                   f"last changed before it: {early}; the connector did not resume from the bookmark")
            if stop_after is not None and n >= stop_after:
                return  # killed: the page and its bookmark are stored, the rest is not
        run.finished = True
        if latest is not None:  # an unsorted stream's bookmark is stored when the run ends
            run.stored = latest

    def _record(self, conn: Connector, run: SyncRun, record: Mapping[str, Any], page: int) -> str:
        rid = conn.record_id(record)
        assert rid, f"record_id found no id in a record of page {page}: {sorted(record)}"
        assert rid in self.specs, f"page {page} has record {rid!r}, which the double did not seed"
        spec = self.specs[rid]
        assert not spec.hidden, f"record {rid} is hidden from the integration user, yet page {page} has it"
        run.ids.append(rid)
        try:
            incident = conn.normalize(record)
        except NormalizationError as exc:
            run.rejected[rid] = str(exc)
            return rid
        assert incident.get("external_id") == rid, f"normalize gave external_id {incident.get('external_id')!r} to record {rid!r}"
        title = self.edited.get(rid, spec.title)
        assert incident.get("title") == title, f"record {rid}: canonical title {incident.get('title')!r}, expected {title!r}"
        assert incident.get("state") == spec.state, f"record {rid}: canonical state {incident.get('state')!r}, expected {spec.state!r}"
        if rid in self.times:
            assert incident.get("updated_at") == self.times[rid], \
                f"record {rid}: canonical updated_at {incident.get('updated_at')!r}, expected {self.times[rid]!r}"
        run.incidents[rid] = incident
        return rid


def deliver(conn: Connector, item: Enrichment) -> WriteResult | None:
    """Deliver one write-back as the outbox does: read what the ticket carries, write only when it differs (None: current)."""
    if conn.current_fingerprint(item.external_id) == item.fingerprint:
        return None
    return conn.write_back(item)


def assert_no_secret(double: ToolDouble, *things: Any) -> None:
    """None of the double's secrets in these texts, exceptions (their chains and tracebacks) or results."""
    texts = []
    for thing in things:
        if thing is None:
            continue
        if isinstance(thing, BaseException):
            texts.append("".join(traceback.format_exception(thing)))
            texts.append(repr(thing))
        else:
            texts.append(str(thing))
    for secret in double.secrets():
        assert secret, f"{double.name}.secrets() holds an empty string"
        for text in texts:
            # the hint names the secret without printing it
            assert secret not in text, f"a secret ({secret[:2]}..., {len(secret)} characters) appears in: {text[:500]}"


def _once(run: SyncRun, expected: Iterable[str]) -> None:
    expected = list(expected)
    missing = sorted(set(expected) - set(run.ids))
    twice = sorted({i for i in run.ids if run.ids.count(i) > 1})
    assert not missing, f"records never fetched: {missing}"
    assert not twice, f"records fetched more than once in one run: {twice}"
    assert sorted(run.ids) == sorted(expected)


# --- the suite ---------------------------------------------------------------------------------------------


class ConnectorContract:
    """The contract every connector passes. Subclass it as ``Test<Tool>Contract`` beside a ``tool_double`` fixture."""

    page_size = PAGE_SIZE

    @pytest.fixture(autouse=True)
    def _no_secret_logged(self, tool_double: ToolDouble, caplog: pytest.LogCaptureFixture) -> Any:
        caplog.set_level(logging.DEBUG)
        yield
        # in teardown, caplog.records holds the teardown's records only: read the case's own phases
        records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        assert_no_secret(tool_double, *(formatter.format(r) for r in records))

    @staticmethod
    def need(double: ToolDouble, *features: str) -> None:
        for feature in features:
            if feature in double.unsupported:
                pytest.skip(f"{double.name} cannot produce {feature}: {double.unsupported[feature]}")

    def tool(self, double: ToolDouble, specs: Sequence[RecordSpec]) -> Tool:
        return Tool(double, specs, self.page_size)

    def writable(self, double: ToolDouble, count: int = 3) -> tuple[Tool, Connector]:
        self.need(double, "write_back")
        tool = self.tool(double, record_specs(count))
        conn = tool.connector()
        if conn.capabilities.read_only:
            conn.close()
            pytest.skip(f"{double.name}'s connector is read-only: it writes nothing back")
        return tool, conn

    # --- pagination ----------------------------------------------------------------------------------

    @pytest.mark.parametrize("count", [0, 1, PAGE_SIZE * 4, PAGE_SIZE * 4 + 3])
    def test_pages_to_the_end_every_record_once(self, tool_double: ToolDouble, count: int) -> None:
        tool = self.tool(tool_double, record_specs(count))
        run = tool.sync(None)
        assert run.finished
        _once(run, tool.ids)
        assert run.rejected == {}
        assert sorted(run.incidents) == sorted(tool.ids)
        if count:
            assert len([p for p in run.pages if p.records]) >= -(-count // self.page_size)
            conn = tool.connector()
            try:
                at = conn.stream.bookmark_time(run.stored)
            finally:
                conn.close()
            assert at is not None and at >= max(tool.times.values()), f"the sync ended with the bookmark at {at}, before the last record"
        assert_no_secret(tool_double, *(w for p in run.pages for w in p.warnings))

    # hidden records by position in the tool's order, with pages of 5: a window of the page limit all hidden comes back empty
    HIDDEN_LAYOUTS = {
        "an empty first page": (range(0, 5), 17),
        "an empty page mid-stream": (range(5, 10), 23),
        "two empty pages in a row": (range(5, 15), 23),
        "short pages": ((1, 6, 7, 12, 13, 14, 20), 23),
        "hidden records at the end": (range(20, 30), 30),
    }

    @pytest.mark.parametrize("layout", sorted(HIDDEN_LAYOUTS))
    def test_short_and_empty_pages_mid_stream_do_not_end_the_sync(self, tool_double: ToolDouble, layout: str) -> None:
        self.need(tool_double, "hidden_records")
        hidden, count = self.HIDDEN_LAYOUTS[layout]
        tool = self.tool(tool_double, record_specs(count, hidden=hidden, ties=False))
        run = tool.sync(None)
        assert run.finished
        _once(run, tool.visible)

    # --- resume ----------------------------------------------------------------------------------------

    @pytest.mark.parametrize("hidden", [False, True], ids=["all visible", "some hidden"])
    def test_resume_after_a_kill_at_every_page(self, tool_double: ToolDouble, hidden: bool) -> None:
        if hidden:
            self.need(tool_double, "hidden_records")
        tool = self.tool(tool_double, record_specs(23, hidden=(5, 6, 7, 8, 9, 13) if hidden else ()))
        pages = len(tool.sync(None).pages)
        assert pages >= 4
        for k in range(1, pages + 1):
            first = tool.sync(None, stop_after=k)
            assert first.stored is not None, f"no bookmark stored after {k} pages"
            rest = tool.sync(first.stored)
            assert rest.finished
            lost = sorted(set(tool.visible) - set(first.ids) - set(rest.ids))
            assert not lost, f"killed after page {k} and resumed from {first.stored}: records lost {lost}"
            conn = tool.connector()
            try:
                before, after = conn.stream.bookmark_time(first.stored), conn.stream.bookmark_time(rest.stored)
            finally:
                conn.close()
            if before is not None:
                assert after is not None and after >= before, f"the bookmark moved back across runs: {after} after {before}"

    def test_an_edit_comes_in_the_next_run_and_the_bookmark_moves_on(self, tool_double: ToolDouble) -> None:
        tool = self.tool(tool_double, record_specs(12))
        first = tool.sync(None)
        edited = tool.ids[3]
        tool.edit(edited, "Contract record 3, edited")
        second = tool.sync(first.stored)
        assert second.finished
        assert edited in second.incidents, "an edit after the bookmark did not come in the next run"
        assert second.incidents[edited]["title"] == "Contract record 3, edited"
        conn = tool.connector()
        try:
            before, after = conn.stream.bookmark_time(first.stored), conn.stream.bookmark_time(second.stored)
        finally:
            conn.close()
        assert before is not None and after is not None and after > before, f"the bookmark did not move on past the edit: {before} -> {after}"
        third = tool.sync(second.stored)
        assert third.finished
        assert conn.stream.bookmark_time(third.stored) >= after  # type: ignore[operator]

    # --- faults on reads ---------------------------------------------------------------------------------

    @pytest.mark.parametrize("nth", [1, 3])
    def test_429_with_retry_after_is_waited_and_the_sync_goes_on(self, tool_double: ToolDouble, nth: int) -> None:
        tool = self.tool(tool_double, record_specs(18))
        fault = tool_double.inject(Fault("rate_limited", nth=nth, retry_after=7))
        run = tool.sync(None)
        assert fault.served == 1, "the 429 was never served"
        assert run.finished
        _once(run, tool.ids)
        assert any(wait >= 7 for wait in tool_double.slept), f"Retry-After: 7 was not waited (waits: {tool_double.slept})"

    @pytest.mark.parametrize("kind", ["server_error", "timeout", "connection_closed", "token_expired"])
    @pytest.mark.parametrize("nth", [1, 3])
    def test_a_passing_fault_on_a_read_is_retried_and_the_sync_goes_on(self, tool_double: ToolDouble, kind: str, nth: int) -> None:
        self.need(tool_double, kind)
        tool = self.tool(tool_double, record_specs(18))
        fault = tool_double.inject(Fault(kind, nth=nth, times=2 if kind != "token_expired" else 1))
        run = tool.sync(None)
        assert fault.served == fault.times, f"the {kind} fault was served {fault.served} times, not {fault.times}"
        assert run.finished
        _once(run, tool.ids)
        if kind != "token_expired":  # a fresh token is fetched at once; the others back off first
            assert len(tool_double.slept) >= 2, f"retried without backing off (waits: {tool_double.slept})"

    @pytest.mark.parametrize("kind", ["rate_limited", "server_error", "timeout", "connection_closed"])
    def test_a_persisting_fault_raises_a_retriable_error_after_the_pages_before_it(self, tool_double: ToolDouble, kind: str) -> None:
        self.need(tool_double, kind)
        tool = self.tool(tool_double, record_specs(18))
        fault = tool_double.inject(Fault(kind, nth=2, times=None, retry_after=1))
        run = SyncRun(None)
        with pytest.raises(RetriableConnectorError) as raised:
            tool.sync(None, into=run)
        assert not run.finished and len(run.pages) == 1, "the page before the fault was not handed over first"
        assert 2 <= fault.served <= MAX_TRIES, f"{fault.served} tries of a request that keeps failing"
        assert_no_secret(tool_double, raised.value)

    @pytest.mark.parametrize("nth", [1, 2])
    def test_401_is_an_authentication_error_not_retried_over_and_over(self, tool_double: ToolDouble, nth: int) -> None:
        self.need(tool_double, "unauthorized")
        tool = self.tool(tool_double, record_specs(12))
        fault = tool_double.inject(Fault("unauthorized", nth=nth, times=None))
        with pytest.raises(AuthenticationError) as raised:
            tool.sync(None)
        assert fault.served <= 2, f"a refused login was tried {fault.served} times (once, and once with a fresh token at most)"
        assert_no_secret(tool_double, raised.value)

    def test_an_expired_token_is_refreshed_once_and_not_again_and_again(self, tool_double: ToolDouble) -> None:
        self.need(tool_double, "token_expired")
        tool = self.tool(tool_double, record_specs(23))
        faults = [tool_double.inject(Fault("token_expired", nth=n)) for n in (2, 5)]
        run = tool.sync(None)
        assert [f.served for f in faults] == [1, 1]
        assert run.finished
        _once(run, tool.ids)

    def test_a_200_body_that_is_not_json_is_an_error_never_a_silent_end(self, tool_double: ToolDouble) -> None:
        self.need(tool_double, "not_json")
        tool = self.tool(tool_double, record_specs(12))
        fault = tool_double.inject(Fault("not_json", nth=2, times=None))
        run = SyncRun(None)
        with pytest.raises(ConnectorError) as raised:
            tool.sync(None, into=run)
        assert isinstance(raised.value, InvalidResponseError | RetriableConnectorError), \
            f"a body that is not JSON raised {type(raised.value).__name__}, not an InvalidResponseError"
        assert fault.served >= 1 and len(run.pages) == 1
        assert_no_secret(tool_double, raised.value)

    # --- records that cannot be normalized -------------------------------------------------------------

    def test_a_record_that_cannot_be_normalized_is_rejected_and_the_sync_goes_on(self, tool_double: ToolDouble) -> None:
        self.need(tool_double, "unnormalizable_record")
        tool = self.tool(tool_double, record_specs(14, unnormalizable=(0, 7, 13)))
        run = tool.sync(None)
        assert run.finished
        _once(run, tool.ids)
        bad = [tool.ids[i] for i in (0, 7, 13)]
        assert sorted(run.rejected) == sorted(bad), f"rejected {sorted(run.rejected)}, expected {sorted(bad)}"
        assert sorted(run.incidents) == sorted(tool.normalizable)
        assert all(reason.strip() for reason in run.rejected.values()), "a rejection without a reason"
        assert_no_secret(tool_double, *run.rejected.values())

    # --- write-back ----------------------------------------------------------------------------------------

    def _assert_written_once(self, tool: Tool, conn: Connector, item: Enrichment) -> None:
        on_ticket = tool.double.writes(item.external_id)
        caps = conn.capabilities.write_back
        if "note" in caps:
            assert on_ticket.notes == (item.note,), f"notes on the ticket: {on_ticket.notes!r}"
        if "fields" in caps:
            for name, value in item.fields.items():
                assert on_ticket.fields.get(name) == str(value), f"field {name}: {on_ticket.fields.get(name)!r} on the ticket, sent {value!r}"
        if "labels" in caps:
            assert set(item.labels) <= on_ticket.labels, f"labels on the ticket: {sorted(on_ticket.labels)}"

    def test_write_back_lands_once_and_a_second_delivery_writes_nothing(self, tool_double: ToolDouble) -> None:
        tool, conn = self.writable(tool_double)
        item = enrichment(tool.ids[1])
        try:
            assert conn.current_fingerprint(item.external_id) is None, "a ticket never written carries a fingerprint"
            result = deliver(conn, item)
            assert result is not None and result.written and result.external_id == item.external_id
            assert_no_secret(tool_double, result.detail)
        finally:
            conn.close()
        self._assert_written_once(tool, conn, item)
        untouched = tool_double.writes(tool.ids[0])
        assert untouched.notes == () and not untouched.fields and not untouched.labels, "another ticket was written to"
        writes = tool_double.requests("write")
        again = tool.connector()  # a restarted process: what the ticket carries is read from the tool
        try:
            assert again.current_fingerprint(item.external_id) == item.fingerprint
            assert deliver(again, item) is None, "the second delivery wrote again"
        finally:
            again.close()
        assert tool_double.requests("write") == writes, "the second delivery sent a write"
        self._assert_written_once(tool, again, item)

    def test_a_newer_fingerprint_replaces_the_older_one(self, tool_double: ToolDouble) -> None:
        tool, conn = self.writable(tool_double)
        ticket, other = tool.ids[0], tool.ids[2]
        one, two = enrichment(ticket, 1), enrichment(ticket, 2)
        try:
            assert deliver(conn, one) is not None
            assert deliver(conn, two) is not None, "a new fingerprint was taken for the one on the ticket"
            assert conn.current_fingerprint(ticket) == two.fingerprint
            assert conn.current_fingerprints([ticket, other]) == {ticket: two.fingerprint, other: None}
            assert deliver(conn, two) is None
        finally:
            conn.close()
        if "note" in conn.capabilities.write_back:
            assert tool_double.writes(ticket).notes == (one.note, two.note)

    def test_the_next_sync_reads_the_fingerprint_the_ticket_carries(self, tool_double: ToolDouble) -> None:
        tool, conn = self.writable(tool_double)
        item = enrichment(tool.ids[1])
        try:
            first = tool.sync(None)
            assert first.incidents[item.external_id].get("enrichment_fingerprint") is None
            assert deliver(conn, item) is not None
        finally:
            conn.close()
        tool.times.pop(item.external_id)  # the write changed the ticket: the tool chose its new time
        run = tool.sync(None)
        assert run.incidents[item.external_id].get("enrichment_fingerprint") == item.fingerprint

    @pytest.mark.parametrize("kind", ["rate_limited", "server_error", "timeout", "connection_closed"])
    def test_a_failed_write_is_retried_by_the_outbox_and_lands_once(self, tool_double: ToolDouble, kind: str) -> None:
        """timeout and connection_closed: the tool took the write and the answer was lost; it must not be written twice."""
        tool, conn = self.writable(tool_double)
        conn.close()
        self.need(tool_double, kind)
        item = enrichment(tool.ids[1])
        fault = tool_double.inject(Fault(kind, target="write", retry_after=3))
        delivered = False
        for _attempt in range(3):  # the outbox's retries, each from a fresh connector
            conn = tool.connector()
            try:
                deliver(conn, item)
                delivered = True
                break
            except RetriableConnectorError as exc:
                assert_no_secret(tool_double, exc)
            finally:
                conn.close()
        assert fault.served == 1, f"the {kind} fault on the write was served {fault.served} times"
        assert delivered, "the write-back never landed"
        self._assert_written_once(tool, conn, item)

    def test_a_refused_write_is_an_authentication_error_and_writes_nothing(self, tool_double: ToolDouble) -> None:
        tool, conn = self.writable(tool_double)
        self.need(tool_double, "unauthorized")
        item = enrichment(tool.ids[1])
        tool_double.inject(Fault("unauthorized", target="write", times=None))
        try:
            with pytest.raises(AuthenticationError) as raised:
                deliver(conn, item)
        finally:
            conn.close()
        on_ticket = tool_double.writes(item.external_id)
        assert on_ticket.notes == () and not on_ticket.fields and not on_ticket.labels
        assert_no_secret(tool_double, raised.value)

    def test_a_write_to_a_ticket_that_does_not_exist_is_fatal(self, tool_double: ToolDouble) -> None:
        tool, conn = self.writable(tool_double)
        missing = "0" * 31 + "1"
        assert missing not in tool.ids
        try:
            with pytest.raises(FatalConnectorError) as raised:
                conn.write_back(enrichment(missing))
        finally:
            conn.close()
        assert_no_secret(tool_double, raised.value)

    # --- secrets -----------------------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["unauthorized", "server_error", "not_json", "timeout", "connection_closed", "rate_limited"])
    def test_no_secret_in_any_message(self, tool_double: ToolDouble, kind: str) -> None:
        """Every message a persisting fault leads to (errors and their causes, tracebacks, logs at DEBUG) is free of secrets."""
        self.need(tool_double, kind)
        tool = self.tool(tool_double, record_specs(6))
        tool_double.inject(Fault(kind, times=None, retry_after=1))
        with pytest.raises(ConnectorError) as raised:
            tool.sync(None)
        assert_no_secret(tool_double, raised.value, *raised.value.args)
        assert tool_double.secrets(), f"{tool_double.name}.secrets() names no credential: this case would prove nothing"
