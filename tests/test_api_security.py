"""Who may call what: every API endpoint and method against no token, bad tokens and each role; the OpenAPI document."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from plugin.extensions import db
from plugin.models import TOKEN_ROLES, ApiToken, utcnow
from plugin.services import tokens

from .apiclient import token_for

SAMPLE_ARGS = {"incident_id": "1", "number": "INC0000001", "control_id": "A.5.28", "check_id": "EVID-001",
               "subprocess_id": "resolution", "acceptance_id": "1", "kind": "gaps", "document": "assessment-results"}


def api_endpoints(app) -> list[tuple[str, str, frozenset[str]]]:
    """(method, url, roles allowed) for every route under /api/v1, filled with sample path arguments."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        view = app.view_functions[rule.endpoint]
        roles = getattr(view, "required_roles", None)
        assert roles, f"{rule.rule} is not guarded by require()"
        url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: SAMPLE_ARGS[m.group(1)], rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, url, roles))
    return out


def call(client, method: str, url: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.open(url, method=method, headers=headers, json={} if method in ("POST", "PATCH", "PUT") else None)
    r.get_data()  # a streamed export runs to its end inside the request
    r.close()
    return r


def test_every_endpoint_is_guarded(app) -> None:
    endpoints = api_endpoints(app)
    assert len(endpoints) >= 15
    client = app.test_client()
    for method, url, _ in endpoints:
        r = call(client, method, url, None)
        assert r.status_code == 401, (method, url, r.status_code)
        assert r.headers["WWW-Authenticate"].startswith("Bearer") and r.get_json()["error"] == "Unauthorized"
    assert client.get("/healthz").status_code == 200  # the one open endpoint


@pytest.mark.parametrize("kind", ["malformed", "unknown", "expired", "revoked"])
def test_bad_tokens_are_401_on_every_endpoint(app, kind: str) -> None:
    token = {"malformed": "not a bearer token", "unknown": "gbt_" + "x" * 43}.get(kind)
    if token is None:
        token = token_for(app, "admin")
        with app.app_context():
            row = db.session.execute(sa.select(ApiToken).where(ApiToken.token_hash == tokens.token_hash(token))).scalar_one()
            if kind == "expired":
                row.expires_at = utcnow() - timedelta(seconds=1)
                db.session.commit()
            else:
                tokens.revoke(row.name, "test")
    client = app.test_client()
    for method, url, _ in api_endpoints(app):
        headers = {"Authorization": token if kind == "malformed" else f"Bearer {token}"}
        r = client.open(url, method=method, headers=headers, json={} if method != "GET" else None)
        assert r.status_code == 401, (kind, method, url, r.status_code)
        assert token not in r.get_data(as_text=True)


def test_each_role_reaches_what_it_may_and_is_refused_the_rest(app) -> None:
    client = app.test_client()
    seen_forbidden = set()
    for role in TOKEN_ROLES:
        token = token_for(app, role)
        for method, url, roles in api_endpoints(app):
            r = call(client, method, url, token)
            if role in roles:
                assert r.status_code not in (401, 403), (role, method, url, r.status_code, r.get_data(as_text=True)[:200])
                assert r.status_code < 500, (role, method, url, r.get_data(as_text=True)[:300])
            else:
                assert r.status_code == 403, (role, method, url, r.status_code)
                assert role in r.get_json()["message"]
                seen_forbidden.add((role, method))
    # auditors read only: every write is refused them
    assert ("auditor", "POST") in seen_forbidden or not any(m != "GET" for m, _, _ in api_endpoints(app))


def test_the_openapi_document_describes_every_endpoint_with_its_security(app) -> None:
    client = app.test_client()
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.") and doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    documented = {(m.upper(), re.sub(r"\{[a-z_]+\}", "x", p)) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    for method, url, _ in api_endpoints(app):
        rule = next(r for r in app.url_map.iter_rules() if re.fullmatch(re.sub(r"<(?:[a-z]+:)?[a-z_]+>", "[^/]+", r.rule), url))
        assert (method, re.sub(r"<(?:[a-z]+:)?[a-z_]+>", "x", rule.rule)) in documented, (method, url)
    gaps = doc["paths"]["/api/v1/gaps"]["get"]
    assert {"200", "400", "401", "429", "503"} <= set(gaps["responses"])
    params = {p["name"] for p in gaps["parameters"]}
    assert {"control", "status", "sort", "cursor", "limit", "period", "from", "to", "assignment_group"} <= params


def test_the_docs_page_is_served_from_the_package(app) -> None:
    client = app.test_client()
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/api/docs/assets/") for a in assets), assets  # no CDN
    for asset in assets:
        r = client.get(asset)
        assert r.status_code == 200 and len(r.data) > 1000, asset
        r.close()  # a file response keeps its file open until closed


def test_an_api_switched_off_leaves_only_the_health_check(app_factory) -> None:
    app = app_factory(api={"enabled": False})
    client = app.test_client()
    token = token_for(app, "admin")
    r = client.get("/api/v1/gaps", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404 and r.is_json
    assert client.get("/api/openapi.json").status_code == 404
    assert client.get("/healthz").status_code == 200
