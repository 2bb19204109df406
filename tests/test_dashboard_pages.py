"""The dashboard's pages through Flask's client: each shows the numbers the API gives for the same scope, filters change
them and stay in the links, a bad filter is a 400 that names it, and only ISMS managers accept and revoke risks."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from plugin.extensions import db
from plugin.models import AuditEvent, Finding, Incident, RiskAcceptance, utcnow
from plugin.queries.kpis import process_kpis
from plugin.queries.scope import Scope
from plugin.services import users
from plugin.services.assess import assess
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .apiclient import ApiClient
from .fakes import FakeConnector
from .test_api import varied_tool
from .test_dashboard_signin import CountingHasher, csrf_of

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users, "HASHER", CountingHasher())


@pytest.fixture
def dash_app(app_factory: Any) -> Flask:
    app = app_factory()
    with app.app_context():
        sync_source(FakeConnector(varied_tool(60)))
        sync_source(FakeConnector(varied_tool(12), name="second"))
        assess(gapbridge().ruleset)
        users.create("manager", "isms_manager", PASSWORD, "test")
        users.create("auditor", "auditor", PASSWORD, "test")
        db.session.remove()
    return app


def signed_in(app: Flask, name: str) -> FlaskClient:
    client = app.test_client()
    r = client.post("/dashboard/login", data={"username": name, "password": PASSWORD, "csrf_token": csrf_of(client)})
    assert r.status_code in (302, 303), r.text
    return client


def text_of(page: str, element_id: str) -> str:
    match = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', page, re.S)
    assert match, f"no #{element_id} in the page"
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


def number(text: str) -> int:
    return int(text.replace(",", "").replace("\u202f", "").split()[0])


def open_gaps_by_api(app: Flask, query: str = "") -> int:
    return len(ApiClient(app).pages(f"/api/v1/gaps?status=open&limit=200{'&' + query if query else ''}"))


def test_the_overview_shows_the_apis_numbers_and_a_filter_changes_them(dash_app: Flask) -> None:
    client = signed_in(dash_app, "auditor")
    page = client.get("/dashboard/").text
    api = ApiClient(dash_app)
    coverage = api.json("/api/v1/coverage/controls?limit=200")
    assert number(text_of(page, "card-in-scope")) == coverage["incidents_in_scope"] == 72
    assert number(text_of(page, "card-open-gaps")) == open_gaps_by_api(dash_app) > 0
    worst = re.findall(r'<a href="/dashboard/controls/([^"?]+)', page.split('id="worst-controls"')[1].split("</table>")[0])
    failing = {i["key"]: i["failed"] for i in coverage["items"]}
    assert worst and [failing[c] for c in worst] == sorted(failing.values(), reverse=True)[:len(worst)]
    assert 'id="sources"' in page and ">fake<" in page and "succeeded" in page

    unit = "Finance"
    filtered = client.get(f"/dashboard/?business_unit={unit}").text
    in_unit = api.json(f"/api/v1/coverage/controls?limit=200&business_unit={unit}")["incidents_in_scope"]
    assert number(text_of(filtered, "card-in-scope")) == in_unit < 72
    assert number(text_of(filtered, "card-open-gaps")) == open_gaps_by_api(dash_app, f"business_unit={unit}")
    # the links of a filtered view keep its filters: the report and the controls open on the same scope
    assert f"/dashboard/report.pdf?business_unit={unit}" in filtered
    assert re.search(rf'/dashboard/controls/[^"]+\?business_unit={unit}"', filtered)


def test_a_period_narrows_every_page_and_a_bad_one_is_a_400_that_names_it(dash_app: Flask) -> None:
    client = signed_in(dash_app, "auditor")
    api = ApiClient(dash_app)
    q3 = api.json("/api/v1/coverage/controls?limit=200&period=2026-Q3")["incidents_in_scope"]
    assert 0 < q3 < 72
    assert number(text_of(client.get("/dashboard/?period=2026-Q3").text, "card-in-scope")) == q3
    for path in ("/dashboard/", "/dashboard/heatmap", "/dashboard/kpis", "/dashboard/maturity", "/dashboard/controls/A.5.26"):
        bad = client.get(f"{path}?period=last-summer")
        assert bad.status_code == 400, path
        assert "period" in bad.text and "last-summer" in bad.text and "2026-Q3" in bad.text
        assert "Traceback" not in bad.text
    assert client.get("/dashboard/heatmap?edition=2019").status_code == 400


def test_a_heatmap_cell_opens_its_population_and_its_numbers_are_the_cells(dash_app: Flask) -> None:
    from plugin.queries.heatmap import heatmap

    client = signed_in(dash_app, "auditor")
    page = client.get("/dashboard/heatmap?business_unit=Retail").text
    links = sorted(set(re.findall(r'href="(/dashboard/heatmap/cell\?[^"]+)"', page)))
    assert links, "the heatmap's cells are links"
    with dash_app.app_context():
        heat = heatmap(gapbridge().ruleset, Scope(business_unit="Retail"), utcnow())
        failing = max((c for c in heat.cells.values() if c.kind == "gap" and c.failing), key=lambda c: c.failing)
    link = next(html.unescape(u) for u in links if f"subprocess={failing.subprocess}&amp;control={failing.control}&" in u
                or f"subprocess={failing.subprocess}&control={failing.control}&" in html.unescape(u))
    assert "business_unit=Retail" in link and "edition=2022" in link
    cell = client.get(link).text
    assert number(text_of(cell, "cell-applicable")) == failing.applicable
    assert number(text_of(cell, "cell-failing")) == failing.failing > 0
    only_failing = client.get(link + "&outcome=failed").text
    rows = re.findall(r'<tr data-incident="(\d+)"', only_failing)
    assert len(rows) == failing.failing
    with dash_app.app_context():
        units = set(db.session.scalars(sa.select(Incident.business_unit).where(Incident.id.in_([int(r) for r in rows]))))
    assert units == {"Retail"}
    two_thousand_thirteen = client.get("/dashboard/heatmap?edition=2013").text
    assert "A.16.1" in two_thousand_thirteen and 'aria-current="true">2013' in two_thousand_thirteen
    assert client.get("/dashboard/heatmap/cell?subprocess=nonsense&control=A.5.26").status_code == 400


def test_the_control_and_incident_pages_agree_with_the_api(dash_app: Flask) -> None:
    client = signed_in(dash_app, "auditor")
    api = ApiClient(dash_app)
    items = api.json("/api/v1/coverage/controls?limit=200")["items"]
    worst = max(items, key=lambda i: i["failed"])
    page = client.get(f"/dashboard/controls/{worst['key']}").text
    assert number(text_of(page, "control-failing")) == worst["failed"]
    assert number(text_of(page, "control-applicable")) == worst["in_scope"]
    assert len(re.findall(r'<tr data-incident="', page.split('id="population"')[1])) == min(worst["failed"], 50)
    assert client.get("/dashboard/controls/A.99.99").status_code == 404
    # a 2013 id opens its control too
    assert client.get("/dashboard/controls/A.16.1.5").status_code == 200

    with dash_app.app_context():
        incident_id = db.session.scalar(sa.select(Finding.incident_id).where(Finding.status == "fail", Finding.kind == "gap").limit(1))
    detail = api.json(f"/api/v1/incidents/{incident_id}")
    incident = client.get(f"/dashboard/incidents/{incident_id}").text
    assert number(text_of(incident, "incident-open-gaps")) == detail["open_gaps"] > 0
    assert len(re.findall(r'<tr data-check="', incident)) == len(detail["findings"])
    assert client.get("/dashboard/incidents/999999").status_code == 404


def test_the_kpi_and_maturity_pages_show_the_queries_numbers(dash_app: Flask) -> None:
    client = signed_in(dash_app, "auditor")
    kpi_page = client.get("/dashboard/kpis?business_unit=Finance").text
    with dash_app.app_context():
        k = process_kpis(Scope(business_unit="Finance"), utcnow())
    assert f'<div class="kpi-value">{k.security_incidents}</div>' in kpi_page
    assert "Time to resolve" in kpi_page and "<svg" in kpi_page
    maturity = client.get("/dashboard/maturity").text
    assert "unknown" in maturity and ("Level" in maturity or "No level" in maturity)


def accept_form(client: FlaskClient, **fields: str) -> Any:
    data = {"csrf_token": csrf_of(client, "/dashboard/risks"), "check_id": "", "incident": "", "source": "", "business_unit": "",
            "category": "", "justification": "", "approver": "", "expires_on": "", **fields}
    return client.post("/dashboard/risks", data=data)


def test_an_isms_manager_accepts_and_revokes_a_gap_and_the_overview_counts_it(dash_app: Flask) -> None:
    client = signed_in(dash_app, "manager")
    with dash_app.app_context():
        gap = db.session.execute(sa.select(Finding.check_id, Incident.number).join(Incident, Incident.id == Finding.incident_id)
                                 .where(Finding.status == "fail", Finding.kind == "gap").limit(1)).one()
    before = number(text_of(client.get("/dashboard/").text, "card-open-gaps"))
    until = (utcnow() + timedelta(days=30)).date().isoformat()

    refused = accept_form(client, check_id=gap.check_id, incident=gap.number, justification="too short", approver="CISO", expires_on=until)
    assert refused.status_code == 400 and "justification" in refused.text
    assert 'value="CISO"' in refused.text  # what was typed stays in the form
    far = accept_form(client, check_id=gap.check_id, incident=gap.number, approver="CISO", expires_on="2099-01-01",
                      justification="Compensating control: the SOC reviews these tickets weekly.")
    assert far.status_code == 400 and "expires on" in far.text.lower()
    nobody = accept_form(client, check_id=gap.check_id, incident="INC9999999", approver="CISO", expires_on=until,
                         justification="Compensating control: the SOC reviews these tickets weekly.")
    assert nobody.status_code == 400 and "INC9999999" in nobody.text
    with dash_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RiskAcceptance)) == 0

    ok = accept_form(client, check_id=gap.check_id, incident=gap.number, approver="CISO", expires_on=until,
                     justification="Compensating control: the SOC reviews these tickets weekly.")
    assert ok.status_code == 303
    listed = client.get("/dashboard/risks").text
    assert "Risk accepted" in listed and gap.check_id in listed and "CISO" in listed
    assert number(text_of(client.get("/dashboard/").text, "card-open-gaps")) == before - 1 == open_gaps_by_api(dash_app)
    with dash_app.app_context():
        acceptance = db.session.scalars(sa.select(RiskAcceptance)).one()
        event = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "risk.accepted")).one()
        assert acceptance.created_by == event.actor == "dashboard:manager"
        assert acceptance.expires_at.date().isoformat() == until

    token = csrf_of(client, "/dashboard/risks")
    assert client.post(f"/dashboard/risks/{acceptance.id}/revoke", data={"reason": "", "csrf_token": token}).status_code == 303
    assert "Not revoked" in client.get("/dashboard/risks").text
    revoked = client.post(f"/dashboard/risks/{acceptance.id}/revoke",
                          data={"reason": "the SOC review was stopped", "csrf_token": csrf_of(client, "/dashboard/risks")})
    assert revoked.status_code == 303
    assert number(text_of(client.get("/dashboard/").text, "card-open-gaps")) == before
    assert "the SOC review was stopped" in client.get("/dashboard/risks?status=revoked").text


def test_an_auditor_sees_the_acceptances_but_cannot_accept_or_revoke(dash_app: Flask) -> None:
    client = signed_in(dash_app, "auditor")
    page = client.get("/dashboard/risks").text
    assert 'id="accept-form"' not in page and 'id="read-only"' in page
    with dash_app.app_context():
        check = db.session.scalar(sa.select(Finding.check_id).where(Finding.status == "fail", Finding.kind == "gap").limit(1))
    r = accept_form(client, check_id=check, source="fake", approver="CISO", expires_on=(utcnow() + timedelta(days=3)).date().isoformat(),
                    justification="An auditor trying to accept a risk they must not accept.")
    assert r.status_code == 403
    with dash_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RiskAcceptance)) == 0


def test_every_page_needs_a_sign_in(dash_app: Flask) -> None:
    client = dash_app.test_client()
    for path in ("/dashboard/", "/dashboard/heatmap", "/dashboard/kpis", "/dashboard/maturity", "/dashboard/risks",
                 "/dashboard/controls/A.5.26", "/dashboard/incidents/1", "/dashboard/heatmap/cell?subprocess=x&control=y"):
        r = client.get(path)
        assert r.status_code == 302 and "/dashboard/login" in r.headers["Location"], path


def test_the_overview_downloads_its_view_as_pdf_and_csv(dash_app: Flask) -> None:
    import csv
    import io

    from pypdf import PdfReader

    client = signed_in(dash_app, "auditor")
    page = client.get("/dashboard/?period=2026-Q3&business_unit=Finance").text
    pdf_link = html.unescape(re.search(r'href="(/dashboard/report\.pdf\?[^"]+)"', page).group(1))  # type: ignore[union-attr]
    assert "period=2026-Q3" in pdf_link and "business_unit=Finance" in pdf_link
    pdf = client.get(pdf_link)
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert 'filename="gap-report-2026-Q3.pdf"' in pdf.headers["Content-Disposition"]
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    assert "2026-Q3" in text and "Finance" in text
    in_scope = ApiClient(dash_app).json("/api/v1/coverage/controls?limit=1&period=2026-Q3&business_unit=Finance")["incidents_in_scope"]
    rows = list(csv.reader(io.StringIO(client.get(pdf_link.replace(".pdf", ".csv")).text)))
    assert rows[0][0] == "section" and len(rows) > 5
    assert str(in_scope) in {cell for row in rows for cell in row}
    assert client.get("/dashboard/report.docx").status_code == 404
    assert client.get("/dashboard/report.pdf?period=someday").status_code == 400
