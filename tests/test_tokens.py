"""API tokens: the CLI, only a hash at rest, expiry bounds, authentication, ``require`` on a view, the rate limit, the hourly roll-up."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from flask import Flask, g, jsonify

from plugin.cli import main
from plugin.cli.tokens import parse_expiry
from plugin.extensions import db
from plugin.models import ApiToken, ApiTokenUse, AuditEvent
from plugin.services import tokens
from plugin.services.tokens import Rejected, Rejection, TokenError
from plugin.web.auth import ADMIN, READ, RISK_WRITE, actor, auth_state, require

from .conftest import NOW

TOKEN_RE = re.compile(r"^gbt_[A-Za-z0-9_-]{43}$")


# --- helpers ---------------------------------------------------------------------------------


def cli(app: Flask, tmp_path: Path, *args: str, config: str = "") -> Result:
    """Run ``gapbridge`` against the test database (the app's), with optional extra configuration."""
    path = tmp_path / "gapbridge.yaml"
    path.write_text(f"database_url: '{app.config['SQLALCHEMY_DATABASE_URI']}'\n"
                    f"instance_path: '{tmp_path / 'cli-instance'}'\n{config}")
    return CliRunner().invoke(main, ["--config", str(path), *args])


def make(app: Flask, name: str, role: str = "auditor", expires: timedelta = timedelta(days=30), now: datetime | None = None) -> str:
    with app.app_context():
        return tokens.create(name, role, (now or datetime.now(timezone.utc)) + expires, "test", now)[1]


def every_stored_value(app: Flask) -> list[tuple[str, str, str]]:
    """(table, column, text) for every non-empty value of every column of every table."""
    out: list[tuple[str, str, str]] = []
    with app.app_context():
        for table in db.metadata.sorted_tables:
            for row in db.session.execute(sa.select(table)).mappings():
                out.extend((table.name, col, str(value)) for col, value in row.items() if value is not None)
    return out


def audit_events(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        events = list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))
        db.session.expunge_all()
        return events


def guarded(app: Flask) -> Flask:
    """Three test views, one per kind of permission."""

    @app.get("/t/read")
    @require(READ)
    def read() -> Any:
        return jsonify(name=g.token.name, role=g.token.role, actor=actor())

    @app.post("/t/risk")
    @require(RISK_WRITE)
    def risk() -> Any:
        return jsonify(ok=True)

    @app.post("/t/admin")
    @require(ADMIN)
    def admin() -> Any:
        return jsonify(ok=True)

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def web(app: Flask) -> Flask:
    return guarded(app)


@pytest.fixture
def at_noon(web: Flask) -> Iterator[list[datetime]]:
    """Pin the use recorder's clock (a list to move it): counts land in known hours, no flush starts by itself."""
    clock = [NOW + timedelta(minutes=5)]
    auth_state(web).usage.clock = lambda: clock[0]
    yield clock


# --- the CLI -----------------------------------------------------------------------------------


def test_create_prints_the_token_once_and_stores_only_its_hash(app: Flask, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")  # every statement and its parameters
    result = cli(app, tmp_path, "tokens", "create", "--name", "ext-audit-2026", "--role", "auditor", "--expires", "90d")
    assert result.exit_code == 0, result.output
    plaintext = result.stdout.strip()
    assert result.stdout == plaintext + "\n" and TOKEN_RE.match(plaintext)  # the token alone, for scripts
    assert "not shown again" in result.stderr and plaintext not in result.stderr
    digest = hashlib.sha256(plaintext.encode()).hexdigest()
    with app.app_context():
        token = db.session.scalars(sa.select(ApiToken)).one()
        assert (token.name, token.role, token.token_hash, token.prefix) == ("ext-audit-2026", "auditor", digest, plaintext[:10])
        assert token.created_by.startswith("cli") and token.revoked_at is None
        assert abs(token.expires_at - (datetime.now(timezone.utc) + timedelta(days=90))) < timedelta(minutes=5)
    secret = plaintext[10:]  # beyond the prefix that listings show
    stored = every_stored_value(app)
    assert not [(t, c) for t, c, text in stored if secret in text]
    assert [(t, c) for t, c, text in stored if digest in text] == [("api_tokens", "token_hash")]  # not in the audit log
    assert secret not in caplog.text
    assert "INSERT INTO api_tokens" in caplog.text  # the log scan above saw the statements
    [event] = audit_events(app, "token.created")
    assert event.subject_id == str(token.id) and event.actor == token.created_by
    assert event.details["name"] == "ext-audit-2026" and event.details["role"] == "auditor"


def test_list_shows_every_token_but_never_a_secret(app: Flask, tmp_path: Path) -> None:
    first = make(app, "alpha", "auditor")
    second = make(app, "beta", "isms_manager")
    with app.app_context():
        tokens.revoke("beta", "test")
        hashes = [t.token_hash for t in tokens.list_tokens()]
    table = cli(app, tmp_path, "tokens", "list")
    assert table.exit_code == 0, table.output
    header, *lines = table.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "ROLE", "PREFIX", "STATUS"]
    assert lines[0].split()[:4] == ["alpha", "auditor", first[:10], "active"]
    assert lines[1].split()[:4] == ["beta", "isms_manager", second[:10], "revoked"]
    as_json = cli(app, tmp_path, "tokens", "list", "--json")
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    assert [(r["name"], r["status"], r["prefix"]) for r in rows] == [("alpha", "active", first[:10]), ("beta", "revoked", second[:10])]
    assert set(rows[0]) == {"name", "role", "prefix", "status", "created_at", "created_by", "expires_at", "last_used_at",
                            "revoked_at", "revoked_by"}
    assert rows[1]["revoked_at"] and rows[1]["revoked_by"] == "test" and rows[0]["revoked_at"] is None
    for output in (table.output, as_json.output):
        assert first[10:] not in output and second[10:] not in output
        assert not any(h in output for h in hashes)


def test_revoke_then_revoke_again_or_unknown_exit_2(app: Flask, tmp_path: Path) -> None:
    plaintext = make(app, "gamma")
    result = cli(app, tmp_path, "tokens", "revoke", "gamma")
    assert result.exit_code == 0, result.output
    assert "revoked token 'gamma'" in result.stdout
    with app.app_context():
        assert tokens.authenticate(plaintext) == Rejection(Rejected.REVOKED, tokens.find("gamma"))
    again = cli(app, tmp_path, "tokens", "revoke", "gamma")
    assert again.exit_code == 2 and "token 'gamma' was already revoked on" in again.stderr and "Traceback" not in again.output
    missing = cli(app, tmp_path, "tokens", "revoke", "nobody")
    assert missing.exit_code == 2 and "no token 'nobody'" in missing.stderr
    assert len(audit_events(app, "token.revoked")) == 1  # the refused second revocation wrote nothing


def test_revoke_by_id(app: Flask) -> None:
    make(app, "delta")
    with app.app_context():
        token_id = tokens.find("delta").id  # type: ignore[union-attr]
        assert tokens.revoke(str(token_id), "test").name == "delta"


@pytest.mark.parametrize(("args", "message"), [
    (["--expires", "2020-01-01"], "is not in the future"),
    (["--expires", "366d"], "more than 365 days ahead (api.token_max_days)"),
    (["--expires", "2030-01-01T12:00"], "has no time zone"),
    (["--expires", "soon"], "invalid --expires 'soon'"),
    (["--name", "two words"], "invalid token name 'two words'"),
    (["--name", "1234"], "starting with a letter"),
])
def test_create_refuses_bad_input_with_exit_2(app: Flask, tmp_path: Path, args: list[str], message: str) -> None:
    options = {"--name": "epsilon", "--role": "auditor", "--expires": "30d"}
    options.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = cli(app, tmp_path, "tokens", "create", *[x for kv in options.items() for x in kv])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output and result.stdout == ""
    with app.app_context():
        assert tokens.list_tokens() == []


def test_create_refuses_a_name_in_use_and_an_unknown_role(app: Flask, tmp_path: Path) -> None:
    make(app, "zeta")
    with app.app_context():
        tokens.revoke("zeta", "test")
    result = cli(app, tmp_path, "tokens", "create", "--name", "zeta", "--role", "auditor", "--expires", "30d")
    assert result.exit_code == 2 and "a token named 'zeta' already exists" in result.stderr and result.stdout == ""
    result = cli(app, tmp_path, "tokens", "create", "--name", "eta", "--role", "root", "--expires", "30d")
    assert result.exit_code == 2 and "'root' is not one of 'auditor', 'isms_manager', 'admin'" in result.output


def test_the_configured_maximum_lifetime_applies(app: Flask, tmp_path: Path) -> None:
    args = ("tokens", "create", "--role", "auditor", "--name")
    too_long = cli(app, tmp_path, *args, "theta", "--expires", "31d", config="api:\n  token_max_days: 30\n")
    assert too_long.exit_code == 2 and "more than 30 days ahead" in too_long.stderr
    assert cli(app, tmp_path, *args, "theta", "--expires", "30d", config="api:\n  token_max_days: 30\n").exit_code == 0


def test_expiry_forms() -> None:
    now = datetime(2026, 3, 10, 9, 30, tzinfo=timezone.utc)
    assert parse_expiry("90d", now) == now + timedelta(days=90)
    assert parse_expiry("2027-03-31", now) == datetime(2027, 4, 1, tzinfo=timezone.utc)  # usable through the 31st
    assert parse_expiry("2027-03-31T12:00Z", now) == datetime(2027, 3, 31, 12, 0, tzinfo=timezone.utc)
    assert parse_expiry("2027-03-31T14:00+02:00", now) == datetime(2027, 3, 31, 12, 0, tzinfo=timezone.utc)


# --- the service -------------------------------------------------------------------------------


def test_expiry_must_be_ahead_and_within_the_maximum(app: Flask) -> None:
    with app.app_context():
        for n, (expires, max_days) in enumerate([(NOW + timedelta(seconds=1), 365), (NOW + timedelta(days=365), 365),
                                                 (NOW + timedelta(days=7), 7)]):
            tokens.create(f"ok{n}", "auditor", expires, "test", NOW, max_days=max_days)
        for expires, max_days, message in [(NOW, 365, "is not in the future"), (NOW - timedelta(days=1), 365, "is not in the future"),
                                           (NOW + timedelta(days=365, seconds=1), 365, "more than 365 days ahead"),
                                           (NOW + timedelta(days=8), 7, "more than 7 days ahead"),
                                           (datetime(2027, 1, 1), 365, "needs a time zone")]:
            with pytest.raises(TokenError, match=message):
                tokens.create("bad", "auditor", expires, "test", NOW, max_days=max_days)
        assert [t.name for t in tokens.list_tokens()] == ["ok0", "ok1", "ok2"]


def test_tokens_are_random_and_prefixed(app: Flask) -> None:
    made = {make(app, f"n{i}") for i in range(20)}
    assert len(made) == 20 and all(TOKEN_RE.match(t) for t in made)
    assert len({t[:10] for t in made}) > 1  # the listed prefix tells tokens apart


def test_authenticate_outcomes(app: Flask) -> None:
    good = make(app, "good", now=NOW)
    short = make(app, "short", expires=timedelta(hours=1), now=NOW)
    gone = make(app, "gone", now=NOW)
    with app.app_context():
        tokens.revoke("gone", "test", now=NOW)
        result = tokens.authenticate(good, NOW)
        assert isinstance(result, ApiToken) and result.name == "good"
        assert tokens.authenticate(short, NOW + timedelta(minutes=59)) == tokens.find("short")
        assert tokens.authenticate(short, NOW + timedelta(hours=1)) == Rejection(Rejected.EXPIRED, tokens.find("short"))
        assert tokens.authenticate(gone, NOW) == Rejection(Rejected.REVOKED, tokens.find("gone"))
        assert tokens.authenticate(gone, NOW + timedelta(days=400)) == Rejection(Rejected.REVOKED, tokens.find("gone"))
        other = good[:-1] + ("A" if good[-1] != "A" else "B")
        assert tokens.authenticate(other, NOW) == Rejection(Rejected.UNKNOWN)
        for malformed in ("", "nope", good[4:], good + "x", good[:-1] + "=", " " + good, "gbx_" + good[4:]):
            assert tokens.authenticate(malformed, NOW) == Rejection(Rejected.MALFORMED)


# --- require() on a view -----------------------------------------------------------------------


def test_missing_or_malformed_header_is_401_without_an_error_code(web: Flask) -> None:
    client = web.test_client()
    for headers, message in [({}, "needs an API token"), ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed Authorization header"),
                             ({"Authorization": "Bearer"}, "malformed Authorization header"),
                             ({"Authorization": "Bearer a b"}, "malformed Authorization header")]:
        response = client.get("/t/read", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="gapbridge"'
        assert response.json["error"] == "Unauthorized" and message in response.json["message"]


def test_bad_tokens_are_401_invalid_token_and_never_echoed(web: Flask) -> None:
    expired = make(web, "expired", expires=timedelta(hours=1), now=datetime.now(timezone.utc) - timedelta(hours=2))
    revoked = make(web, "revoked")
    with web.app_context():
        tokens.revoke("revoked", "test")
    unknown = tokens.TOKEN_PREFIX + "x" * 43
    client = web.test_client()
    for presented, message in [("not-a-token", "not a GapBridge API token (those start with gbt_)"), (unknown, "invalid token: unknown, expired or revoked"),
                               (expired, "invalid token: unknown, expired or revoked"), (revoked, "invalid token: unknown, expired or revoked")]:
        response = client.get("/t/read", headers=bearer(presented))
        assert response.status_code == 401, presented
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="gapbridge", error="invalid_token"'
        assert response.json == {"error": "Unauthorized", "message": message}
        assert presented not in response.get_data(as_text=True)


def test_roles(web: Flask) -> None:
    auditor, manager, admin = (make(web, role, role) for role in ("auditor", "isms_manager", "admin"))
    client = web.test_client()
    allowed = {("auditor", "/t/read"), ("isms_manager", "/t/read"), ("isms_manager", "/t/risk"),
               ("admin", "/t/read"), ("admin", "/t/risk"), ("admin", "/t/admin")}
    needs = {"/t/risk": "isms_manager or admin", "/t/admin": "admin"}
    for role, plaintext in (("auditor", auditor), ("isms_manager", manager), ("admin", admin)):
        for path in ("/t/read", "/t/risk", "/t/admin"):
            response = client.open(path, method="GET" if path == "/t/read" else "POST", headers=bearer(plaintext))
            if (role, path) in allowed:
                assert response.status_code == 200, (role, path)
            else:
                assert response.status_code == 403, (role, path)
                assert response.json == {"error": "Forbidden",
                                         "message": f"this endpoint needs a token with role {needs[path]}; this token's role is {role}"}
    me = client.get("/t/read", headers=bearer(auditor)).json
    assert me == {"name": "auditor", "role": "auditor", "actor": "token:auditor"}


def test_revocation_takes_effect_at_once_and_the_scheme_is_case_insensitive(web: Flask) -> None:
    plaintext = make(web, "iota")
    client = web.test_client()
    assert client.get("/t/read", headers={"Authorization": f"bearer {plaintext}"}).status_code == 200
    with web.app_context():
        tokens.revoke("iota", "test")
    assert client.get("/t/read", headers=bearer(plaintext)).status_code == 401


def test_require_knows_its_roles() -> None:
    assert require(READ)(lambda: None).required_roles == {"auditor", "isms_manager", "admin"}  # type: ignore[attr-defined]
    assert require("isms_manager")(lambda: None).required_roles == {"isms_manager", "admin"}  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown role"):
        require("auditr")


# --- the rate limit ------------------------------------------------------------------------------


def test_over_the_burst_is_429_with_retry_after(app_factory: Any) -> None:
    web = guarded(app_factory(api={"rate_limit_per_minute": 6, "rate_limit_burst": 2}))
    busy, other = make(web, "busy"), make(web, "other")
    seconds = [1000.0]
    auth_state(web).limiter.clock = lambda: seconds[0]
    client = web.test_client()
    assert [client.get("/t/read", headers=bearer(busy)).status_code for _ in range(2)] == [200, 200]
    response = client.get("/t/read", headers=bearer(busy))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "10"  # one request per 10 s at 6 a minute
    assert response.json["error"] == "Too Many Requests" and "6 requests per minute" in response.json["message"]
    assert client.get("/t/read", headers=bearer(other)).status_code == 200  # per token
    seconds[0] += 5
    assert client.get("/t/read", headers=bearer(busy)).headers["Retry-After"] == "5"
    seconds[0] += 5
    assert client.get("/t/read", headers=bearer(busy)).status_code == 200


def test_retry_after_is_at_least_one_second(app_factory: Any) -> None:
    web = guarded(app_factory(api={"rate_limit_per_minute": 6000, "rate_limit_burst": 1}))
    plaintext = make(web, "fast")
    auth_state(web).limiter.clock = lambda: 50.0
    client = web.test_client()
    assert client.get("/t/read", headers=bearer(plaintext)).status_code == 200
    response = client.get("/t/read", headers=bearer(plaintext))
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"  # 0.01 s, in whole seconds


def test_default_limit_and_burst(app: Flask) -> None:
    limiter = auth_state(app).limiter
    assert (limiter.per_minute, limiter.burst) == (600, 100)


# --- the hourly roll-up ---------------------------------------------------------------------------


def use_rows(app: Flask) -> list[tuple[str, datetime, int, int]]:
    with app.app_context():
        return [(name, hour, requests, denied) for name, hour, requests, denied in db.session.execute(
            sa.select(ApiToken.name, ApiTokenUse.hour, ApiTokenUse.requests, ApiTokenUse.denied)
            .join(ApiToken, ApiToken.id == ApiTokenUse.token_id).order_by(ApiToken.name, ApiTokenUse.hour))]


def test_use_is_rolled_up_per_token_and_hour(web: Flask, at_noon: list[datetime]) -> None:
    reader, manager = make(web, "reader"), make(web, "manager", "isms_manager")
    client = web.test_client()
    for _ in range(3):
        assert client.get("/t/read", headers=bearer(reader)).status_code == 200
    assert client.post("/t/risk", headers=bearer(reader)).status_code == 403
    assert client.post("/t/risk", headers=bearer(manager)).status_code == 200
    assert use_rows(web) == [] and audit_events(web, "token.used") == []  # nothing written per request
    usage = auth_state(web).usage
    assert usage.flush() == 2
    noon = NOW.replace(minute=0)
    assert use_rows(web) == [("manager", noon, 1, 0), ("reader", noon, 4, 1)]
    for _ in range(2):
        client.get("/t/read", headers=bearer(reader))
    assert usage.flush() == 1 and usage.flush() == 0
    assert use_rows(web) == [("manager", noon, 1, 0), ("reader", noon, 6, 1)]
    events = audit_events(web, "token.used")
    assert sorted((e.actor, e.details["name"], e.details["hour"]) for e in events) == [
        ("token:manager", "manager", noon.isoformat()), ("token:reader", "reader", noon.isoformat())]
    with web.app_context():
        assert tokens.find("reader").last_used_at == at_noon[0]  # type: ignore[union-attr]


def test_a_new_hour_starts_a_flush_and_a_new_row(web: Flask, at_noon: list[datetime]) -> None:
    reader = make(web, "reader")
    client = web.test_client()
    client.get("/t/read", headers=bearer(reader))
    at_noon[0] += timedelta(hours=1)
    client.get("/t/read", headers=bearer(reader))  # the first request of 13:00 starts a background flush
    deadline = time.monotonic() + 10
    while not use_rows(web) and time.monotonic() < deadline:
        time.sleep(0.05)
    auth_state(web).usage.flush()  # waits for a flush under way
    noon = NOW.replace(minute=0)
    assert use_rows(web) == [("reader", noon, 1, 0), ("reader", noon + timedelta(hours=1), 1, 0)]
    assert sorted(e.details["hour"] for e in audit_events(web, "token.used")) == [noon.isoformat(), (noon + timedelta(hours=1)).isoformat()]
    with web.app_context():
        assert tokens.find("reader").last_used_at == at_noon[0]  # type: ignore[union-attr]


def test_denied_requests_are_counted_including_revoked_tokens(app_factory: Any) -> None:
    web = guarded(app_factory(api={"rate_limit_per_minute": 60, "rate_limit_burst": 1}))
    auth_state(web).usage.clock = lambda: NOW
    auth_state(web).limiter.clock = lambda: 0.0
    reader, old = make(web, "reader"), make(web, "old")
    with web.app_context():
        tokens.revoke("old", "test")
    client = web.test_client()
    assert client.get("/t/read", headers=bearer(reader)).status_code == 200
    assert client.get("/t/read", headers=bearer(reader)).status_code == 429
    assert client.get("/t/read", headers=bearer(old)).status_code == 401
    auth_state(web).usage.flush()
    assert use_rows(web) == [("old", NOW, 1, 1), ("reader", NOW, 2, 1)]


def test_a_failed_flush_keeps_the_counts(web: Flask, at_noon: list[datetime], monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    reader = make(web, "reader")
    client = web.test_client()
    usage = auth_state(web).usage

    def locked(counts: Any) -> int:
        raise sa.exc.OperationalError("INSERT INTO api_token_use ...", {}, Exception("database is locked"))

    monkeypatch.setattr(tokens, "record_use", locked)
    usage.flush_seconds = 0  # every request starts a flush: each one fails, no request does
    assert [client.get("/t/read", headers=bearer(reader)).status_code for _ in range(3)] == [200, 200, 200]
    deadline = time.monotonic() + 10
    while usage.flushing and time.monotonic() < deadline:
        time.sleep(0.05)
    usage.flush_seconds = 3600
    assert usage.flush() == 0
    assert "could not record API token use" in caplog.text and reader[10:] not in caplog.text
    assert [(c.token_name, c.requests) for c in usage.pending()] == [("reader", 3)]
    monkeypatch.undo()
    assert usage.flush() == 1
    assert use_rows(web) == [("reader", NOW.replace(minute=0), 3, 0)] and usage.pending() == []


def test_two_processes_write_one_row_and_one_event(app_factory: Any) -> None:
    first, second = guarded(app_factory()), guarded(app_factory())  # two apps: two processes' memories, one database
    reader = make(first, "reader")
    for web, n in ((first, 2), (second, 3)):
        auth_state(web).usage.clock = lambda: NOW
        client = web.test_client()
        for _ in range(n):
            assert client.get("/t/read", headers=bearer(reader)).status_code == 200
    assert auth_state(first).usage.flush() == 1 and auth_state(second).usage.flush() == 1
    assert use_rows(first) == [("reader", NOW, 5, 0)]
    assert len(audit_events(first, "token.used")) == 1


def test_counts_of_a_vanished_token_are_dropped(web: Flask, at_noon: list[datetime]) -> None:
    reader = make(web, "reader")
    web.test_client().get("/t/read", headers=bearer(reader))
    with web.app_context():
        db.session.execute(sa.delete(ApiToken))
        db.session.commit()
    assert auth_state(web).usage.flush() == 0 and auth_state(web).usage.pending() == []
