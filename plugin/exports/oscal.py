"""An assessment as OSCAL 1.2.1 JSON: the assessment plan, and the assessment results that import it.

The plan says what was reviewed and how: the ISO/IEC 27001:2022 Annex A controls (one local objective each, since
no OSCAL catalogue of ISO controls can be referenced), the incident records of the period as the subjects, and
GapBridge as the tool. The results say what was found: one observation per incident with its ticket as the evidence,
one finding per control, and the accepted risks as risks.

Identifiers. Every uuid is a uuid5, derived from what it names, so exporting the same assessment twice gives the
same document and a re-export after a re-assessment diffs line by line. OSCAL asks for exactly this: a uuid is
assigned per subject and kept across revisions. Subjects of one assessment (its result, observations, findings,
ticket resources) are named inside the assessment's namespace (period, period field, overlays), so another
period's observation of the same incident is another observation; an accepted risk, an approver and the tool are
the same subject in every assessment. The document uuid changes with each revision (it is derived from
``generated_at``, as is ``last-modified``). A deployment passes its own ``namespace`` so that two organisations'
uuids never collide.

Control ids. OSCAL control ids are tokens and, by NIST's convention, lower case with the human label apart:
A.5.28 is ``a.5.28``; its assessment objective is ``a.5.28_obj`` (SP 800-53A's ``<control>_obj``). The labels of
both editions are properties in GapBridge's namespace.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from .assessment import AcceptedRisk, Assessment, ControlResult, ObservedIncident

OSCAL_VERSION = "1.2.1"  # the schema under tests/fixtures/oscal/ and trestle's models are of this version

# The namespace of GapBridge's own property names (OSCAL's own are un-namespaced). A URN, since the project
# has no web address of its own; anything that is a URI and stays fixed will do.
GAPBRIDGE_NS = "urn:gapbridge:oscal"
GAPBRIDGE_UUID_NS = uuid.uuid5(uuid.NAMESPACE_URL, GAPBRIDGE_NS)

DEFAULT_SSP_HREF = "system-security-plan.json"

FINDING_STATUSES = frozenset({"pass", "fail", "accepted", "pending"})
RISK_STATUSES = frozenset({"active", "expired", "revoked"})

# OSCAL has no "accepted" risk status. An acceptance is an approved deviation ("deviation-approved", which OSCAL
# still counts as an open risk: the gap is there, it is tolerated). Once the acceptance expires or is revoked
# nothing approves the gap any more and it counts as a failure again: "open". Not "closed", which says the risk
# was resolved, and not "deviation-requested", since no one has asked again.
_RISK_STATUS = {"active": "deviation-approved", "expired": "open", "revoked": "open"}

_CATALOGUE = "ISO/IEC 27001:2022 Annex A"
_RISK_OWNER = "risk-owner"  # ISO/IEC 27001 6.1.3 f): risk owners approve the acceptance of residual risks
_ASCII_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")  # within OSCAL's token (\p{L}|_)(\p{L}|\p{N}|[.\-_])*

JSON = dict[str, Any]


def control_id(label: str) -> str:
    """The OSCAL control-id of an Annex A control: ``A.5.28`` -> ``a.5.28``."""
    token = label.strip().lower()
    if not _ASCII_TOKEN.fullmatch(token):
        raise ValueError(f"control {label!r} has no OSCAL control-id form: a letter or '_' first, then letters, digits, '.', '-', '_'")
    return token


def objective_id(label: str) -> str:
    return f"{control_id(label)}_obj"


def assessment_plan(a: Assessment, *, ssp_href: str = DEFAULT_SSP_HREF, namespace: uuid.UUID = GAPBRIDGE_UUID_NS) -> JSON:
    """The OSCAL assessment plan of ``a``: ``{"assessment-plan": {...}}``."""
    _check(a)
    scope = _scope(a, namespace)
    sources = sorted({i.source for i in a.incidents})
    field = a.period_by.replace("_", " ")
    subject: JSON = {
        "type": "resource",
        "description": (
            f"The incident records synced from the ITSM tools whose {field} falls between {_ts(a.period_start)} and "
            f"{_ts(a.period_end)}: {len(a.incidents)} records"
            + (f" from {', '.join(sources)}." if sources else ".")
        ),
        "include-all": {},
    }
    _put(subject, "props", [_prop("source", s) for s in sources])
    plan: JSON = {
        "uuid": _uuid(scope, "assessment-plan", _ts(a.generated_at)),
        "metadata": _metadata(a, f"{a.title}: assessment plan"),
        "import-ssp": {
            "href": ssp_href,
            "remarks": (
                "A placeholder: GapBridge keeps no system security plan. Point this at the ISMS's own "
                "(its scope and Statement of Applicability) when the documents are filed together."
            ),
        },
        "local-definitions": {
            "objectives-and-methods": [_objective(c, a) for c in a.controls],
            "activities": [{
                "uuid": _uuid(namespace, "activity", "examine-incident-records"),
                "title": "Examine incident records",
                "description": (
                    "GapBridge evaluates every incident record synced from the ITSM tools against the YAML checks "
                    "mapped to each control, when the record changes and whenever the mappings change."
                ),
                "props": [{"name": "method", "value": "EXAMINE"}],
            }],
        },
        "reviewed-controls": _reviewed_controls(a),
        "assessment-subjects": [subject],
        "assessment-assets": {
            "components": [{
                "uuid": _tool_uuid(namespace),
                "type": "software",
                "title": "GapBridge",
                "description": "Checks ITSM incident records against ISO/IEC 27001 Annex A controls through YAML checks.",
                "props": [{"name": "version", "value": _line(a.gapbridge_version, "unknown")}],
                "status": {"state": "operational"},
            }],
            "assessment-platforms": [{
                "uuid": _uuid(namespace, "assessment-platform", "gapbridge"),
                "title": "GapBridge",
                "uses-components": [{"component-uuid": _tool_uuid(namespace)}],
            }],
        },
    }
    return {"assessment-plan": plan}


def assessment_results(a: Assessment, plan_href: str = "assessment-plan.json", *, namespace: uuid.UUID = GAPBRIDGE_UUID_NS) -> JSON:
    """The OSCAL assessment results of ``a``, importing the plan at ``plan_href``: ``{"assessment-results": {...}}``."""
    _check(a)
    scope = _scope(a, namespace)
    tool = [{"actors": [{"type": "tool", "actor-uuid": _tool_uuid(namespace)}]}]

    active: set[int] = set()  # only an acceptance in force covers an accepted finding
    for r in a.risks:
        if r.status not in RISK_STATUSES:
            raise ValueError(f"accepted risk {r.id}: unknown status {r.status!r}")
        if r.status == "active":
            active.add(r.id)

    collected = _ts(a.generated_at)  # the findings are as of the export
    observation_of: dict[int, str] = {}
    observations: list[JSON] = []
    resources: list[JSON] = []
    failing_checks: dict[str, Counter[str]] = defaultdict(Counter)  # control -> failed check -> incidents
    risk_observations: dict[int, list[str]] = defaultdict(list)
    for inc in a.incidents:
        obs = _uuid(scope, "observation", inc.id)
        res = _uuid(scope, "resource", inc.id)
        observation_of[inc.id] = obs
        for f in inc.findings:
            if f.status not in FINDING_STATUSES:
                raise ValueError(f"incident {inc.id}, check {f.check_id}: unknown status {f.status!r}")
            if f.status == "fail":
                for c in f.controls_2022:
                    failing_checks[c][f.check_id] += 1
            elif f.status == "accepted":
                for risk_id in (i for i in f.risk_ids if i in active):
                    linked = risk_observations[risk_id]
                    if not linked or linked[-1] != obs:
                        linked.append(obs)
        observations.append(_observation(inc, obs, res, tool, collected))
        resources.append(_resource(inc, res))

    parties = _parties(a.risks, namespace)
    risks_of_control: dict[str, list[str]] = defaultdict(list)
    risks: list[JSON] = []
    for r in a.risks:
        risk = _risk(r, namespace, parties, tool, risk_observations.get(r.id, ()))
        risks.append(risk)
        for c in dict.fromkeys(r.controls_2022):
            risks_of_control[c].append(risk["uuid"])

    findings = [
        _finding(c, scope, tool, observation_of, risks_of_control.get(c.control_2022, ()), failing_checks.get(c.control_2022))
        for c in a.controls
    ]

    field = a.period_by.replace("_", " ")
    result: JSON = {
        "uuid": _uuid(scope, "result"),
        "title": _line(f"Incident records by {field}, {_ts(a.period_start)} to {_ts(a.period_end)}", "Incident records"),
        "description": (
            f"GapBridge's checks of the {len(a.incidents)} incident records whose {field} falls in the period, against "
            f"{len(a.controls)} {_CATALOGUE} controls (ruleset {a.ruleset_hash}"
            + (f", overlays {', '.join(a.overlays)}" if a.overlays else "")
            + "). A control is not satisfied when any of its checks failed with no accepted risk covering the failure."
        ),
        "start": _ts(a.period_start),
        "end": _ts(a.period_end),
        "reviewed-controls": _reviewed_controls(a),
    }
    _put(result, "observations", observations)
    _put(result, "risks", risks)
    _put(result, "findings", findings)

    metadata = _metadata(a, a.title)
    if parties:
        metadata["roles"] = [{"id": _RISK_OWNER, "title": "Risk owner", "description": "Approves the acceptance of a residual risk."}]
        metadata["parties"] = [{"uuid": p, "type": "person", "name": name} for name, p in parties.items()]
        metadata["responsible-parties"] = [{"role-id": _RISK_OWNER, "party-uuids": list(parties.values())}]
    results: JSON = {
        "uuid": _uuid(scope, "assessment-results", _ts(a.generated_at)),
        "metadata": metadata,
        "import-ap": {"href": plan_href},
        "results": [result],
    }
    if resources:
        results["back-matter"] = {"resources": resources}
    return {"assessment-results": results}


def _check(a: Assessment) -> None:
    if not a.controls:
        raise ValueError("an assessment reviews at least one control: OSCAL's reviewed-controls cannot be empty")
    for dt in (a.period_start, a.period_end, a.generated_at):
        _ts(dt)  # refuses a naive datetime before anything compares them
    if a.period_end < a.period_start:
        raise ValueError(f"the period ends ({a.period_end}) before it starts ({a.period_start})")


def _scope(a: Assessment, namespace: uuid.UUID) -> uuid.UUID:
    """The namespace of one assessment's own subjects: the same period, field and overlays are the same assessment."""
    return uuid.uuid5(namespace, "\x1f".join(("assessment", a.period_by, _ts(a.period_start), _ts(a.period_end), *sorted(a.overlays))))


def _uuid(namespace: uuid.UUID, *parts: object) -> str:
    return str(uuid.uuid5(namespace, "\x1f".join(str(p) for p in parts)))


def _tool_uuid(namespace: uuid.UUID) -> str:
    return _uuid(namespace, "component", "gapbridge")


def _ts(dt: datetime) -> str:
    """ISO 8601 in UTC with "Z", the form OSCAL's date-time-with-timezone pattern takes."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt!r}: the assessment's datetimes must be aware")
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _line(text: str | None, fallback: str) -> str:
    """One line, no space at either end: OSCAL strings and markup-lines allow no line break."""
    return (" ".join(text.split()) if text else "") or fallback


def _href(url: str) -> str:
    """A ticket URL as a valid uri-reference: spaces and non-ASCII percent-encoded, everything else kept."""
    return quote(url.strip(), safe=":/?#[]@!$&'()*+,;=%~")


def _prop(name: str, value: object, cls: str | None = None) -> JSON | None:
    text = _line(str(value) if value is not None else None, "")
    if not text:
        return None
    prop: JSON = {"name": name, "ns": GAPBRIDGE_NS, "value": text}
    if cls:
        prop["class"] = cls
    return prop


def _put(obj: JSON, key: str, items: Iterable[Any]) -> None:
    """Set a list only when it has items: every OSCAL array has minItems 1."""
    kept = [i for i in items if i is not None]
    if kept:
        obj[key] = kept


def _metadata(a: Assessment, title: str) -> JSON:
    md: JSON = {
        "title": _line(title, "GapBridge assessment"),
        "last-modified": _ts(a.generated_at),
        "version": _ts(a.generated_at),  # each export is a revision; its time tells it from the others
        "oscal-version": OSCAL_VERSION,
    }
    _put(md, "props", [
        _prop("gapbridge-version", a.gapbridge_version),
        _prop("ruleset-hash", a.ruleset_hash),
        _prop("period-by", a.period_by),
        *(_prop("overlay", o) for o in a.overlays),
    ])
    return md


def _control_props(c: ControlResult) -> list[JSON | None]:
    return [_prop("iso27001-2022", c.control_2022), *(_prop("iso27001-2013", old) for old in c.controls_2013)]


def _reviewed_controls(a: Assessment) -> JSON:
    return {
        "description": f"The {_CATALOGUE} controls GapBridge checks incident records against.",
        "props": [{"name": "catalogue", "ns": GAPBRIDGE_NS, "value": _CATALOGUE}, {"name": "ruleset-hash", "ns": GAPBRIDGE_NS, "value": _line(a.ruleset_hash, "unknown")}],
        "control-selections": [{"include-controls": [{"control-id": control_id(c.control_2022)} for c in a.controls]}],
        "control-objective-selections": [{"include-objectives": [{"objective-id": objective_id(c.control_2022)} for c in a.controls]}],
    }


def _objective(c: ControlResult, a: Assessment) -> JSON:
    """A local objective per control: the objective-id the findings target, with both editions' labels."""
    objective: JSON = {"control-id": control_id(c.control_2022), "description": _line(c.title, c.control_2022)}
    _put(objective, "props", _control_props(c))
    objective["parts"] = [{
        "id": objective_id(c.control_2022),
        "name": "assessment-objective",
        "prose": (
            f"Every incident record in scope of {c.control_2022} meets the GapBridge checks mapped to it (ruleset "
            f"{a.ruleset_hash}). A failed check counts against the control unless an accepted risk covers it."
        ),
    }]
    return objective


def _incident_label(inc: ObservedIncident) -> str:
    return _line(inc.number, f"#{inc.id}")


def _observation(inc: ObservedIncident, obs: str, res: str, origins: list[JSON], collected: str) -> JSON:
    label = _incident_label(inc)
    head = f"Incident {label} from {_line(inc.source, 'an unnamed source')}"
    if inc.severity:
        head += f", severity {_line(inc.severity, '')}"
    if inc.opened_at:
        head += f", opened {_ts(inc.opened_at)}"
    if inc.closed_at:
        head += f", closed {_ts(inc.closed_at)}"
    counts = Counter(f.status for f in inc.findings)
    if inc.findings:
        summary = (
            f"Checks: {counts['pass']} passed, {counts['fail']} failed, {counts['accepted']} failed under an accepted risk, "
            f"{counts['pending']} pending."
        )
    else:
        summary = "No check applied to it."
    items = []
    for f in inc.findings:
        if f.status == "pass":
            continue
        what = f"- {f.status}: {_line(f.check_title, f.check_id)} ({f.check_id}; {', '.join(f.controls_2022) or 'no control'})"
        found = [_line(d, "") for d in f.details]
        if any(found):
            what += ": " + "; ".join(d for d in found if d)
        items.append(what)
    # Markdown (OSCAL's markup-multiline): paragraphs apart, then the list of what did not pass.
    description = "\n\n".join([head + ".", summary, *(["\n".join(items)] if items else [])])
    observation: JSON = {
        "uuid": obs,
        "title": _line(f"{label}: {inc.title}" if inc.title and inc.title.strip() else f"Incident {label}", f"Incident {label}"),
        "description": description,
    }
    _put(observation, "props", [
        _prop("incident-id", inc.id),
        _prop("source", inc.source),
        _prop("number", inc.number),
        _prop("severity", inc.severity),
        *(_prop("check", f.check_id, f.status) for f in inc.findings),
    ])
    # EXAMINE, not TEST: GapBridge reviews the record an activity left, it does not exercise the process (SP 800-53A).
    observation["methods"] = ["EXAMINE"]
    observation["types"] = ["control-objective"]
    observation["origins"] = origins
    observation["subjects"] = [{"subject-uuid": res, "type": "resource", "title": f"Incident {label}"}]
    evidence: JSON = {
        # Without a URL the evidence points at the ticket's resource in the back matter.
        "href": _href(inc.url) if inc.url and inc.url.strip() else f"#{res}",
        "description": f"The ticket {label} in {_line(inc.source, 'its ITSM tool')}: the record GapBridge examined.",
    }
    observation["relevant-evidence"] = [evidence]
    observation["collected"] = collected
    return observation


def _resource(inc: ObservedIncident, res: str) -> JSON:
    resource: JSON = {"uuid": res, "title": f"Ticket {_incident_label(inc)}"}
    _put(resource, "props", [_prop("incident-id", inc.id), _prop("source", inc.source), _prop("number", inc.number)])
    if inc.url and inc.url.strip():
        resource["rlinks"] = [{"href": _href(inc.url)}]
    return resource


def _parties(risks: Sequence[AcceptedRisk], namespace: uuid.UUID) -> dict[str, str]:
    """Approver name -> party uuid, in order of first appearance."""
    parties: dict[str, str] = {}
    for r in risks:
        name = _line(r.approver, "unknown approver")
        if name not in parties:
            parties[name] = _uuid(namespace, "party", name)
    return parties


def _risk(r: AcceptedRisk, namespace: uuid.UUID, parties: dict[str, str], origins: list[JSON], observations: Sequence[str]) -> JSON:
    key = f"risk:{r.id}"
    approver = _line(r.approver, "unknown approver")
    party = parties[approver]
    controls = ", ".join(r.controls_2022) or "no control"
    if r.incident_id is not None:
        scope = f"incident {r.incident_id}"
    elif r.scope:
        scope = "incidents with " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r.scope.items())
    else:
        scope = "every incident"
    response = _uuid(namespace, key, "acceptance")
    justification = r.justification.strip() or "(no justification recorded)"
    entries: list[JSON] = [{
        "uuid": _uuid(namespace, key, "accepted"),
        "title": "Risk accepted",
        "description": f"{approver} accepted the failure of {r.check_id} for {scope} until {_ts(r.expires_at)}.",
        "start": _ts(r.created_at),
        "props": [{"name": "type", "value": "dr-approved"}],
        "logged-by": [{"party-uuid": party, "role-id": _RISK_OWNER}],
        "status-change": "deviation-approved",
        "related-responses": [{"response-uuid": response}],
        "remarks": justification,
    }]
    if r.status == "revoked" and r.revoked_at is not None:
        entries.append({
            "uuid": _uuid(namespace, key, "revoked"),
            "title": "Acceptance revoked",
            "description": "The acceptance was revoked: the gap counts as a failure again.",
            "start": _ts(r.revoked_at),
            "props": [{"name": "type", "value": "status-update"}],
            "status-change": "open",
        })
    elif r.status == "expired":
        entries.append({
            "uuid": _uuid(namespace, key, "expired"),
            "title": "Acceptance expired",
            "description": "The acceptance ran out: the gap counts as a failure again.",
            "start": _ts(r.expires_at),
            "props": [{"name": "type", "value": "status-update"}],
            "status-change": "open",
        })
    risk: JSON = {
        "uuid": _uuid(namespace, key),
        "title": _line(f"Accepted risk {r.id}: {r.check_title}", f"Accepted risk {r.id}"),
        "description": f"Check {r.check_id} ({_line(r.check_title, r.check_id)}) failed for {scope}; the gap was accepted. Controls: {controls}.",
        "statement": (
            f"While the acceptance is in force, failures of {r.check_id} for {scope} do not count against {controls}; "
            "the gap itself remains until it is remediated."
        ),
    }
    _put(risk, "props", [
        _prop("acceptance-id", r.id),
        _prop("check-id", r.check_id),
        _prop("incident-id", r.incident_id),
        *(_prop(f"scope-{k.replace('_', '-')}", v) for k, v in r.scope.items()),
        _prop("acceptance-status", r.status),
        *(_prop("iso27001-2022", c) for c in r.controls_2022),
    ])
    risk["status"] = _RISK_STATUS[r.status]
    risk["origins"] = origins
    risk["deadline"] = _ts(r.expires_at)
    risk["remediations"] = [{
        "uuid": response,
        # The response is the acceptance itself, decided when it was approved: "completed", of type "accept".
        "lifecycle": "completed",
        "title": "Risk acceptance",
        "description": justification,
        "props": [{"name": "type", "value": "accept"}],
        "origins": [{"actors": [{"type": "party", "actor-uuid": party, "role-id": _RISK_OWNER}]}],
        "remarks": f"Approved by {approver} on {_ts(r.created_at)}, until {_ts(r.expires_at)}.",
    }]
    risk["risk-log"] = {"entries": entries}
    _put(risk, "related-observations", [{"observation-uuid": o} for o in observations])
    return risk


def _finding(c: ControlResult, scope: uuid.UUID, origins: list[JSON], observation_of: dict[int, str],
             risks: Sequence[str], failing: Counter[str] | None) -> JSON:
    if c.failed:
        state, reason = "not-satisfied", "fail"
        remarks = f"{c.failed} failed with no accepted risk covering the failure"
        if failing:
            remarks += ": " + ", ".join(f"{check} ({n})" for check, n in failing.most_common())
        remarks += "."
        if c.accepted:
            remarks += f" {c.accepted} more failed under an accepted risk."
    elif c.accepted:
        state, reason = "satisfied", "other"
        remarks = f"Satisfied only through accepted risks: {c.accepted} failed under an accepted risk (see the related risks)."
    elif c.passed:
        state, reason = "satisfied", "pass"
        remarks = f"Every decided check passed ({c.passed})."
    else:
        # Nothing failed and nothing passed: no evidence against the control, none for it either.
        state, reason = "satisfied", "other"
        remarks = f"No check of this control was decided in the period ({c.in_scope} in scope, {c.pending} pending)."
    finding: JSON = {
        "uuid": _uuid(scope, "finding", c.control_2022),
        "title": _line(f"{c.control_2022} {c.title}", c.control_2022),
        "description": (
            f"{c.in_scope} incidents in scope of {c.control_2022}: {c.passed} passed, {c.failed} failed, "
            f"{c.accepted} failed under an accepted risk, {c.pending} pending, {c.not_applicable} not applicable."
        ),
    }
    _put(finding, "props", [
        *_control_props(c),
        _prop("in-scope", c.in_scope),
        _prop("passed", c.passed),
        _prop("failed", c.failed),
        _prop("accepted", c.accepted),
        _prop("pending", c.pending),
        _prop("not-applicable", c.not_applicable),
    ])
    finding["origins"] = origins
    finding["target"] = {
        "type": "objective-id",
        "target-id": objective_id(c.control_2022),
        "status": {"state": state, "reason": reason},
    }
    _put(finding, "related-observations", [{"observation-uuid": observation_of[i]} for i in c.incident_ids if i in observation_of])
    _put(finding, "related-risks", [{"risk-uuid": r} for r in risks])
    finding["remarks"] = remarks
    return finding
