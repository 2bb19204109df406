"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright (pointed at the system browser; it
downloads none), against a server this test starts on demo data synced from the demo ITSM.

Screenshots of every page are written under the test's output folder (``screenshots/``; the path is printed) for a
person to look at.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask

from demo_itsm import DemoITSM
from plugin.config import demo_config
from plugin.services import users
from plugin.services.pipeline import run_pass
from plugin.state import gapbridge

from .apiclient import ApiClient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is a test dependency: pip install -e '.[test]'")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)")]

PASSWORD = "a long passphrase for the browser"
SCREENS = ("overview", "heatmap", "heatmap-cell", "control", "incident", "kpis", "maturity", "risks", "risks-auditor", "sign-in")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, _migrated: str) -> Iterator[tuple[str, Flask]]:
    """The app on demo data, served on loopback in a thread, with an ISMS manager and an auditor."""
    from werkzeug.serving import make_server

    from plugin import create_app

    from .conftest import empty_tables, make_config

    work = tmp_path_factory.mktemp("browser")
    with DemoITSM(work / "itsm.sqlite", size=150) as itsm:
        demo = demo_config(itsm.url, work)
        config = make_config(_migrated, work / "instance", connectors=demo["connectors"], mappings=demo["mappings"])
        app = create_app(gapbridge_config=config)
        with app.app_context():
            result = run_pass(gapbridge(app), write_back_after=True)
            assert result.ok, result
            users.create("manager", "isms_manager", PASSWORD, "test")
            users.create("auditor", "auditor", PASSWORD, "test")
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}", app
        finally:
            server.shutdown()
            server.server_close()
            empty_tables(app)
            from plugin.extensions import db

            with app.app_context():  # the pool's connections closed now, not by the collector during a later test
                db.session.remove()
                db.engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("screenshots", numbered=False)
    print(f"\nscreenshots of the dashboard: {folder}")
    return folder


def signed_in_page(browser: Any, base: str, name: str) -> Any:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)  # a CSP refusal shows here
    page.goto(f"{base}/dashboard/")
    assert "/dashboard/login" in page.url
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard/")
    page.console_errors = errors
    return page


def number(text: str) -> int:
    return int(re.sub(r"[^\d]", "", text.split()[0]))


def test_a_wrong_password_is_refused_and_the_right_one_signs_in(served: tuple[str, Flask], browser: Any, screenshots: Path) -> None:
    base, _ = served
    page = browser.new_page()
    page.goto(f"{base}/dashboard/heatmap")
    assert "/dashboard/login" in page.url
    page.fill("input[name=username]", "manager")
    page.fill("input[name=password]", "not the password at all")
    page.click("button[type=submit]")
    assert "Wrong username or password" in page.inner_text("body")
    assert "/dashboard/login" in page.url
    page.screenshot(path=str(screenshots / "sign-in.png"), full_page=True)
    page.fill("input[name=username]", "manager")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/heatmap$"))  # back where it was going
    assert "manager" in page.inner_text(".user-menu")
    page.click("text=Sign out")
    page.goto(f"{base}/dashboard/")
    assert "/dashboard/login" in page.url
    page.context.close()


def test_every_page_shows_the_apis_numbers(served: tuple[str, Flask], browser: Any, screenshots: Path) -> None:
    base, app = served
    api = ApiClient(app)
    page = signed_in_page(browser, base, "manager")
    coverage = api.json("/api/v1/coverage/controls?limit=200")
    assert number(page.inner_text("#card-in-scope .kpi-value")) == coverage["incidents_in_scope"] == 150
    open_gaps = len(api.pages("/api/v1/gaps?status=open&limit=200"))
    assert number(page.inner_text("#card-open-gaps .kpi-value")) == open_gaps > 0
    page.screenshot(path=str(screenshots / "overview.png"), full_page=True)

    worst = max(coverage["items"], key=lambda i: i["failed"])
    page.goto(f"{base}/dashboard/controls/{worst['key']}")
    assert number(page.inner_text("#control-failing")) == worst["failed"]
    assert number(page.inner_text("#control-applicable")) == worst["in_scope"]
    page.screenshot(path=str(screenshots / "control.png"), full_page=True)

    first = page.locator("#population tbody tr").first
    incident_id = int(first.get_attribute("data-incident"))
    first.locator("th a").first.click()
    page.wait_for_url(f"{base}/dashboard/incidents/{incident_id}")
    detail = api.json(f"/api/v1/incidents/{incident_id}")
    assert number(page.inner_text("#incident-open-gaps")) == detail["open_gaps"]
    assert page.locator("#incident-findings tbody tr[data-check]").count() == len(detail["findings"])
    page.screenshot(path=str(screenshots / "incident.png"), full_page=True)

    page.goto(f"{base}/dashboard/kpis")
    assert "Time to resolve" in page.inner_text("main") and page.locator("main svg").count() >= 3
    page.screenshot(path=str(screenshots / "kpis.png"), full_page=True)
    page.goto(f"{base}/dashboard/maturity")
    assert "unknown" in page.inner_text("main")
    page.screenshot(path=str(screenshots / "maturity.png"), full_page=True)
    page.goto(f"{base}/dashboard/risks")
    assert page.locator("#accept-form").count() == 1
    page.screenshot(path=str(screenshots / "risks.png"), full_page=True)
    assert page.console_errors == []  # no script or style refused by the CSP, no asset missing
    page.context.close()


def test_a_heatmap_cell_click_reaches_its_population(served: tuple[str, Flask], browser: Any, screenshots: Path) -> None:
    base, app = served
    page = signed_in_page(browser, base, "auditor")
    page.goto(f"{base}/dashboard/heatmap")
    page.screenshot(path=str(screenshots / "heatmap.png"), full_page=True)
    cells = page.locator("svg a")
    assert cells.count() > 10
    # the cell with the most failing incidents, as the table beside the chart gives it
    rows = page.locator("table.heatmap-cells tbody tr")
    assert rows.count() > 0
    target = None
    for n in range(cells.count()):
        href = cells.nth(n).get_attribute("href") or cells.nth(n).get_attribute("xlink:href") or ""
        if "subprocess=" in href:
            target = cells.nth(n)
            break
    assert target is not None
    target.click()
    page.wait_for_url(re.compile(r".*/dashboard/heatmap/cell\?.*"))
    asked = parse_qs(urlsplit(page.url).query)
    subprocess, control = asked["subprocess"][0], asked["control"][0]
    api = ApiClient(app)
    with app.app_context():
        from plugin.models import utcnow
        from plugin.queries.heatmap import heatmap
        from plugin.queries.scope import Scope

        cell = heatmap(gapbridge(app).ruleset, Scope(), utcnow()).cell(subprocess, control)
    assert cell is not None
    assert number(page.inner_text("#cell-applicable")) == cell.applicable
    assert number(page.inner_text("#cell-failing")) == cell.failing
    page.screenshot(path=str(screenshots / "heatmap-cell.png"), full_page=True)
    # "failing" lists exactly the failing incidents of the cell
    page.click("a[href*='outcome=failed']")
    page.wait_for_url(re.compile(r".*outcome=failed.*"))
    assert page.locator("#population tbody tr[data-incident]").count() == min(cell.failing, 50)
    assert api.json("/api/v1/coverage/controls?limit=1")["incidents_in_scope"] == 150
    page.context.close()


def test_filters_change_the_numbers_and_the_url(served: tuple[str, Flask], browser: Any) -> None:
    base, app = served
    page = signed_in_page(browser, base, "auditor")
    before = number(page.inner_text("#card-in-scope .kpi-value"))
    options = [o for o in page.locator("#f-business_unit option").all_inner_texts() if o != "all"]
    assert options
    unit = options[0]
    page.select_option("#f-business_unit", unit)
    page.fill("#f-period", "2026")
    page.click("button:has-text('Apply')")
    page.wait_for_url(re.compile(r".*business_unit=.*"))
    query = parse_qs(urlsplit(page.url).query)
    assert query["business_unit"] == [unit] and query["period"] == ["2026"]
    after = number(page.inner_text("#card-in-scope .kpi-value"))
    expected = ApiClient(app).json(f"/api/v1/coverage/controls?limit=1&business_unit={unit}&period=2026")["incidents_in_scope"]
    assert after == expected < before
    # the URL is the view: opened anew, it shows the same
    fresh = page.context.new_page()
    fresh.goto(page.url)
    assert number(fresh.inner_text("#card-in-scope .kpi-value")) == after
    assert fresh.locator("#f-business_unit").input_value() == unit
    page.context.close()


def test_an_auditor_cannot_reach_the_risk_acceptance_form(served: tuple[str, Flask], browser: Any, screenshots: Path) -> None:
    base, _ = served
    page = signed_in_page(browser, base, "auditor")
    page.goto(f"{base}/dashboard/risks")
    assert page.locator("#accept-form").count() == 0 and page.locator("#read-only").count() == 1
    page.screenshot(path=str(screenshots / "risks-auditor.png"), full_page=True)
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = page.request.post(f"{base}/dashboard/risks", form={"csrf_token": token, "check_id": "EVD-001", "source": "demo",
                                                                    "justification": "an auditor must not be able to do this",
                                                                    "approver": "me", "expires_on": "2030-01-01"})
    assert refused.status == 403
    page.context.close()


def test_every_page_has_its_screenshot(screenshots: Path) -> None:
    """Last in this module: each page's picture is there for review, and is a real image."""
    for name in SCREENS:
        shot = screenshots / f"{name}.png"
        assert shot.exists() and shot.stat().st_size > 10_000, name
