"""The API answers bad input with a 4xx naming it, and an unreachable database with 503, never 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin import create_app

from .apiclient import ApiClient
from .conftest import make_config


@pytest.fixture
def api(app_factory) -> ApiClient:
    return ApiClient(app_factory())


@pytest.mark.parametrize("path", [
    "/api/v1/incidents/2147483648",
    "/api/v1/incidents/99999999999999999999999",
])
def test_an_id_beyond_the_column_range_is_not_found(api: ApiClient, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 404 and r.get_json()["error"] == "Not Found"


def _cursor(values: list) -> str:
    import base64

    import orjson

    return base64.urlsafe_b64encode(orjson.dumps({"q": "x", "v": values})).decode()


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"),
    ("limit=99999999999999999999", "limit"),
    ("kind=gaps", "kind"),
    ("cursor=%25%25%25", "cursor"),
    (f"cursor={_cursor([2**40, 1, 'EVID-001'])}", "cursor"),
    ("from=99999-01-01T00:00:00Z", "from"),
    ("to=9999-12-31T23:59:59-23:59", "to"),
    ("period=2025-W53", "period"),
])
def test_out_of_range_parameters_are_named(api: ApiClient, query: str, field: str) -> None:
    r = api.get(f"/api/v1/gaps?{query}")
    assert r.status_code == 400 and field in r.get_json()["fields"]


@pytest.mark.parametrize("url", [
    "/api/v1/gaps?source=sn%00prod",
    "/api/v1/gaps?check=EVID-001%00",
    "/api/v1/deadlines?source=%00",
    "/api/v1/incidents/by-number/INC%0000001",
])
def test_a_nul_byte_is_refused_by_name(api: ApiClient, url: str) -> None:
    r = api.get(url)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert "NUL" in str(r.get_json()["fields"])


def test_an_unreachable_database_is_503_with_retry_after(tmp_path: Path) -> None:
    # a real PostgreSQL URL nothing listens on: connection refused
    cfg = make_config("postgresql://postgres@127.0.0.1:1/gapbridge", tmp_path / "instance")
    app = create_app(gapbridge_config=cfg)
    client = app.test_client()
    for path in ("/api/v1/gaps", "/api/v1/deadlines", "/api/v1/incidents/1", "/api/v1/incidents/by-number/INC0000001",
                 "/api/v1/coverage/controls"):
        # the token cannot be looked up either: that is the database's fault, not the caller's
        r = client.get(path, headers={"Authorization": "Bearer gbt_" + "x" * 43})
        assert r.status_code == 503, (path, r.status_code, r.get_data(as_text=True)[:200])
        assert r.headers["Retry-After"] == "30" and r.get_json()["error"] == "Service Unavailable"
        assert "127.0.0.1" not in r.get_data(as_text=True)  # no connection detail leaks
    health = client.get("/healthz")
    assert health.status_code == 503 and health.get_json()["database"] == "unavailable"


@pytest.mark.parametrize("url", ["/api/v1/gaps?severty=high", "/api/v1/deadlines?due=2026-12-01T00:00:00Z"])
def test_an_unknown_query_parameter_is_named_not_ignored(api: ApiClient, url: str) -> None:
    """A typo must not silently widen a query."""
    r = api.get(url)
    name = url.split("?")[1].split("=")[0]
    assert r.status_code == 400 and r.get_json()["fields"] == {name: ["Unknown field."]}


def test_unknown_paths_and_methods_answer_json(api: ApiClient) -> None:
    client = api.app.test_client()
    r = api.get("/api/v1/no-such-thing")
    assert r.status_code == 404 and r.is_json and r.get_json()["error"] == "Not Found"
    r = client.delete("/api/v1/gaps", headers=api.headers)
    assert r.status_code == 405 and r.is_json and "GET" in r.get_json()["allowed"] and "GET" in r.headers["Allow"]
    assert not client.get("/no-such-page").is_json  # outside the API, Flask's own page
