"""The demo ITSM: ServiceNow Table API behaviour, test controls, and seed data that exercises every check."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from demo_itsm import DemoITSM
from demo_itsm.seed import CATALOGUE, PROFILE_TARGETS, PROFILES, REFERENCES, generate_incidents, ref_id, seed_database

NOW = datetime(2026, 7, 1, 12, 0)
AUTH = ("admin", "admin")
KEYSET = "active=true^sys_updated_on>{t}^NQactive=true^sys_updated_on={t}^sys_id>{id}^ORDERBYsys_updated_on^ORDERBYsys_id"


@pytest.fixture
def sn(tmp_path: Path) -> Iterator[DemoITSM]:
    with DemoITSM(tmp_path / "sn.db", size=80, now=NOW) as demo:
        yield demo


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.auth = AUTH
        yield s


def table(sn: DemoITSM, http: requests.Session, name: str = "incident", **params: Any) -> requests.Response:
    return http.get(f"{sn.url}/api/now/table/{name}", params=params, timeout=10)


def all_raw(sn: DemoITSM, http: requests.Session) -> list[dict[str, str]]:
    r = table(sn, http, sysparm_exclude_reference_link="true")
    assert r.status_code == 200
    return r.json()["result"]


# --- the generator ------------------------------------------------------------------------


def test_generator_is_deterministic_and_seed_dependent() -> None:
    a = list(generate_incidents(120, seed=7, now=NOW))
    assert a == list(generate_incidents(120, seed=7, now=NOW))
    b = list(generate_incidents(120, seed=8, now=NOW))
    assert [r["sys_id"] for r in a] != [r["sys_id"] for r in b]
    assert [r["short_description"] for r in a[len(PROFILES):]] != [r["short_description"] for r in b[len(PROFILES):]]
    later = list(generate_incidents(120, seed=7, now=NOW + timedelta(days=1)))
    assert later[0]["opened_at"] != a[0]["opened_at"]  # timestamps follow `now`


def test_generated_records_look_like_servicenow() -> None:
    records = list(generate_incidents(300, now=NOW))
    assert len(records) == 300 and len({r["sys_id"] for r in records}) == 300
    assert records[0]["number"] == "INC0010001" and records[-1]["number"] == "INC0010300"
    for r in records:
        assert all(isinstance(v, str) for v in r.values())
        assert len(r["sys_id"]) == 32 and int(r["sys_id"], 16) >= 0
        assert r["active"] == ("false" if r["state"] in ("6", "7", "8") else "true")
        assert r["sys_updated_on"] <= "2026-07-01 12:00:00" and r["opened_at"] <= r["sys_updated_on"]
        for col in ("u_evidence", "u_notifications", "u_escalations"):
            assert r[col] == "" or isinstance(json.loads(r[col]), list)
    assert {r["state"] for r in records} == {"1", "2", "3", "6", "7", "8"}
    assert {"1", "2", "3", "4", "5"} <= {r["priority"] for r in records}
    assert {"true", "false"} == {r["u_security_incident"] for r in records}
    assert len({r["cmdb_ci"] for r in records}) > 100  # spread out, so only the deliberate clusters recur


def test_seed_database_size(tmp_path: Path) -> None:
    seed_database(tmp_path / "s.db", 150, now=NOW)
    with DemoITSM(tmp_path / "s.db", size=999) as sn:  # not empty: not seeded again
        assert sn.count() == 150


# --- listing, paging, queries -------------------------------------------------------------


def test_list_limit_offset_and_headers(sn: DemoITSM, http: requests.Session) -> None:
    r = table(sn, http, sysparm_limit=30, sysparm_offset=30, sysparm_query="ORDERBYnumber")
    assert r.status_code == 200
    assert r.headers["X-Total-Count"] == "80"
    assert [x["number"] for x in r.json()["result"]] == [f"INC{10031 + i:07d}" for i in range(30)]
    links = dict((rel.split('rel="')[1].rstrip('"'), url.strip("<>")) for url, rel in (p.split(";") for p in r.headers["Link"].split(",")))
    assert set(links) == {"first", "prev", "next", "last"}
    assert "sysparm_offset=0" in links["first"] and "sysparm_offset=60" in links["next"] and "sysparm_offset=60" in links["last"]
    assert links["next"].startswith(f"{sn.url}/api/now/table/incident?") and "sysparm_query=ORDERBYnumber" in links["next"]
    last = http.get(links["last"], timeout=10)
    assert len(last.json()["result"]) == 20 and 'rel="next"' not in last.headers["Link"]
    first = table(sn, http, sysparm_limit=30)
    assert 'rel="prev"' not in first.headers["Link"] and 'rel="next"' in first.headers["Link"]
    assert table(sn, http).headers["X-Total-Count"] == "80" and len(table(sn, http).json()["result"]) == 80  # default limit
    assert table(sn, http, sysparm_limit="x").status_code == 400


def test_keyset_query_with_nq_and_orderby(sn: DemoITSM, http: requests.Session) -> None:
    raw = all_raw(sn, http)
    active = sorted((r for r in raw if r["active"] == "true"), key=lambda r: (r["sys_updated_on"], r["sys_id"]))
    assert len(active) > 10
    # a bookmark in the middle of the active set; give the next record the same time to exercise the tie branch
    mark = active[5]
    sn.update(active[6]["sys_id"], short_description="same second")  # bumps it out of the way, to the end
    sn.insert({"short_description": "tie", "sys_updated_on": mark["sys_updated_on"], "sys_id": "f" * 32, "state": "2"})
    sn.insert({"short_description": "tie, but before", "sys_updated_on": mark["sys_updated_on"], "sys_id": "0" * 32, "state": "2"})
    r = table(sn, http, sysparm_query=KEYSET.format(t=mark["sys_updated_on"], id=mark["sys_id"]), sysparm_limit=500)
    got = r.json()["result"]
    expected = sorted((x for x in all_raw(sn, http) if x["active"] == "true" and (x["sys_updated_on"], x["sys_id"]) > (mark["sys_updated_on"], mark["sys_id"])),
                      key=lambda x: (x["sys_updated_on"], x["sys_id"]))
    assert [x["sys_id"] for x in got] == [x["sys_id"] for x in expected]
    assert "f" * 32 in [x["sys_id"] for x in got] and "0" * 32 not in [x["sys_id"] for x in got]
    assert r.headers["X-Total-Count"] == str(len(expected))
    assert got[-1]["short_description"] == "same second"


def test_each_operator(sn: DemoITSM, http: requests.Session) -> None:
    raw = all_raw(sn, http)
    some = raw[3]
    cases = {
        f"number={some['number']}": lambda r: r["number"] == some["number"],
        "state!=7": lambda r: r["state"] != "7",
        "priority>3": lambda r: r["priority"] != "" and int(r["priority"]) > 3,
        "priority>=3": lambda r: r["priority"] != "" and int(r["priority"]) >= 3,
        "priority<2": lambda r: r["priority"] != "" and int(r["priority"]) < 2,
        "priority<=2": lambda r: r["priority"] != "" and int(r["priority"]) <= 2,
        "opened_at>2026-06-01 00:00:00": lambda r: r["opened_at"] > "2026-06-01 00:00:00",
        "stateIN1,2,3": lambda r: r["state"] in ("1", "2", "3"),
        "stateNOT IN6,7,8": lambda r: r["state"] not in ("6", "7", "8"),
        "short_descriptionLIKEphishing": lambda r: "phishing" in r["short_description"].lower(),
        "short_descriptionSTARTSWITHRecurring": lambda r: r["short_description"].startswith("Recurring"),
        "problem_idISEMPTY": lambda r: r["problem_id"] == "",
        "problem_idISNOTEMPTY": lambda r: r["problem_id"] != "",
        f"assignment_group={ref_id('sys_user_group', 'CSIRT')}": lambda r: r["assignment_group"] == ref_id("sys_user_group", "CSIRT"),
        "category=phishing^ORcategory=malware^state=7": lambda r: r["category"] in ("phishing", "malware") and r["state"] == "7",
        "category=phishing^NQcategory=malware": lambda r: r["category"] in ("phishing", "malware"),
    }
    for query, pred in cases.items():
        r = table(sn, http, sysparm_query=query)
        assert r.status_code == 200, (query, r.text)
        want = {x["sys_id"] for x in raw if pred(x)}
        assert {x["sys_id"] for x in r.json()["result"]} == want, query
        assert r.headers["X-Total-Count"] == str(len(want))
    assert 0 < len([x for x in raw if x["problem_id"]]) < len(raw)
    desc = table(sn, http, sysparm_query="ORDERBYDESCopened_at^ORDERBYnumber").json()["result"]
    assert [x["opened_at"] for x in desc] == sorted((x["opened_at"] for x in raw), reverse=True)


@pytest.mark.parametrize("query", ["nosuchfield=1", "state", "state~1", "^ORstate=1", "priority>high", "stateISEMPTYx",
                                   "state=1^^state=2", "ORDERBYnosuch", "short_descriptionLIKE"])
def test_bad_query_is_400(sn: DemoITSM, http: requests.Session, query: str) -> None:
    r = table(sn, http, sysparm_query=query)
    assert r.status_code == 400
    assert r.json()["status"] == "failure" and r.json()["error"]["message"].startswith("Invalid query: ")


def test_display_value_shapes(sn: DemoITSM, http: requests.Session) -> None:
    number = "INC0010001"  # the complete phishing profile: CSIRT-type group, closed, high
    fields = "number,assignment_group,state,priority,opened_at,problem_id"
    false = table(sn, http, sysparm_query=f"number={number}", sysparm_fields=fields).json()["result"][0]
    group_id = ref_id("sys_user_group", "Security Incident Response Team")
    assert set(false) == set(fields.split(","))
    assert false["assignment_group"] == {"link": f"{sn.url}/api/now/table/sys_user_group/{group_id}", "value": group_id}
    assert false["state"] == "7" and false["priority"] == "2" and false["problem_id"] == ""
    assert len(false["opened_at"]) == 19 and false["opened_at"][10] == " "
    true = table(sn, http, sysparm_query=f"number={number}", sysparm_fields=fields, sysparm_display_value="true").json()["result"][0]
    assert true["assignment_group"] == "Security Incident Response Team"
    assert true["state"] == "Closed" and true["priority"] == "2 - High" and true["opened_at"] == false["opened_at"]
    everything = table(sn, http, sysparm_query=f"number={number}", sysparm_fields=fields, sysparm_display_value="all").json()["result"][0]
    assert everything["assignment_group"] == {"display_value": "Security Incident Response Team", "link": false["assignment_group"]["link"],
                                              "value": group_id}
    assert everything["state"] == {"display_value": "Closed", "value": "7"}
    assert everything["opened_at"] == {"display_value": false["opened_at"], "value": false["opened_at"]}
    no_links = table(sn, http, sysparm_query=f"number={number}", sysparm_fields=fields, sysparm_exclude_reference_link="true").json()["result"][0]
    assert no_links["assignment_group"] == group_id
    link = http.get(false["assignment_group"]["link"], timeout=10)
    assert link.json()["result"] == {"sys_id": group_id, "name": "Security Incident Response Team"}
    assert table(sn, http, sysparm_display_value="maybe").status_code == 400


def test_get_one_and_404s(sn: DemoITSM, http: requests.Session) -> None:
    some = all_raw(sn, http)[10]
    r = http.get(f"{sn.url}/api/now/table/incident/{some['sys_id']}", timeout=10)
    assert r.status_code == 200 and r.json()["result"]["number"] == some["number"]
    missing = http.get(f"{sn.url}/api/now/table/incident/{'9' * 32}", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "No Record found"
    unknown = table(sn, http, "change_request")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"message": "Invalid table change_request", "detail": None}, "status": "failure"}


# --- writes -------------------------------------------------------------------------------


def test_patch_appends_work_notes_and_bumps_updated(sn: DemoITSM, http: requests.Session) -> None:
    sys_id = all_raw(sn, http)[0]["sys_id"]
    before = sn.record(sys_id)
    notes_before = sn.journal(sys_id)
    url = f"{sn.url}/api/now/table/incident/{sys_id}"
    r1 = http.patch(url, json={"work_notes": "GapBridge: first", "u_iso27001_controls": "A.5.26", "u_no_such_column": "x"}, timeout=10)
    assert r1.status_code == 200
    assert r1.json()["result"]["u_iso27001_controls"] == "A.5.26" and "u_no_such_column" not in r1.json()["result"]
    assert r1.json()["result"]["work_notes"] == ""  # a journal field reads empty without display values
    r2 = http.put(url, json={"work_notes": "GapBridge: second"}, timeout=10)
    assert r2.status_code == 200
    after = sn.record(sys_id)
    assert after["sys_updated_on"] > before["sys_updated_on"] >= "2026-01-01"
    assert int(after["sys_mod_count"]) == int(before["sys_mod_count"]) + 2
    assert "u_no_such_column" not in after and after["u_iso27001_controls"] == "A.5.26"
    journal = sn.journal(sys_id)
    assert [j["value"] for j in journal[len(notes_before):]] == ["GapBridge: first", "GapBridge: second"]
    shown = http.get(url, params={"sysparm_display_value": "true", "sysparm_fields": "work_notes"}, timeout=10).json()["result"]["work_notes"]
    assert shown.startswith(f"{journal[-1]['sys_created_on']} - System Administrator (Work notes)\nGapBridge: second\n\n")
    assert shown.index("GapBridge: second") < shown.index("GapBridge: first")
    # a body that changes nothing known is not an update, like ServiceNow
    unchanged = sn.record(sys_id)
    assert http.patch(url, json={"u_no_such_column": "y"}, timeout=10).status_code == 200
    assert sn.record(sys_id) == unchanged
    bad = http.patch(url, data="not json", headers={"Content-Type": "application/json"}, timeout=10)
    assert bad.status_code == 400
    assert http.patch(f"{sn.url}/api/now/table/incident/{'9' * 32}", json={"work_notes": "x"}, timeout=10).status_code == 404


def test_update_helper_moves_the_record_for_incremental_sync(sn: DemoITSM) -> None:
    sys_id = sn.insert({"short_description": "fresh", "assignment_group": "CSIRT", "u_security_incident": True, "work_notes": "opened"})
    rec = sn.record(sys_id)
    assert rec["assignment_group"] == ref_id("sys_user_group", "CSIRT") and rec["u_security_incident"] == "true"
    assert rec["number"] == "INC0010081" and sn.count() == 81 and [j["value"] for j in sn.journal(sys_id)] == ["opened"]
    assert sn.sys_ids()[-1] == sys_id and len(sn.sys_ids()) == 81
    updated = sn.update(sys_id, state="7", work_notes="closed by test")
    assert updated["active"] == "false" and updated["sys_updated_on"] > rec["sys_updated_on"]
    assert [j["value"] for j in sn.journal(sys_id)] == ["opened", "closed by test"]


def test_sys_journal_field_query(sn: DemoITSM, http: requests.Session) -> None:
    sys_id = all_raw(sn, http)[2]["sys_id"]
    for text in ("GapBridge fingerprint abc", "unrelated", "GapBridge fingerprint def"):
        sn.update(sys_id, work_notes=text)
    r = table(sn, http, "sys_journal_field", sysparm_limit=2,
              sysparm_query=f"element_id={sys_id}^element=work_notes^valueLIKEGapBridge^ORDERBYDESCsys_created_on")
    assert r.status_code == 200 and r.headers["X-Total-Count"] == "2"
    rows = r.json()["result"]
    assert [x["value"] for x in rows] == ["GapBridge fingerprint def", "GapBridge fingerprint abc"]
    assert set(rows[0]) == {"sys_id", "element_id", "element", "name", "value", "sys_created_on", "sys_created_by"}
    assert rows[0]["element_id"] == sys_id and rows[0]["name"] == "incident" and rows[0]["element"] == "work_notes"


# --- auth ---------------------------------------------------------------------------------


def test_basic_auth_required(sn: DemoITSM) -> None:
    for auth in (None, ("admin", "wrong")):
        r = requests.get(f"{sn.url}/api/now/table/incident", auth=auth, timeout=10)
        assert r.status_code == 401
        assert r.json() == {"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"},
                            "status": "failure"}
    assert requests.get(f"{sn.url}/api/now/table/incident", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401


def test_oauth_grants_and_expiry(sn: DemoITSM) -> None:
    token_url = f"{sn.url}/oauth_token.do"
    client = {"client_id": "gapbridge", "client_secret": "demo-secret"}

    def api(token: str) -> int:
        return requests.get(f"{sn.url}/api/now/table/incident", params={"sysparm_limit": 1},
                            headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    pw = requests.post(token_url, data={"grant_type": "password", "username": "admin", "password": "admin", **client}, timeout=10)
    assert pw.status_code == 200
    body = pw.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "useraccount" and body["expires_in"] == 1799
    assert api(body["access_token"]) == 200
    cc = requests.post(token_url, data={"grant_type": "client_credentials", **client}, timeout=10).json()
    assert api(cc["access_token"]) == 200
    refreshed = requests.post(token_url, data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], **client}, timeout=10)
    assert refreshed.status_code == 200 and refreshed.json()["access_token"] != body["access_token"]
    assert api(refreshed.json()["access_token"]) == 200
    for bad in ({"grant_type": "password", "username": "admin", "password": "x", **client},
                {"grant_type": "client_credentials", "client_id": "gapbridge", "client_secret": "x"},
                {"grant_type": "refresh_token", "refresh_token": "unknown", **client}, {"grant_type": "implicit", **client}):
        r = requests.post(token_url, data=bad, timeout=10)
        assert r.status_code == 401 and r.json() == {"error_description": "access_denied", "error": "server_error"}
    sn.token_lifetime = 0
    short = requests.post(token_url, data={"grant_type": "client_credentials", **client}, timeout=10).json()
    assert short["expires_in"] == 0 and api(short["access_token"]) == 401
    sn.expire_tokens()
    assert api(body["access_token"]) == 401


# --- faults, delay, stats -----------------------------------------------------------------


def test_fault_injection_and_stats(sn: DemoITSM, http: requests.Session) -> None:
    sn.reset_stats()
    sn.fail_next(2, status=503, retry_after=3, methods=["GET"], path_prefix="/api/now/table/incident")
    for _ in range(2):
        r = table(sn, http)
        assert r.status_code == 503 and r.headers["Retry-After"] == "3" and r.json()["status"] == "failure"
    assert table(sn, http).status_code == 200
    sn.fail_next(1, status=502, body="<html>maintenance</html>", methods=["PATCH"])
    assert table(sn, http).status_code == 200  # a GET does not match a PATCH fault
    r = http.patch(f"{sn.url}/api/now/table/incident/{'9' * 32}", json={}, timeout=10)
    assert r.status_code == 502 and r.text == "<html>maintenance</html>" and "Retry-After" not in r.headers
    assert sn.stats == {"GET": 4, "PATCH": 1, "failed_injected": 3}
    sn.fail_next(3)
    sn.fail_next(0)  # clears what is pending
    assert table(sn, http).status_code == 200
    with pytest.raises(ValueError):
        sn.fail_next(-1)
    sn.reset_stats()
    sn.delay = 0.2
    started = datetime.now(UTC)
    table(sn, http, sysparm_limit=1)
    assert datetime.now(UTC) - started >= timedelta(seconds=0.2)


def test_http_control_endpoints(sn: DemoITSM, http: requests.Session) -> None:
    plain = requests.Session()
    with plain:
        assert plain.post(f"{sn.url}/_demo/reset", timeout=10).status_code == 200
        assert plain.post(f"{sn.url}/_demo/faults", json={"count": 1, "status": 429, "retry_after": 1}, timeout=10).status_code == 200
        assert plain.post(f"{sn.url}/_demo/faults", json={"count": 1, "bogus": 1}, timeout=10).status_code == 400
        assert plain.post(f"{sn.url}/_demo/faults", json={"count": "1"}, timeout=10).status_code == 400
        r = table(sn, http)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert table(sn, http).status_code == 200
        assert plain.post(f"{sn.url}/_demo/delay", json={"seconds": 0.05}, timeout=10).json()["seconds"] == 0.05
        assert sn.delay == 0.05
        assert plain.post(f"{sn.url}/_demo/delay", json={"seconds": "x"}, timeout=10).status_code == 400
        assert plain.get(f"{sn.url}/_demo/stats", timeout=10).json() == {"GET": 2, "failed_injected": 1}
        plain.post(f"{sn.url}/_demo/faults", json={"count": 5}, timeout=10)
        assert plain.post(f"{sn.url}/_demo/reset", timeout=10).status_code == 200
        assert sn.delay == 0 and table(sn, http).status_code == 200  # reset clears pending faults and the delay
        assert plain.get(f"{sn.url}/_demo/stats", timeout=10).json() == {"GET": 1, "failed_injected": 0}


def test_module_runs_as_a_server(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "demo_itsm", "--db", str(tmp_path / "p.db"), "--size", "20", "--port", "0"]
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=Path(__file__).parents[1]) as proc:
        try:
            line = proc.stderr.readline()
            url = line.split(" at ")[1].split()[0]
            r = requests.get(f"{url}/api/now/table/incident", auth=AUTH, timeout=10)
            assert r.status_code == 200 and r.headers["X-Total-Count"] == "20"
        finally:
            proc.terminate()
            proc.wait(10)
    assert proc.returncode == 0


# --- seed data versus the checks ----------------------------------------------------------

SECURITY_CATEGORIES = {"security", "malware", "phishing", "data_breach", "unauthorized_access", "denial_of_service"}
SEVERITY = {"1": "critical", "2": "high", "3": "medium", "4": "low", "5": "low"}
STATE = {"1": "new", "2": "in_progress", "3": "on_hold", "6": "resolved", "7": "closed", "8": "cancelled"}


def canonical(rec: dict[str, str], names: dict[str, str]) -> dict[str, Any]:
    """A minimal ServiceNow -> canonical mapping, as the connector's default field map does it."""
    from connectors.canonical import empty_incident, parse_utc

    def val(col: str) -> str | None:
        return rec[col] or None

    def items(col: str) -> list[dict[str, Any]]:
        out = json.loads(rec[col]) if rec[col] else []
        for item in out:
            for key in ("at", "collected_at"):
                if item.get(key):
                    item[key] = parse_utc(item[key])
        return out

    inc = empty_incident()
    inc.update(
        number=rec["number"], external_id=rec["sys_id"], title=val("short_description"), description=val("description"),
        category=val("category"), subcategory=val("subcategory"),
        record_type="weakness" if {rec["category"], rec["subcategory"]} & {"vulnerability", "weakness"} else "incident", severity=SEVERITY.get(rec["priority"]), state=STATE[rec["state"]],
        is_security=rec["u_security_incident"] == "true" or rec["category"] in SECURITY_CATEGORIES,
        business_unit=names.get(rec["company"]), assignment_group=names.get(rec["assignment_group"]), assignee=names.get(rec["assigned_to"]),
        reporter=names.get(rec["caller_id"]), reported_via=val("contact_type"), affected_ci=names.get(rec["cmdb_ci"]),
        problem_ref=names.get(rec["problem_id"]), resolution_notes=val("close_notes"), close_code=val("close_code"),
        updated_at=parse_utc(rec["sys_updated_on"]), evidence=items("u_evidence"), notifications=items("u_notifications"),
        escalations=items("u_escalations"),
    )
    for col in ("opened_at", "resolved_at", "closed_at"):
        inc[col] = parse_utc(rec[col])
    for name in ("assessed_at", "acknowledged_at", "contained_at", "major_declared_at"):
        inc[name] = parse_utc(rec[f"u_{name}"])
    for name in ("major_incident", "personal_data_breach", "legal_hold"):
        inc[name] = rec[f"u_{name}"] == "true"
    for name in ("root_cause", "lessons_learned", "maintenance_ref", "capacity_ref"):
        inc[name] = val(f"u_{name}")
    for name in ("weakness_refs", "vulnerability_refs", "related_refs", "log_refs"):
        inc[name] = [x.strip() for x in rec[f"u_{name}"].split(",") if x.strip()]
    return inc


def test_seed_of_300_passes_and_fails_every_check() -> None:
    from plugin.rules import across
    from plugin.rules import loader as ruleset_mod
    ruleset = ruleset_mod.load_ruleset(Path(__file__).parents[1] / "mappings", overlays=["gdpr", "nis2", "dora"])
    names = {ref_id(t, n): n for t, ns in CATALOGUE.items() for n in ns}
    incidents = [canonical(r, names) for r in generate_incidents(300, now=NOW)]
    now = NOW.replace(tzinfo=UTC)
    outcomes: dict[str, list[str]] = {}
    for check in ruleset.checks:
        if check.across:
            outcomes[check.id] = across.evaluate_across(check, incidents, now)
        else:
            outcomes[check.id] = [check.evaluate(inc, now) for inc in incidents]
    lacking = {cid: sorted({"pass", "fail"} - set(got)) for cid, got in outcomes.items() if not {"pass", "fail"} <= set(got)}
    assert not lacking, f"checks without a passing or failing incident: {lacking}"
    # every profile delivers the outcomes it promises
    by_number = {inc["number"]: i for i, inc in enumerate(incidents)}
    wrong = [(cid, want, number, outcomes[cid][by_number[number]]) for cid, targets in PROFILE_TARGETS.items()
             for want, number in targets if outcomes[cid][by_number[number]] != want]
    assert not wrong, wrong
    assert set(PROFILE_TARGETS) == set(outcomes), "every check has a profile aimed at it"
    for cid in outcomes:
        promised = {o for o, _ in PROFILE_TARGETS[cid]}
        assert {"pass", "fail"} <= promised <= {"pass", "fail", "pending"}, f"{cid} needs a passing and a failing profile"


def test_reference_columns_cover_the_catalogue() -> None:
    assert set(REFERENCES.values()) == set(CATALOGUE)
