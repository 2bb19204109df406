"""Risk acceptance over the API: ISMS managers accept, amend and revoke; auditors only read; bad bodies are named."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from plugin.extensions import db
from plugin.models import AuditEvent, Finding, utcnow

from .apiclient import ApiClient
from .test_api import api_app  # noqa: F401  (the fixture: two synced, assessed sources)


@pytest.fixture
def manager(api_app) -> ApiClient:  # noqa: F811
    return ApiClient(api_app, "isms_manager")


def _later(days: int = 90) -> str:
    return (utcnow() + timedelta(days=days)).isoformat()


def test_a_manager_accepts_amends_and_revokes_and_each_step_counts(manager, api_app) -> None:  # noqa: F811
    auditor = ApiClient(api_app)
    before = auditor.json("/api/v1/coverage/controls/A.5.28")
    gaps = auditor.pages("/api/v1/gaps?check=EVID-001&source=fake")
    target = gaps[0]["incident"]["id"]
    r = manager.post("/api/v1/risk-acceptances", json={
        "check_id": "EVID-001", "incident_id": target, "justification": "Evidence kept by the outsourced SOC under contract 2026-17",
        "approver": "Chief Information Security Officer", "expires_at": _later()})
    assert r.status_code == 201, r.get_data(as_text=True)
    made = r.get_json()
    assert made["status"] == "active" and made["covered_gaps"] == 1 and made["scope"] is None and made["controls_2022"] == ["A.5.28"]
    after = auditor.json("/api/v1/coverage/controls/A.5.28")
    assert (after["failed"], after["accepted"]) == (before["failed"] - 1, before["accepted"] + 1)
    assert [g["incident"]["id"] for g in auditor.pages("/api/v1/gaps?status=accepted")] == [target]
    assert auditor.json(f"/api/v1/incidents/{target}")["accepted"] == 1

    r = manager.patch(f"/api/v1/risk-acceptances/{made['id']}", json={"expires_at": _later(30)})
    assert r.status_code == 200 and r.get_json()["expires_at"] < made["expires_at"]
    r = manager.post(f"/api/v1/risk-acceptances/{made['id']}/revoke", json={"reason": "The SOC contract ended"})
    assert r.status_code == 200 and r.get_json()["status"] == "revoked" and r.get_json()["revoked_by"].startswith("token:")
    assert auditor.json("/api/v1/coverage/controls/A.5.28")["failed"] == before["failed"]
    # nothing was deleted, and the log has each step with who did it
    with api_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Finding).where(Finding.incident_id == target,
                                                                                      Finding.check_id == "EVID-001")) == 1
        actions = [e.action for e in db.session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_type == "risk_acceptance")
                                                        .order_by(AuditEvent.id))]
        assert actions == ["risk.accepted", "risk.changed", "risk.revoked"]
    listed = auditor.pages("/api/v1/risk-acceptances?status=revoked")
    assert [a["id"] for a in listed] == [made["id"]]
    # revoked is final
    r = manager.patch(f"/api/v1/risk-acceptances/{made['id']}", json={"approver": "Someone else"})
    assert r.status_code == 400 and "status" in r.get_json()["fields"]


def test_a_scope_acceptance_covers_its_scope_only(manager, api_app) -> None:  # noqa: F811
    r = manager.post("/api/v1/risk-acceptances", json={
        "check_id": "LEARN-001", "scope": {"business_unit": "Retail"}, "justification": "Retail runs lessons learned quarterly, not per ticket",
        "approver": "Head of Retail IT", "expires_at": _later()})
    assert r.status_code == 201, r.get_data(as_text=True)
    auditor = ApiClient(api_app)
    accepted = auditor.pages("/api/v1/gaps?status=accepted")
    assert accepted and {g["incident"]["business_unit"] for g in accepted} == {"Retail"}
    assert r.get_json()["covered_gaps"] == len(accepted)


@pytest.mark.parametrize(("body", "field"), [
    ({"check_id": "EVID-001", "scope": {"source": "fake"}, "approver": "CISO", "expires_at": "2099-01-01T00:00:00Z"}, "justification"),
    ({"check_id": "EVID-001", "scope": {"source": "fake"}, "justification": "x" * 30, "approver": "CISO", "expires_at": "2027-01-01"},
     "expires_at"),
    ({"check_id": "EVID-001", "scope": {"source": "fake"}, "justification": "x" * 30, "approver": "CISO",
      "expires_at": "2099-01-01T00:00:00Z"}, "expires_at"),
    ({"check_id": "NOPE-9", "scope": {"source": "fake"}, "justification": "x" * 30, "approver": "CISO", "expires_at": "2027-01-01T00:00:00Z"},
     "check_id"),
    ({"check_id": "EVID-001", "scope": {"sourse": "fake"}, "justification": "x" * 30, "approver": "CISO",
      "expires_at": "2027-01-01T00:00:00Z"}, "scope"),
    ({"check_id": "EVID-001", "incident_id": 2**40, "justification": "x" * 30, "approver": "CISO", "expires_at": "2027-01-01T00:00:00Z"},
     "incident_id"),
    ({"check_id": "EVID-001", "scope": {"source": "fake"}, "justification": "x" * 30, "approver": "CISO",
      "expires_at": "2027-01-01T00:00:00Z", "extra": 1}, "extra"),
])
def test_a_bad_acceptance_is_refused_naming_the_field(manager, body, field: str) -> None:
    r = manager.post("/api/v1/risk-acceptances", json=body)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert field in r.get_json()["fields"], r.get_json()


def test_a_body_that_is_not_json_is_a_400(manager) -> None:
    r = manager.client.post("/api/v1/risk-acceptances", data="{not json", headers={**manager.headers, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.is_json


def test_auditors_cannot_accept(api_app) -> None:  # noqa: F811
    r = ApiClient(api_app).post("/api/v1/risk-acceptances", json={"check_id": "EVID-001"})
    assert r.status_code == 403 and "isms_manager" in r.get_json()["message"]
