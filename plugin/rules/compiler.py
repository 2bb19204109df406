"""Compile one check definition into a Check, reporting every fault of it in one pass."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .across import compile_rule
from .catalogue import Catalogue
from .clocks import compile_clock
from .conditions import ALWAYS, Predicate, Scope, compile_condition
from .model import GAP, IMPROVEMENT, KINDS, SEVERITIES, AcrossRule, Check
from .subprocesses import RELATIONS, Relation, SubProcess
from .yamlsource import Location, MappingError, MappingErrors, collecting, located

CHECK_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")
CHECK_KEYS = {
    "id", "title", "subprocess", "controls", "controls_2013", "relation", "kind", "severity",
    "applies_when", "requires", "clock", "rationale", "remediation", "params", "missing", "scope", "rule",
}
REQUIRED_CHECK_KEYS = ("id", "title", "subprocess", "controls", "severity", "rationale", "remediation")


def compile_check(node: Any, path: str, loc: Location, cat: Catalogue, subs: Mapping[str, SubProcess],
                  relations: list[Relation], overlay: str | None, provenance: dict[str, str]) -> Check:
    """Validate and compile one check definition; raise MappingErrors listing every fault found in it."""
    if not isinstance(node, dict):
        raise MappingError(loc, path, "expected a check mapping")
    faults: list[MappingError] = []

    def fault(where: Location, key_path: str, message: str) -> None:
        faults.append(MappingError(where, key_path, message))

    for key in sorted(set(node) - CHECK_KEYS, key=str):
        fault(located(node, key), f"{path}.{key}", f"unknown key; expected one of: {', '.join(sorted(CHECK_KEYS))}")
    for k in REQUIRED_CHECK_KEYS:
        if k not in node:
            fault(loc, path, f"missing required key {k!r}")
    cid = node.get("id")
    if "id" in node and (not isinstance(cid, str) or not CHECK_ID.match(cid)):
        fault(located(node, "id"), f"{path}.id", f"check ids look like EVID-001 (capitals, digits, dashes), got {cid!r}")
    if isinstance(cid, str):
        path = f"{path}({cid})"
    for k in ("title", "rationale", "remediation"):
        if k in node and (not isinstance(node[k], str) or not node[k].strip()):
            fault(located(node, k), f"{path}.{k}", "expected non-empty text")
    sub: str = node.get("subprocess") or ""
    if "subprocess" in node and sub not in subs:
        fault(located(node, "subprocess"), f"{path}.subprocess", f"unknown ITIL sub-process {sub!r}; expected one of: {', '.join(subs)}")
    sev: str = node.get("severity") or ""
    if "severity" in node and sev not in SEVERITIES:
        fault(located(node, "severity"), f"{path}.severity", f"expected one of {', '.join(SEVERITIES)}, got {sev!r}")
    controls: list[Any] = node.get("controls") or []
    controls_ok = isinstance(controls, list) and bool(controls)
    if "controls" in node and not controls_ok:
        fault(located(node, "controls"), f"{path}.controls", "expected a non-empty list of ISO 27001:2022 ids such as A.5.28")
    for i, c in enumerate(controls if controls_ok else []):
        if not isinstance(c, str) or cat.get("2022", c) is None:
            controls_ok = False
            why = cat.wrong_edition("2022", c) if isinstance(c, str) else None
            fault(located(controls, i), f"{path}.controls[{i}]", why or f"unknown ISO 27001:2022 control or clause {c!r}")
    c2013: list[str] = []
    if "controls_2013" in node:
        c2013 = node["controls_2013"]
        if not isinstance(c2013, list) or not c2013:
            fault(located(node, "controls_2013"), f"{path}.controls_2013", "expected a non-empty list of ISO 27001:2013 ids")
            c2013 = []
        for i, c in enumerate(c2013):
            if not isinstance(c, str) or cat.get("2013", c) is None:
                why = cat.wrong_edition("2013", c) if isinstance(c, str) else None
                fault(located(c2013, i), f"{path}.controls_2013[{i}]", why or f"unknown ISO 27001:2013 control or clause {c!r}")
    elif controls_ok:
        c2013 = [old for c in controls for old in cat.predecessors(c)]
        if not c2013:
            fault(located(node, "controls"), f"{path}.controls", f"{controls} have no 2013 predecessor; name them in controls_2013 so the finding resolves in both editions")
    relation = node.get("relation")
    if relation is None:
        rel = next((r for r in relations if controls_ok and r.control in controls and r.subprocess in (sub, None)), None)
        relation = rel.relation if rel else "covered"
    elif relation not in RELATIONS:
        fault(located(node, "relation"), f"{path}.relation", f"expected one of {', '.join(RELATIONS)}, got {relation!r}")
    kind = node.get("kind", IMPROVEMENT if relation == "improvement" else GAP)
    if kind not in KINDS:
        fault(located(node, "kind"), f"{path}.kind", f"expected gap (a nonconformity) or improvement, got {kind!r}")
    params = node.get("params") or {}
    if not isinstance(params, dict):
        fault(located(node, "params"), f"{path}.params", "expected a mapping of parameter -> value")
        params = {}
    scope_kind = node.get("scope", "incident")
    if scope_kind not in ("incident", "across"):
        fault(located(node, "scope"), f"{path}.scope", f"expected incident or across, got {scope_kind!r}")
    rule: AcrossRule | None = None
    if scope_kind == "across":
        if "rule" not in node:
            fault(loc, path, "a check with scope: across needs a rule")
        else:
            rule = collecting(faults, compile_rule, node["rule"], f"{path}.rule", located(node, "rule"))
        if "clock" in node:
            fault(located(node, "clock"), f"{path}.clock", "a check across incidents has no clock")
    elif "rule" in node:
        fault(located(node, "rule"), f"{path}.rule", "rule belongs to checks with scope: across")
    conditions = Scope(params)
    applies: Predicate | None = ALWAYS
    if node.get("applies_when") is not None:
        applies = collecting(faults, compile_condition, node["applies_when"], f"{path}.applies_when", located(node, "applies_when"), conditions)
    clock = None
    if "clock" in node and scope_kind != "across":
        clock = collecting(faults, compile_clock, node["clock"], f"{path}.clock", located(node, "clock"), conditions)
    requires: Predicate | None = ALWAYS
    if "requires" in node:
        requires = collecting(faults, compile_condition, node["requires"], f"{path}.requires", located(node, "requires"), conditions)
    elif "clock" not in node and not (isinstance(node.get("rule"), dict) and node["rule"].get("type") == "open_weakness"):
        fault(loc, path, "missing required key 'requires' (or a clock)")
    if faults:
        raise MappingErrors(faults)
    assert applies is not None and requires is not None and isinstance(cid, str)
    missing = node.get("missing") or (requires.text if requires is not ALWAYS else f"{clock.what} not recorded in time" if clock else "")
    return Check(
        id=cid, title=node["title"].strip(), subprocess=sub, controls_2022=tuple(controls),
        controls_2013=tuple(dict.fromkeys(c2013)), relation=relation, kind=kind, severity=sev,
        rationale=" ".join(node["rationale"].split()), remediation=" ".join(node["remediation"].split()),
        applies=applies, requires=requires, missing=str(missing), params=dict(params), origin=loc,
        overlay=overlay, provenance=provenance, definition=_plain(node), rule=rule, clock=clock,
        fields=frozenset(conditions.used | (rule.fields if rule else frozenset())),
    )


def _plain(node: Any) -> Any:
    return json.loads(json.dumps(node, default=str))
