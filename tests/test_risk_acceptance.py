"""Risk acceptance: an accepted gap is told on the ticket and counted apart, until it expires or is revoked."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from marshmallow import ValidationError

from plugin.config import ConfigError, load_config
from plugin.extensions import db
from plugin.models import AuditEvent, Finding, Incident, OutboxItem, RiskAcceptance, utcnow
from plugin.rules.clocks import format_utc
from plugin.rules.loader import load_ruleset
from plugin.rules.model import FAIL
from plugin.services import risk
from plugin.services.assess import assess
from plugin.services.enrich import (
    AcceptedGap,
    EndedAcceptance,
    TicketFindings,
    enrichment_fields,
    fingerprint,
    plan,
    render_note,
    ticket_labels,
)
from plugin.services.outbox import drain
from plugin.services.report import format_report, gap_report
from plugin.services.sync import sync_source
from plugin.state import GapBridge, gapbridge

from .conftest import REPO
from .fakes import FakeConnector, FakeTicketing

D = timedelta(days=1)
APPROVER = "Carla Ciso (CISO)"
ACTOR = "isms-manager-token"
WHY = "Evidence store migration until Q1; the mail gateway keeps 90 days of copies meanwhile"
EVIDENCE = "Evidence collected for incidents that may end in legal or disciplinary action (EVID-001, A.5.28)"


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(REPO / "mappings")


def minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class Desk:
    """Tickets in fake tools, synced and assessed; every one is a security incident lacking its evidence (EVID-001)."""

    def __init__(self, tickets: dict[str, list[dict[str, Any]]]) -> None:
        self.tools: dict[str, FakeTicketing] = {}
        for source, canonicals in tickets.items():
            tool = FakeTicketing(len(canonicals))
            for ticket, canonical in zip(tool.tickets.values(), canonicals, strict=True):
                ticket.update(security=True, evidence=False, canonical=canonical)
            self.tools[source] = tool
            sync_source(FakeConnector(tool, name=source))
        assess(gapbridge().ruleset)
        self.now = utcnow()
        self.write_back()

    def write_back(self, now: datetime | None = None) -> int:
        queued = plan(gapbridge().ruleset, now=now or self.now).queued
        drain({name: FakeConnector(tool, name=name) for name, tool in self.tools.items()})
        return queued

    def incident(self, number: str, source: str = "fake") -> Incident:
        return db.session.execute(sa.select(Incident).where(Incident.source == source, Incident.number == number)).scalar_one()

    def note(self, number: str, source: str = "fake") -> str:
        return self.tools[source].notes[self.incident(number, source).external_id][-1]

    def fields(self, number: str, source: str = "fake") -> dict[str, Any]:
        """The fields and labels on the ticket: those of the outbox row last written (a row is sent again when its gaps come back)."""
        incident = self.incident(number, source)
        item = db.session.execute(sa.select(OutboxItem).where(OutboxItem.incident_id == incident.id,
                                                              OutboxItem.fingerprint == incident.enrichment_fingerprint)).scalar_one()
        return dict(item.payload["fields"], labels=item.payload["labels"])

    def accept(self, check_id: str = "EVID-001", **kw: Any) -> RiskAcceptance:
        if "scope" not in kw:
            kw.setdefault("incident_id", self.incident("INC0000000").id)
        kw = {"justification": WHY, "approver": APPROVER, "expires_at": minute(self.now + 90 * D), "actor": ACTOR,
              "ruleset": gapbridge().ruleset, "max_days": gapbridge().config["risk"]["max_acceptance_days"], "now": self.now, **kw}
        return risk.accept(check_id, **kw)


def risk_events() -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action.like("risk.%")).order_by(AuditEvent.id)))


def evidence_finding(incident: Incident) -> Finding:
    return db.session.execute(sa.select(Finding).where(Finding.incident_id == incident.id, Finding.check_id == "EVID-001")).scalar_one()


# --- the note and fields ---------------------------------------------------------------------


def test_a_note_reports_accepted_gaps_apart_and_counts_only_open_ones(ruleset) -> None:
    until = datetime.fromisoformat("2027-03-31T12:00:00+00:00")
    findings = TicketFindings(gaps=[("LEARN-001", ["root cause recorded"])],
                              accepted=[AcceptedGap("EVID-001", ["at least one evidence item recorded"], until, APPROVER)])
    fp = fingerprint(findings)
    note = render_note(ruleset, "INC0010042", findings, [], fp, until - 90 * D)
    head, rest = note.split("\n", 1)
    assert head == "GapBridge: ISO/IEC 27001 check of INC0010042 found 1 open gap. 1 accepted risk (not counted as a gap)."
    assert rest.index("(LEARN-001)") < rest.index("Accepted risks (not counted as gaps") < rest.index(EVIDENCE)
    assert f"- {EVIDENCE}: accepted by {APPROVER} until 2027-03-31 12:00 UTC" in note
    fields = enrichment_fields(ruleset, findings, fp)
    assert (fields["open_gaps"], fields["accepted_risks"], fields["accepted_checks"]) == (1, 1, "EVID-001")
    # the controls and the status are the open gaps' only
    assert (fields["controls_2022"], fields["gap_checks"], fields["compliance_status"]) == ("A.5.27", "LEARN-001", "gaps")
    assert ticket_labels(findings) == ["gapbridge-gaps", "gapbridge-accepted-risk"]


def test_a_ticket_whose_only_gaps_are_accepted_is_neither_failing_nor_plainly_compliant(ruleset) -> None:
    until = datetime.fromisoformat("2027-03-31T12:00:00+00:00")
    findings = TicketFindings(accepted=[AcceptedGap("EVID-001", [], until, APPROVER)])
    fp = fingerprint(findings)
    note = render_note(ruleset, None, findings, [], fp, until - D)
    assert note.startswith("GapBridge: ISO/IEC 27001 check of this incident: no open gaps. 1 accepted risk (not counted as a gap).")
    assert "Thank you" not in note
    fields = enrichment_fields(ruleset, findings, fp)
    assert (fields["open_gaps"], fields["compliance_status"], fields["worst_severity"]) == (0, "accepted_risk", "")
    assert ticket_labels(findings) == ["gapbridge-accepted-risk"]


def test_the_fingerprint_follows_who_accepted_until_when_but_not_the_ended_line() -> None:
    until = datetime.fromisoformat("2027-03-31T12:00:00+00:00")
    accepted = TicketFindings(accepted=[AcceptedGap("EVID-001", ["x"], until, APPROVER)])
    assert fingerprint(accepted) != fingerprint(TicketFindings(gaps=[("EVID-001", ["x"])]))
    assert fingerprint(accepted) != fingerprint(TicketFindings(accepted=[AcceptedGap("EVID-001", ["x"], until + D, APPROVER)]))
    assert fingerprint(accepted) != fingerprint(TicketFindings(accepted=[AcceptedGap("EVID-001", ["x"], until, "Someone Else")]))
    # the line about an ended acceptance drops out after a while: that alone must not rewrite the note
    ended = TicketFindings(gaps=[("EVID-001", ["x"])], ended={"EVID-001": EndedAcceptance(APPROVER, until, "expired")})
    assert fingerprint(ended) == fingerprint(TicketFindings(gaps=[("EVID-001", ["x"])]))


# --- accepting one incident's finding --------------------------------------------------------


def test_accepting_one_incidents_gap_tells_that_ticket_and_keeps_the_finding(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}, {}, {}]})
        assert "found 1 open gap" in desk.note("INC0000000") and desk.fields("INC0000000")["open_gaps"] == 1
        acceptance = desk.accept()
        assert desk.write_back() == 1  # that ticket only
        note = desk.note("INC0000000")
        assert note.startswith("GapBridge: ISO/IEC 27001 check of INC0000000: no open gaps. 1 accepted risk (not counted as a gap).")
        assert f"{EVIDENCE}: accepted by {APPROVER} until {format_utc(acceptance.expires_at)}" in note
        assert "Resolved since the last check" not in note  # accepted is not fixed
        fields = desk.fields("INC0000000")
        assert (fields["open_gaps"], fields["accepted_risks"], fields["gap_checks"], fields["accepted_checks"]) == (0, 1, "", "EVID-001")
        assert fields["labels"] == ["gapbridge-accepted-risk"]
        assert desk.fields("INC0000001")["open_gaps"] == 1
        # an acceptance never deletes a finding, nor changes it, even when the incident is assessed again
        assert evidence_finding(desk.incident("INC0000000")).status == FAIL
        assess(gapbridge().ruleset, everything=True)
        assert evidence_finding(desk.incident("INC0000000")).status == FAIL
        assert desk.write_back() == 0  # nothing changed: no second note
        assert risk.status_of(acceptance, desk.now) == risk.ACTIVE


def test_an_accepted_gap_that_is_fixed_is_reported_resolved(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}, {}]})
        desk.accept()
        desk.write_back()
        tool = desk.tools["fake"]
        sid = desk.incident("INC0000000").external_id
        tool.touch(sid, evidence=True)
        sync_source(FakeConnector(tool))
        assess(gapbridge().ruleset)
        assert desk.write_back() == 1
        note = desk.note("INC0000000")
        assert "no open gaps" in note and "Resolved since the last check: EVID-001." in note and "accepted by" not in note


def test_a_scope_acceptance_covers_the_incidents_it_matches_and_no_others(app) -> None:
    with app.app_context():
        desk = Desk({
            "fake": [{"business_unit": "Finance", "category": "phishing"}, {"business_unit": "HR", "category": "phishing"},
                     {"business_unit": "Finance", "category": "malware"}],
            "other": [{"business_unit": "Finance", "category": "phishing"}],
        })
        desk.accept(scope={"source": "fake", "business_unit": "Finance", "category": "phishing"})
        assert desk.write_back() == 1
        assert desk.fields("INC0000000")["accepted_risks"] == 1
        for number, source in (("INC0000001", "fake"), ("INC0000002", "fake"), ("INC0000000", "other")):
            assert desk.fields(number, source)["open_gaps"] == 1, (number, source)
        # a scope naming fewer fields covers more: the same check for Finance in every source
        desk.accept(scope={"business_unit": "Finance"}, approver="Felix Finance", expires_at=minute(desk.now + 60 * D))
        assert desk.write_back() == 2
        assert {(n, s): desk.fields(n, s)["open_gaps"] for n, s in (("INC0000000", "fake"), ("INC0000001", "fake"),
                                                                    ("INC0000002", "fake"), ("INC0000000", "other"))} == {
            ("INC0000000", "fake"): 0, ("INC0000001", "fake"): 1, ("INC0000002", "fake"): 0, ("INC0000000", "other"): 0}
        # the report, in SQL, agrees with the notes, in Python
        report = gap_report(gapbridge().ruleset, now=desk.now)
        assert (report.with_gaps, report.accepted, report.accepted_by_check) == (1, 3, {"EVID-001": 3})
        # two acceptances cover the first ticket: the note names the one that lasts longest
        later = desk.accept(scope={"source": "fake", "category": "phishing"}, approver="Paula Phish",
                            expires_at=minute(desk.now + 120 * D))
        desk.write_back()
        assert f"accepted by Paula Phish until {format_utc(later.expires_at)}" in desk.note("INC0000000")
        assert "accepted by Felix Finance" in desk.note("INC0000002")


# --- changing, revoking, expiry ----------------------------------------------------------------


def test_amending_the_expiry_writes_a_new_note_with_the_new_date(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}]})
        acceptance = desk.accept()
        first = format_utc(acceptance.expires_at)
        desk.write_back()
        new = minute(desk.now + 200 * D)
        risk.amend(acceptance.id, expires_at=new, actor=ACTOR, max_days=365, now=desk.now + D)
        assert desk.write_back() == 1
        note = desk.note("INC0000000")
        assert f"until {format_utc(new)}" in note and first not in note
        # the justification is not on the note: changing it alone writes nothing
        risk.amend(acceptance.id, justification=WHY + ", confirmed by the DPO", actor=ACTOR, max_days=365, now=desk.now + D)
        assert desk.write_back() == 0
        risk.amend(acceptance.id, approver="Dora Deputy", actor=ACTOR, max_days=365, now=desk.now + D)
        assert desk.write_back() == 1 and "accepted by Dora Deputy" in desk.note("INC0000000")


def test_revoking_puts_the_gap_back_in_the_note_and_the_report(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}, {}]})
        acceptance = desk.accept()
        elsewhere = desk.accept(scope={"category": "malware"}, approver="Mal Ware")
        desk.write_back()
        assert gap_report(gapbridge().ruleset, now=desk.now).accepted == 1
        at = desk.now + 2 * D
        risk.revoke(acceptance.id, reason="The evidence store is back", actor="ciso-token", now=at)
        # revoked later, but it never covered these tickets: the note must not name it
        risk.revoke(elsewhere.id, reason="No malware incidents this year", actor="ciso-token", now=at + timedelta(minutes=1))
        assert desk.write_back(now=at + timedelta(minutes=5)) == 1
        note = desk.note("INC0000000")
        assert "found 1 open gap" in note and "accepted by" not in note and "Mal Ware" not in note
        assert f"Risk acceptance by {APPROVER} was revoked on {format_utc(at)}: this gap counts again." in note
        fields = desk.fields("INC0000000")
        assert (fields["open_gaps"], fields["accepted_risks"], fields["labels"]) == (1, 0, ["gapbridge-gaps"])
        report = gap_report(gapbridge().ruleset, now=at)
        assert (report.with_gaps, report.accepted) == (2, 0)
        stored = db.session.get(RiskAcceptance, acceptance.id)  # nothing is deleted: the row says who revoked and why
        assert stored is not None and (stored.revoked_by, stored.revoke_reason) == ("ciso-token", "The evidence store is back")
        assert risk.status_of(stored, at) == risk.REVOKED


def test_expiry_counts_the_gap_again_tells_the_ticket_and_is_recorded_once(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}, {}]})
        acceptance = desk.accept(expires_at=minute(desk.now + 10 * D))
        desk.write_back()
        assert risk.expire_due(desk.now + 9 * D) == []
        after = acceptance.expires_at + timedelta(hours=1)
        assert [a.id for a in risk.expire_due(after)] == [acceptance.id]
        assert risk.expire_due(after) == [] and risk.expire_due(after + D) == []  # run twice, recorded once
        assert [e.action for e in risk_events()].count("risk.expired") == 1
        assert risk.status_of(acceptance, after) == risk.EXPIRED
        assert desk.write_back(now=after) == 1
        note = desk.note("INC0000000")
        assert "found 1 open gap" in note
        assert f"Risk acceptance by {APPROVER} expired on {format_utc(acceptance.expires_at)}: this gap counts again." in note
        assert desk.fields("INC0000000")["open_gaps"] == 1 and evidence_finding(desk.incident("INC0000000")).status == FAIL
        # a month on, the line has done its job: it is not worth a note of its own
        assert desk.write_back(now=after + 40 * D) == 0
        assert gap_report(gapbridge().ruleset, now=after).with_gaps == 2


def test_the_pipeline_pass_records_expiries_before_it_writes_back(app_factory, monkeypatch) -> None:
    from plugin.cli.pipeline import run_sync

    app = app_factory(sync={"worker_process": "never"})
    with app.app_context():
        desk = Desk({"fake": [{}]})
        # given ten days ago for nine, so it ran out yesterday and nobody has recorded it
        desk.now -= 10 * D
        desk.accept(expires_at=desk.now + 9 * D)
        desk.write_back()
        assert "accepted by" in desk.note("INC0000000")
    monkeypatch.setattr(GapBridge, "connector", lambda self, name: FakeConnector(desk.tools[name], name=name))
    assert run_sync(app, ["fake"], write_back=True, quiet=True) == 0
    with app.app_context():
        assert [e.action for e in risk_events()] == ["risk.accepted", "risk.expired"]
        assert "expired on" in desk.note("INC0000000")


# --- audit -------------------------------------------------------------------------------------


def test_every_acceptance_change_revocation_and_expiry_is_audited_with_who_and_why(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}, {}]})
        first = desk.accept()
        old_expiry = first.expires_at
        new_expiry = minute(desk.now + 30 * D)
        risk.amend(first.id, expires_at=new_expiry, approver="Dora Deputy", actor="deputy-token", max_days=365, now=desk.now)
        risk.revoke(first.id, reason="Fixed at the source", actor="ciso-token", now=desk.now + D)
        second = desk.accept(scope={"category": "phishing"}, expires_at=desk.now + 2 * D)
        risk.expire_due(desk.now + 3 * D)
        events = risk_events()
        assert [(e.action, e.actor, e.subject_id) for e in events] == [
            ("risk.accepted", ACTOR, str(first.id)), ("risk.changed", "deputy-token", str(first.id)),
            ("risk.revoked", "ciso-token", str(first.id)), ("risk.accepted", ACTOR, str(second.id)),
            ("risk.expired", "gapbridge", str(second.id))]
        assert all(e.details["justification"] == WHY and e.subject_type == "risk_acceptance" for e in events)
        accepted, changed, revoked, scoped, expired = (e.details for e in events)
        assert (accepted["check_id"], accepted["incident_id"], accepted["approver"]) == ("EVID-001", desk.incident("INC0000000").id, APPROVER)
        assert changed["before"] == {"expires_at": old_expiry.isoformat(), "approver": APPROVER}
        assert changed["after"] == {"expires_at": new_expiry.isoformat(), "approver": "Dora Deputy"}
        assert revoked["reason"] == "Fixed at the source"
        assert scoped["scope"] == {"category": "phishing"} and expired["scope"] == {"category": "phishing"}


# --- validation ----------------------------------------------------------------------------------

BAD_ACCEPTANCES: list[tuple[str, dict[str, Any], str, str | None, str]] = [
    # (case, arguments, field, nested field, what the message says)
    ("typo in the check", {"check_id": "EVID-01"}, "check_id", None, "did you mean EVID-001"),
    ("unknown check", {"check_id": "NOPE-999"}, "check_id", None, "the gap checks are "),
    ("an improvement", {"check_id": "ROLE-001"}, "check_id", None, "improvement, not a gap"),
    ("a check the incident passes", {"check_id": "LEARN-001"}, "check_id", None, "it passes"),
    ("no such incident", {"incident_id": 987654}, "incident_id", None, "No incident with id 987654"),
    ("incident and scope", {"scope": {"source": "fake"}, "incident_id": "first"}, "scope", None, "not both"),
    ("empty scope", {"scope": {}}, "scope", None, "at least one of source, business_unit, category"),
    ("scope of nothing set", {"scope": {"business_unit": None}}, "scope", None, "at least one of"),
    ("unknown scope field", {"scope": {"severity": "high"}}, "scope", "severity", "Unknown scope field"),
    ("blank scope value", {"scope": {"category": ""}}, "scope", "category", "Must not be empty"),
    ("source never seen", {"scope": {"source": "servicenow"}}, "scope", "source", "No incident from source 'servicenow'"),
    ("no justification", {"justification": "  "}, "justification", None, "Must not be empty"),
    ("short justification", {"justification": "accepted"}, "justification", None, "Too short: at least 20 characters"),
    ("no approver", {"approver": ""}, "approver", None, "Must not be empty"),
    ("expiry now", {"expires_at": "now"}, "expires_at", None, "Must be in the future"),
    ("expiry past", {"expires_at": -D}, "expires_at", None, "Must be in the future"),
    ("expiry too far", {"expires_at": 366 * D}, "expires_at", None, "Must be at most 365 days ahead"),
    ("no expiry", {"expires_at": None}, "expires_at", None, "Missing data for required field"),
]


@pytest.mark.parametrize(("arguments", "field", "sub", "says"), [c[1:] for c in BAD_ACCEPTANCES], ids=[c[0] for c in BAD_ACCEPTANCES])
def test_a_bad_acceptance_names_its_field_and_stores_nothing(app, arguments, field, sub, says) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}]})
        kw = dict(arguments)
        if kw.get("incident_id") == "first":
            kw["incident_id"] = desk.incident("INC0000000").id
        if "expires_at" in kw:
            kw["expires_at"] = desk.now if kw["expires_at"] == "now" else None if kw["expires_at"] is None else desk.now + kw["expires_at"]
        with pytest.raises(ValidationError) as caught:
            desk.accept(kw.pop("check_id", "EVID-001"), **kw)
        messages = caught.value.messages
        assert isinstance(messages, dict) and list(messages) == [field]
        found = messages[field][sub] if sub else messages[field]
        assert any(says in m for m in found), found
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RiskAcceptance)) == 0 and risk_events() == []


def test_every_problem_is_named_at_once(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}]})
        with pytest.raises(ValidationError) as caught:
            desk.accept("EVID-01", justification="", approver=" ", expires_at=desk.now - D)
        assert set(caught.value.messages) == {"check_id", "justification", "approver", "expires_at"}


def test_the_longest_acceptance_is_configurable(app_factory, tmp_path: Path) -> None:
    app = app_factory(risk={"max_acceptance_days": 30})
    with app.app_context():
        desk = Desk({"fake": [{}]})
        with pytest.raises(ValidationError, match="at most 30 days ahead"):
            desk.accept(expires_at=desk.now + 31 * D)
        desk.accept(expires_at=desk.now + 30 * D)
    assert load_config(None, env={})["risk"]["max_acceptance_days"] == 365
    config = tmp_path / "config.yaml"
    config.write_text("risk:\n  max_acceptance_days: 0\n")
    with pytest.raises(ConfigError, match=r"config.yaml:2: risk.max_acceptance_days"):
        load_config(config, env={})


def test_an_acceptance_that_ended_cannot_be_amended_or_revoked(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}]})
        revoked = desk.accept()
        risk.revoke(revoked.id, reason="No longer needed", actor=ACTOR, now=desk.now)
        expired = desk.accept(expires_at=desk.now + D)
        later = desk.now + 2 * D
        for acceptance, status, since in ((revoked, "revoked", desk.now), (expired, "expired", desk.now + D)):
            with pytest.raises(ValidationError) as caught:
                risk.amend(acceptance.id, expires_at=later + D, actor=ACTOR, max_days=365, now=later)
            assert f"is {status} (since {format_utc(since)})" in caught.value.messages["status"][0]
            with pytest.raises(ValidationError) as caught:
                risk.revoke(acceptance.id, reason="Twice", actor=ACTOR, now=later)
            assert f"is {status}" in caught.value.messages["status"][0]
        assert [e.action for e in risk_events()] == ["risk.accepted", "risk.revoked", "risk.accepted"]


def test_amending_and_revoking_check_their_input(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}]})
        acceptance = desk.accept()
        with pytest.raises(ValidationError) as caught:
            risk.amend(acceptance.id, expires_at=desk.now + 400 * D, justification="short", actor=ACTOR, max_days=365, now=desk.now)
        assert set(caught.value.messages) == {"expires_at", "justification"}
        with pytest.raises(ValidationError) as caught:
            risk.amend(acceptance.id, actor=ACTOR, max_days=365, now=desk.now)
        assert "Nothing to change" in caught.value.messages["_schema"][0]
        with pytest.raises(ValidationError) as caught:
            risk.revoke(acceptance.id, reason="", actor=ACTOR, now=desk.now)
        assert list(caught.value.messages) == ["reason"]
        with pytest.raises(risk.AcceptanceNotFound):
            risk.revoke(acceptance.id + 1000, reason="Gone", actor=ACTOR, now=desk.now)
        assert db.session.get(RiskAcceptance, acceptance.id).revoked_at is None
        assert [e.action for e in risk_events()] == ["risk.accepted"]


def test_listing_by_status(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}, {}]})
        active = desk.accept()
        revoked = desk.accept(scope={"category": "phishing"})
        risk.revoke(revoked.id, reason="Too broad a scope", actor=ACTOR, now=desk.now)
        expired = desk.accept(incident_id=desk.incident("INC0000001").id, expires_at=desk.now + D)
        later = desk.now + 2 * D
        assert {s: [a.id for a in risk.list_acceptances(status=s, now=later)] for s in risk.STATUSES} == {
            "active": [active.id], "expired": [expired.id], "revoked": [revoked.id]}
        assert [risk.status_of(a, later) for a in risk.list_acceptances(now=later)] == ["active", "revoked", "expired"]
        assert [a.id for a in risk.list_acceptances(after_id=active.id, limit=1)] == [revoked.id]
        assert risk.scope_of(revoked) == {"category": "phishing"} and risk.scope_of(active) is None


# --- the report -----------------------------------------------------------------------------------


def test_the_report_counts_accepted_gaps_apart_by_control_and_in_total(app) -> None:
    with app.app_context():
        desk = Desk({"fake": [{}, {}, {"root_cause": None}]})
        acceptance = desk.accept()
        desk.accept(incident_id=desk.incident("INC0000002").id)  # it keeps its other gap (LEARN-001)
        report = gap_report(gapbridge().ruleset, now=desk.now)
        by_control = {cid: n for cid, _, _, n in report.by_control}
        assert (report.with_gaps, report.accepted) == (2, 2)
        assert (by_control["A.5.28"], report.accepted_by_control) == (1, {"A.5.28": 2})
        assert dict((c, n) for c, _, n in report.by_check)["EVID-001"] == 1
        text = format_report(report)
        assert "Accepted risks: 2 failed gaps under an acceptance in force, not counted as open gaps" in text
        assert [line for line in text.splitlines() if line.strip().startswith("A.5.28")][0].endswith("(+2 accepted)")
        risk.revoke(acceptance.id, reason="Reviewed: not acceptable", actor=ACTOR, now=desk.now)
        report = gap_report(gapbridge().ruleset, now=desk.now)
        assert (report.with_gaps, report.accepted, report.accepted_by_control) == (3, 1, {"A.5.28": 1})
        assert "Accepted risks: 1 failed gap under" in format_report(report)
