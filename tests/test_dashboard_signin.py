"""Dashboard sign-in: accounts and their CLI, sign-in and lock-out, sessions and their ends, CSRF, redirects, roles, headers, the key."""

from __future__ import annotations

import json
import logging
import re
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from click.testing import CliRunner, Result
from flask import Flask, render_template_string
from flask.testing import FlaskClient
from flask_migrate import downgrade, upgrade

from plugin.cli import main
from plugin.config import ConfigError, load_config, redact
from plugin.extensions import db
from plugin.models import AuditEvent, DashboardUser, utcnow
from plugin.services import tokens, users
from plugin.web.dashboard.security import SECRET_KEY_FILE, dashboard_state
from plugin.web.dashboard.signin import RISK_WRITE, safe_next, signed_in

PASSWORD = "correct horse battery staple"
COOKIE = "gapbridge_dashboard"


# --- fixtures and helpers ----------------------------------------------------------------------


class Clock:
    """The time the dashboard sees: moved by the test, never slept through."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class CountingHasher(PasswordHasher):
    """Cheap parameters (the suite hashes often) and a count of verifications."""

    original: PasswordHasher | None = None  # the one production uses, put aside

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified += 1
        return super().verify(hash, password)


@pytest.fixture(autouse=True)
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    fast = CountingHasher()
    fast.original = users.HASHER
    monkeypatch.setattr(users, "HASHER", fast)
    return fast


@pytest.fixture
def clock() -> Clock:
    # the real time (whole seconds, as sessions count them), so the CLI's changes and the dashboard's agree on what is past
    return Clock(utcnow().replace(microsecond=0))


@pytest.fixture
def app(app_factory: Any, clock: Clock) -> Flask:
    app = app_factory()
    dashboard_state(app).clock = clock
    with_test_views(app)
    return app


def with_test_views(app: Flask) -> None:
    """Views of the kinds the page authors write: one for everyone signed in, one for those who accept risks.

    Under /dashboard, so the session cookie reaches them; on the app, because the blueprint was registered already.
    """
    page = ('{% extends "base.html" %}{% block content %}<p id="who">{{ dashboard_user.username }}:{{ dashboard_user.role }}:'
            '{{ can_accept_risks }}</p>{% endblock %}')

    @signed_in()
    def read() -> Any:
        return render_template_string(page)

    @signed_in(RISK_WRITE)
    def write() -> Any:
        return render_template_string(page)

    @signed_in("auditor")
    def auditors() -> Any:
        return "auditors"

    app.add_url_rule("/dashboard/t/read", "t_read", read)
    app.add_url_rule("/dashboard/t/write", "t_write", write)
    app.add_url_rule("/dashboard/t/auditors", "t_auditors", auditors)


def make_user(app: Flask, name: str = "alice", role: str = "auditor", password: str = PASSWORD) -> None:
    with app.app_context():
        users.create(name, role, password, "test")


def csrf_of(client: FlaskClient, path: str = "/dashboard/login") -> str:
    page = client.get(path)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def sign_in(client: FlaskClient, username: str = "alice", password: str = PASSWORD, next: str | None = None) -> Any:
    data = {"username": username, "password": password, "csrf_token": csrf_of(client)}
    if next is not None:
        data["next"] = next
    return client.post("/dashboard/login", data=data)


def signed_in_as(client: FlaskClient) -> str | None:
    r = client.get("/dashboard/t/read")
    if r.status_code == 302:
        return None
    assert r.status_code == 200, r.text
    return re.search(r'<p id="who">([^<]*)</p>', r.text).group(1).split(":")[0]  # type: ignore[union-attr]


def user_row(app: Flask, name: str = "alice") -> DashboardUser:
    with app.app_context():
        user = db.session.scalars(sa.select(DashboardUser).where(DashboardUser.username == name)).one()
        db.session.expunge(user)
        return user


def locked_until(app: Flask) -> datetime:
    until = user_row(app).locked_until
    assert until is not None
    return until


def audit_events(app: Flask, prefix: str = "dashboard") -> list[tuple[str, str, dict[str, Any]]]:
    with app.app_context():
        rows = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action.startswith(prefix)).order_by(AuditEvent.seq))
        return [(e.action, e.actor, dict(e.details)) for e in rows]


def cli(app: Flask, tmp_path: Path, *args: str, input: str | None = None) -> Result:
    path = tmp_path / "gapbridge.yaml"
    path.write_text(f"database_url: '{app.config['SQLALCHEMY_DATABASE_URI']}'\ninstance_path: '{tmp_path / 'cli-instance'}'\n")
    return CliRunner().invoke(main, ["--config", str(path), *args], input=input)


def refused_page(text: str) -> str:
    """A refusal page without what differs between two requests anyway: the CSRF token and the name typed."""
    text = re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token" value=""', text)
    return re.sub(r'name="username" value="[^"]*"', 'name="username" value=""', text)


# --- signing in ---------------------------------------------------------------------------------


def test_sign_in_with_the_right_password_lands_on_next_and_shows_the_user(app: Flask, client: FlaskClient, clock: Clock) -> None:
    make_user(app, "Alice", "isms_manager")
    assert client.get("/dashboard/t/read").status_code == 302
    r = sign_in(client, "ALICE", next="/dashboard/kpis?period=2026-Q3")
    assert r.status_code == 303 and r.headers["Location"] == "/dashboard/kpis?period=2026-Q3"
    page = client.get("/dashboard/t/read")
    assert '<p id="who">alice:isms_manager:True</p>' in page.text
    # the layout: the user, the role, a sign-out form carrying the CSRF token, and the navigation
    assert "ISMS manager" in page.text
    assert re.search(r'<form class="inline" method="post" action="/dashboard/logout"><input type="hidden" name="csrf_token" value="[^"]+">',
                     page.text)
    for href in ("/dashboard/", "/dashboard/heatmap", "/dashboard/kpis", "/dashboard/maturity", "/dashboard/risks"):
        assert f'href="{href}"' in page.text
    assert user_row(app).last_sign_in_at == clock.now
    # the sign-in page sends a signed-in user on
    again = client.get("/dashboard/login?next=/dashboard/heatmap")
    assert again.status_code == 302 and again.headers["Location"] == "/dashboard/heatmap"


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(app: Flask, client: FlaskClient, hasher: CountingHasher) -> None:
    make_user(app)
    wrong = sign_in(client, "alice", "not the password at all")
    before = hasher.verified
    unknown = sign_in(client, "mallory", PASSWORD)
    assert wrong.status_code == unknown.status_code == 200
    assert users.REFUSED_MESSAGE in wrong.text
    assert refused_page(wrong.text) == refused_page(unknown.text)
    assert hasher.verified == before + 1  # an unknown name costs a hash verification too: its answer is no quicker
    assert signed_in_as(client) is None
    reasons = [(d["username"], d["reason"]) for action, _, d in audit_events(app) if action == "dashboard.sign_in_refused"]
    assert reasons == [("alice", "wrong_password"), ("mallory", "unknown_user")]


def test_five_failures_lock_the_account_and_each_further_one_doubles_the_lock(app: Flask, client: FlaskClient, clock: Clock) -> None:
    make_user(app)
    start = clock.now
    for _ in range(4):
        sign_in(client, password="wrong password #1")
    assert user_row(app).locked_until is None
    sign_in(client, password="wrong password #5")
    assert user_row(app).locked_until == start + timedelta(minutes=1)
    # while locked even the right password is refused, with the same words, and the attempt is not counted
    clock.advance(seconds=30)
    r = sign_in(client)
    assert r.status_code == 200 and users.REFUSED_MESSAGE in r.text and signed_in_as(client) is None
    assert user_row(app).failed_attempts == 5
    # once the lock runs out, each failure locks again, twice as long
    for minutes in (2, 4, 8):
        clock.now = locked_until(app) + timedelta(seconds=1)
        sign_in(client, password="yet another wrong one")
        assert user_row(app).locked_until == clock.now + timedelta(minutes=minutes)
    clock.now = locked_until(app) + timedelta(seconds=1)
    assert sign_in(client).status_code == 303
    row = user_row(app)
    assert (row.failed_attempts, row.locked_until) == (0, None)
    locks = [d["seconds"] for action, _, d in audit_events(app) if action == "dashboard_user.locked"]
    assert locks == [60, 120, 240, 480]
    refused = [d["reason"] for action, _, d in audit_events(app) if action == "dashboard.sign_in_refused"]
    assert refused == ["wrong_password"] * 5 + ["locked"] + ["wrong_password"] * 3


def test_the_lock_doubles_up_to_an_hour() -> None:
    assert [users.lock_duration(n) for n in range(1, 5)] == [None] * 4
    assert [users.lock_duration(n) for n in range(5, 13)] == [timedelta(minutes=m) for m in (1, 2, 4, 8, 16, 32, 60, 60)]
    assert users.lock_duration(10_000) == timedelta(hours=1)


def test_unlock_through_the_cli_lets_a_locked_user_in_at_once(app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    make_user(app)
    for _ in range(5):
        sign_in(client, password="wrong password")
    assert sign_in(client).status_code == 200  # locked
    result = cli(app, tmp_path, "users", "unlock", "Alice")
    assert result.exit_code == 0, result.output
    assert "unlocked dashboard user 'alice'" in result.output
    assert sign_in(client).status_code == 303
    unlocked = [(actor, d) for action, actor, d in audit_events(app, "dashboard_user.") if action == "dashboard_user.unlocked"]
    assert len(unlocked) == 1 and unlocked[0][0].startswith("cli")
    assert unlocked[0][1] == {"username": "alice", "failed_attempts": 5, "was_locked": True}
    assert "was not locked" in cli(app, tmp_path, "users", "unlock", "alice").output


def test_a_disabled_user_cannot_sign_in_and_their_session_ends(app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    make_user(app)
    assert sign_in(client).status_code == 303
    assert cli(app, tmp_path, "users", "disable", "alice").exit_code == 0
    assert signed_in_as(client) is None
    r = sign_in(client)
    assert r.status_code == 200 and users.REFUSED_MESSAGE in r.text
    assert audit_events(app)[-1][2]["reason"] == "disabled"
    assert cli(app, tmp_path, "users", "enable", "alice").exit_code == 0
    assert sign_in(client).status_code == 303 and signed_in_as(client) == "alice"


# --- sessions -----------------------------------------------------------------------------------


def test_a_new_password_ends_the_sessions_of_before(app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    make_user(app)
    sign_in(client)
    assert signed_in_as(client) == "alice"
    result = cli(app, tmp_path, "users", "set-password", "alice", "--password-stdin", input="a brand new passphrase\n")
    assert result.exit_code == 0, result.output
    assert signed_in_as(client) is None
    assert sign_in(client).status_code == 200  # the old password
    assert sign_in(client, password="a brand new passphrase").status_code == 303


def test_an_idle_session_ends_and_so_does_a_busy_one_after_its_lifetime(app: Flask, client: FlaskClient, clock: Clock) -> None:
    make_user(app)
    sign_in(client)
    clock.advance(minutes=29)
    assert signed_in_as(client) == "alice"
    clock.advance(minutes=29)  # idle 29 minutes again: the request before counted
    assert signed_in_as(client) == "alice"
    clock.advance(minutes=30)
    r = client.get("/dashboard/t/read")
    assert r.status_code == 302 and r.headers["Location"] == "/dashboard/login?next=/dashboard/t/read"

    sign_in(client)
    signed_in_at = clock.now
    for _ in range(40):  # every 20 minutes, never idle, until the session ends
        clock.advance(minutes=20)
        if signed_in_as(client) is None:
            break
    assert clock.now - signed_in_at == timedelta(hours=12)


def test_sign_out_ends_the_session_and_a_copy_of_its_cookie(app: Flask, client: FlaskClient) -> None:
    make_user(app)
    sign_in(client)
    copy = client.get_cookie(COOKIE, path="/dashboard")
    assert copy is not None
    token = csrf_of(client, "/dashboard/t/read")
    r = client.post("/dashboard/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["Location"] == "/dashboard/login"
    assert "You are signed out." in client.get("/dashboard/login").text
    assert signed_in_as(client) is None
    client.set_cookie(COOKIE, copy.value, path="/dashboard")
    assert signed_in_as(client) is None
    assert [a for a, _, _ in audit_events(app, "dashboard.")] == ["dashboard.signed_in", "dashboard.signed_out"]


def test_the_sign_in_page_gives_a_new_csrf_token_after_sign_in(app: Flask, client: FlaskClient) -> None:
    make_user(app)
    before = csrf_of(client)
    sign_in(client)
    assert csrf_of(client, "/dashboard/t/read") != before


# --- CSRF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong", "ünïcödé"])
def test_a_post_without_the_right_csrf_token_is_refused_and_changes_nothing(app: Flask, client: FlaskClient, token: str | None) -> None:
    make_user(app)
    data = {"username": "alice", "password": PASSWORD} | ({"csrf_token": token} if token is not None else {})
    csrf_of(client)  # the session has a token; the form does not send it
    r = client.post("/dashboard/login", data=data)
    assert r.status_code == 400 and "Form refused" in r.text
    assert signed_in_as(client) is None and user_row(app).last_sign_in_at is None
    sign_in(client)
    r = client.post("/dashboard/logout", data={} if token is None else {"csrf_token": token})
    assert r.status_code == 400
    assert signed_in_as(client) == "alice"
    assert [a for a, _, _ in audit_events(app, "dashboard.")] == ["dashboard.signed_in"]


def test_the_api_takes_no_csrf_token_and_sets_no_cookie(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        plaintext = tokens.create("manager", "isms_manager", utcnow() + timedelta(days=30), "test")[1]
    r = client.post("/api/v1/risk-acceptances", json={}, headers={"Authorization": f"Bearer {plaintext}"})
    assert r.status_code == 400 and r.is_json and "fields" in r.get_json()  # the API's own validation, not the dashboard's refusal
    assert "Set-Cookie" not in r.headers
    assert "Content-Security-Policy" not in r.headers


# --- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "//evil.example", "//evil.example/dashboard/", "https://evil.example/dashboard/", "/\\evil.example", "\\\\evil.example",
    "/dashboard/../api/v1/gaps", "/dashboard/%2e%2e/api", "/api/v1/gaps", "javascript:alert(1)", "/dashboardx", "/dash\tboard/",
    "dashboard/heatmap", "/dashboard/\nSet-Cookie:x", "",
])
def test_next_outside_the_dashboard_is_ignored(target: str) -> None:
    assert safe_next(target) == "/dashboard/"


@pytest.mark.parametrize("target", ["/dashboard/", "/dashboard", "/dashboard/heatmap?control=A.5.24&period=2026-Q3"])
def test_next_inside_the_dashboard_is_followed(target: str) -> None:
    assert safe_next(target) == target


def test_sign_in_does_not_redirect_off_site(app: Flask, client: FlaskClient) -> None:
    make_user(app)
    r = sign_in(client, next="//evil.example")
    assert r.status_code == 303 and r.headers["Location"] == "/dashboard/"
    assert 'value="//evil.example"' not in client.get("/dashboard/login?next=//evil.example").text


def test_the_dashboard_home_needs_a_sign_in(app: Flask, client: FlaskClient) -> None:
    r = client.get("/dashboard/")
    assert r.status_code == 302 and r.headers["Location"] == "/dashboard/login?next=/dashboard/"


# --- roles --------------------------------------------------------------------------------------


def test_roles_auditors_read_only_managers_and_admins_write_admins_everywhere(app: Flask, client: FlaskClient) -> None:
    r = client.get("/dashboard/t/write?x=1")
    assert r.status_code == 302 and r.headers["Location"] == "/dashboard/login?next=/dashboard/t/write?x%3D1"
    for name, role in (("ann", "auditor"), ("max", "isms_manager"), ("ada", "admin")):
        make_user(app, name, role)
    expected = {"ann": (200, 403, 200), "max": (200, 200, 403), "ada": (200, 200, 200)}
    for name, codes in expected.items():
        c = app.test_client()
        sign_in(c, name)
        got = tuple(c.get(p).status_code for p in ("/dashboard/t/read", "/dashboard/t/write", "/dashboard/t/auditors"))
        assert got == codes, name
    c = app.test_client()
    sign_in(c, "ann")
    forbidden = c.get("/dashboard/t/write")
    assert "This page needs the role ISMS manager or Administrator" in forbidden.text and "ann" in forbidden.text
    assert forbidden.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert '<p id="who">ann:auditor:False</p>' in c.get("/dashboard/t/read").text
    assert signed_in("isms_manager")(lambda: None).required_roles == {"isms_manager", "admin"}  # type: ignore[attr-defined]


# --- cookies, headers, the key -------------------------------------------------------------------


def test_the_session_cookie_is_secure_httponly_samesite_and_kept_to_the_dashboard(app: Flask, client: FlaskClient) -> None:
    make_user(app)
    r = sign_in(client)
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith(f"{COOKIE}="))
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite", "path"} <= set(flags)
    assert flags["samesite"] == "SameSite=Lax" and flags["path"] == "Path=/dashboard"
    assert "expires" not in flags  # it ends with the browser; the server ends it sooner


def test_cookie_secure_false_is_an_explicit_setting(app_factory: Any) -> None:
    app = app_factory(dashboard={"cookie_secure": False})
    make_user(app)
    cookie = app.test_client().get("/dashboard/login").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" not in cookie


def test_dashboard_answers_carry_the_security_headers(app: Flask, client: FlaskClient) -> None:
    for path, status in (("/dashboard/login", 200), ("/dashboard/no-such-page", 404), ("/dashboard/static/dashboard.css", 200)):
        r = client.get(path)
        r.close()  # a static file is sent from an open file
        assert r.status_code == status
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert (r.headers["X-Frame-Options"], r.headers["X-Content-Type-Options"], r.headers["Referrer-Policy"]) == (
            "DENY", "nosniff", "same-origin")
    assert client.get("/dashboard/login").headers["Cache-Control"] == "no-store"
    with client.get("/dashboard/static/dashboard.css") as css:
        assert "no-store" not in css.headers.get("Cache-Control", "") and "color" in css.get_data(as_text=True)
    assert "Content-Security-Policy" not in client.get("/healthz").headers


def test_the_secret_key_is_made_once_in_a_0600_file_and_kept_across_restarts(app_factory: Any, tmp_path: Path,
                                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    first = app_factory()
    key_file = tmp_path / "instance" / SECRET_KEY_FILE
    assert not key_file.exists()  # made by the first dashboard request, not by every command that builds the app
    first.test_client().get("/healthz")
    assert not key_file.exists()
    first.test_client().get("/dashboard/login")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == first.secret_key and len(first.secret_key) >= 32  # type: ignore[arg-type]
    make_user(first)
    client = first.test_client()
    sign_in(client)
    second = app_factory()  # a restart, or another worker of the host
    with_test_views(second)
    moved = second.test_client()
    moved.set_cookie(COOKIE, client.get_cookie(COOKIE, path="/dashboard").value, path="/dashboard")  # type: ignore[union-attr]
    assert signed_in_as(moved) == "alice"
    assert second.secret_key == first.secret_key
    assert str(first.secret_key) not in caplog.text


def test_the_secret_key_from_the_environment_or_the_configuration(app_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_config = app_factory(dashboard={"secret_key": "c" * 40})
    assert from_config.config["SECRET_KEY"] == "c" * 40
    monkeypatch.setenv("GAPBRIDGE_SECRET_KEY", "e" * 40)
    assert app_factory(dashboard={"secret_key": "c" * 40}).config["SECRET_KEY"] == "e" * 40  # the environment wins, as elsewhere
    assert not (tmp_path / "instance" / SECRET_KEY_FILE).exists()
    monkeypatch.setenv("GAPBRIDGE_SECRET_KEY", "short")
    with pytest.raises(ConfigError, match="GAPBRIDGE_SECRET_KEY: at least 32 characters"):
        app_factory()


def test_dashboard_settings_are_validated_and_the_key_is_redacted(tmp_path: Path) -> None:
    path = tmp_path / "gapbridge.yaml"
    path.write_text("dashboard:\n  secret_key: too-short\n  idle_timeout_minutes: 0\n  colour: blue\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert f"{path}:2: dashboard.secret_key: at least 32 characters" in message
    assert "dashboard.idle_timeout_minutes:" in message and "dashboard.colour: unknown key" in message
    assert "too-short" not in message
    path.write_text("dashboard:\n  secret_key: ${KEY}\n")
    cfg = load_config(path, env={"KEY": "k" * 40})
    assert cfg["dashboard"] == {"enabled": True, "secret_key": "k" * 40, "cookie_secure": True, "idle_timeout_minutes": 30,
                                "session_lifetime_hours": 12}
    assert redact(cfg)["dashboard"]["secret_key"] == "***"


def test_dashboard_enabled_false_serves_no_dashboard(app_factory: Any, tmp_path: Path) -> None:
    app = app_factory(dashboard={"enabled": False})
    assert app.test_client().get("/dashboard/login").status_code == 404
    assert app.test_client().get("/healthz").status_code == 200
    assert not (tmp_path / "instance" / SECRET_KEY_FILE).exists()


# --- the audit log and secrets --------------------------------------------------------------------


def test_sign_in_events_are_audited_without_the_password(app: Flask, client: FlaskClient, clock: Clock) -> None:
    make_user(app)
    for _ in range(5):
        sign_in(client, password="a wrong guess 123")
    clock.now = locked_until(app) + timedelta(seconds=1)
    sign_in(client)
    client.post("/dashboard/logout", data={"csrf_token": csrf_of(client, "/dashboard/t/read")})
    events = audit_events(app)
    assert [a for a, _, _ in events] == ["dashboard_user.created"] + ["dashboard.sign_in_refused"] * 5 + [
        "dashboard_user.locked", "dashboard.signed_in", "dashboard.signed_out"]
    assert {actor for action, actor, _ in events if action.startswith("dashboard.")} == {"dashboard:alice"}
    assert events[1][2]["reason"] == "wrong_password" and events[1][2]["remote_addr"] == "127.0.0.1"
    text = json.dumps(events)
    assert "a wrong guess" not in text and PASSWORD not in text and "$argon2" not in text


def test_no_password_or_hash_reaches_a_log_line_or_the_cli(app: Flask, client: FlaskClient, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outputs = [cli(app, tmp_path, "users", "create", "bob", "--role", "admin", input=f"{PASSWORD}\n{PASSWORD}\n")]
    sign_in(client, "bob", "typed into the wrong box")
    sign_in(client, "Typed Into The Name Box!", PASSWORD)  # a password typed into the name field is not recorded either
    sign_in(client, "bob")
    outputs += [cli(app, tmp_path, "users", "list"), cli(app, tmp_path, "users", "list", "--json"),
                cli(app, tmp_path, "users", "set-password", "bob", input="another long passphrase\n" * 2)]
    stored = user_row(app, "bob").password_hash
    assert stored.startswith("$argon2id$")
    seen = caplog.text + "".join(r.output for r in outputs) + json.dumps(audit_events(app, ""))
    for secret in (PASSWORD, "typed into the wrong box", "another long passphrase", stored, stored.split("$")[-1], "Typed Into"):
        assert secret not in seen
    assert "bob" in caplog.text  # the log does tell who


def test_production_hashes_are_argon2id_at_the_library_defaults(hasher: CountingHasher) -> None:
    from argon2 import Type

    production, default = hasher.original, PasswordHasher()
    assert production is not None and production.type is Type.ID
    assert (production.time_cost, production.memory_cost, production.parallelism) == (
        default.time_cost, default.memory_cost, default.parallelism)
    assert production.memory_cost >= 19 * 1024  # OWASP's floor for argon2id, in KiB


# --- the CLI ------------------------------------------------------------------------------------


def test_users_create_asks_twice_or_reads_stdin_and_lists_without_hashes(app: Flask, tmp_path: Path) -> None:
    r = cli(app, tmp_path, "users", "create", "Carol", "--role", "isms_manager", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    assert "Password: " in r.output and "Repeat it: " in r.output and PASSWORD not in r.output
    assert "created dashboard user 'carol' (isms_manager)" in r.output
    r = cli(app, tmp_path, "users", "create", "dave", "--role", "auditor", "--password-stdin", input=f"{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    listed = cli(app, tmp_path, "users", "list")
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split()[:3] == ["USERNAME", "ROLE", "STATUS"]
    assert [line.split()[:3] for line in lines[1:]] == [["carol", "isms_manager", "active"], ["dave", "auditor", "active"]]
    rows = json.loads(cli(app, tmp_path, "users", "list", "--json").output)
    assert [r["username"] for r in rows] == ["carol", "dave"] and all("hash" not in "".join(r) for r in rows)
    assert [(a, d) for a, _, d in audit_events(app, "dashboard_user.")] == [
        ("dashboard_user.created", {"username": "carol", "role": "isms_manager"}),
        ("dashboard_user.created", {"username": "dave", "role": "auditor"})]


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("create", "eve", "--role", "auditor", "--password-stdin"), "short\n", "the password is too short: at least 12 characters"),
    (("create", "eve.example.org", "--role", "auditor", "--password-stdin"), "EVE.example.org\n", "the password must not be the username"),
    (("create", "eve", "--role", "root", "--password-stdin"), f"{PASSWORD}\n", "unknown role 'root'; roles: auditor, isms_manager, admin"),
    (("create", "ALICE", "--role", "auditor", "--password-stdin"), f"{PASSWORD}\n", "a dashboard user 'alice' already exists"),
    (("create", "9lives", "--role", "auditor", "--password-stdin"), f"{PASSWORD}\n", "invalid username '9lives'"),
    (("disable", "nobody"), None, "no dashboard user 'nobody'"),
    (("enable", "nobody"), None, "no dashboard user 'nobody'"),
    (("enable", "alice"), None, "dashboard user 'alice' is not disabled"),
    (("set-password", "nobody", "--password-stdin"), f"{PASSWORD}\n", "no dashboard user 'nobody'"),
    (("set-password", "alice", "--password-stdin"), "Alice\n", "the password is too short"),
    (("unlock", "nobody"), None, "no dashboard user 'nobody'"),
])
def test_users_errors_are_one_line_with_exit_2_and_change_nothing(app: Flask, tmp_path: Path, args: tuple[str, ...], stdin: str | None,
                                                                  message: str) -> None:
    make_user(app)
    before = audit_events(app, "")
    r = cli(app, tmp_path, "users", *args, input=stdin)
    assert r.exit_code == 2, r.output
    assert r.output.strip().count("\n") == 0 and r.output.startswith("gapbridge: ") and message in r.output
    assert audit_events(app, "") == before


def test_users_disable_enable_set_password_are_audited(app: Flask, tmp_path: Path) -> None:
    make_user(app)
    for args, stdin in ((("disable", "alice"), None), (("enable", "alice"), None),
                        (("set-password", "alice", "--password-stdin"), "a different passphrase\n")):
        assert cli(app, tmp_path, "users", *args, input=stdin).exit_code == 0
    again = cli(app, tmp_path, "users", "enable", "alice")
    assert again.exit_code == 2
    events = audit_events(app, "dashboard_user.")
    assert [a for a, _, _ in events] == ["dashboard_user.created", "dashboard_user.disabled", "dashboard_user.enabled",
                                         "dashboard_user.password_changed"]
    assert all(actor.startswith("cli") for _, actor, _ in events[1:])
    assert user_row(app).session_generation == 3  # disabling and the new password each ended the sessions


# --- the migration ---------------------------------------------------------------------------------


def test_0010_makes_dashboard_users_and_keeps_names_lowercase(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        downgrade(revision="0009")
        try:
            assert "dashboard_users" not in sa.inspect(db.engine).get_table_names()
        finally:
            upgrade()
        assert "dashboard_users" in sa.inspect(db.engine).get_table_names()
        row = ("INSERT INTO dashboard_users (username, role, password_hash, created_at, created_by, failed_attempts, "
               "password_changed_at, session_generation) VALUES (:name, :role, 'h', CURRENT_TIMESTAMP, 't', 0, CURRENT_TIMESTAMP, 1)")
        db.session.execute(sa.text(row), {"name": "alice", "role": "auditor"})
        db.session.commit()
        for name, role in (("Alice2", "auditor"), ("alice", "auditor"), ("bob", "root")):
            with pytest.raises(sa.exc.IntegrityError):
                db.session.execute(sa.text(row), {"name": name, "role": role})
                db.session.commit()
            db.session.rollback()
