"""Secrets never reach an API answer or an export: not the caller's token, not a connector's password, not URL userinfo."""

from __future__ import annotations

import re

import sqlalchemy as sa

from plugin.extensions import db
from plugin.models import Incident
from plugin.services.assess import assess
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .apiclient import ApiClient
from .fakes import FakeConnector
from .test_api import varied_tool
from .test_api_security import SAMPLE_ARGS

SECRET = "pw-9f8e7d6c5b4a"


def test_no_response_or_export_carries_a_secret(app_factory) -> None:
    from connectors.servicenow import ServiceNowConnector

    app = app_factory(connectors={"prod": ServiceNowConnector.config_schema().load({
        "type": "servicenow", "instance_url": "https://acme.service-now.com",
        "auth": {"method": "basic", "username": "integration", "password": SECRET}})})
    api = ApiClient(app, "admin")
    token = api.headers["Authorization"].split()[1]
    with app.app_context():
        sync_source(FakeConnector(varied_tool(8)))
        assess(gapbridge(app).ruleset)
        # a link stored before credentials in URLs were refused (ids are not 1, 2, ... on PostgreSQL after other tests)
        first = db.session.execute(sa.select(Incident).order_by(Incident.id).limit(1)).scalar_one()
        first.url = "https://admin:" + SECRET + "@acme.service-now.com/incident.do"
        first_id = first.id
        db.session.commit()
    samples = {**SAMPLE_ARGS, "incident_id": str(first_id)}
    bodies = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/api/v1/", "/api/openapi")) or "GET" not in rule.methods:
            continue
        url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: samples[m.group(1)], rule.rule)
        url += "?period=2026" if "oscal" in url else "?control=A.5.28" if url.endswith("population") and "exports" in url else ""
        r = api.get(url)
        assert r.status_code < 500, url
        bodies.append((url, r.get_data(as_text=True)))
        r.close()
    assert len(bodies) > 20
    for url, body in bodies:
        assert token not in body and SECRET not in body, url
    # the stored link itself is what an old row held; what the API shows of it has no userinfo
    shown = api.json(f"/api/v1/incidents/{first_id}")["url"]
    assert SECRET not in shown
