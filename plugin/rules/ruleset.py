"""Load, validate and compile ``mappings/`` into a Ruleset.

Layout of a mappings folder::

    catalogue/iso27001-2022.yaml   controls and clauses, each with the 2013 ids it replaced
    catalogue/iso27001-2013.yaml
    subprocesses.yaml              the ITIL sub-processes and their relation to controls
    checks/*.yaml                  checks: [...]
    overlays/*.yaml                overlay: {...}, checks: [...]  (only when switched on)

An organisation's override file is layered on top without editing these files.
Every fault is collected (lint mode) and reported with its file, line and key path.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from .across import AcrossRule, compile_rule
from .conditions import ALWAYS, Predicate, Scope, compile_condition
from .yamlsource import LocatedDict, LocatedList, Location, MappingError, MappingErrors, load_yaml

PASS, FAIL, NOT_APPLICABLE = "pass", "fail", "not_applicable"
SEVERITIES = ("critical", "high", "medium", "low")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
RELATIONS = ("covered", "gap", "improvement")
EDITIONS = ("2022", "2013")
CHECK_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")
CHECK_KEYS = {
    "id", "title", "subprocess", "controls", "controls_2013", "relation", "severity",
    "applies_when", "requires", "rationale", "remediation", "params", "missing", "scope", "rule",
}
REQUIRED_CHECK_KEYS = ("id", "title", "subprocess", "controls", "severity", "rationale", "remediation")
OVERRIDE_CHECK_KEYS = {"enabled", "severity", "params", "title", "remediation", "applies_when", "requires", "missing"}


# --- catalogue ----------------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    edition: str
    id: str  # "A.5.28" for Annex A, "5.3" for a management-system clause
    title: str
    kind: str  # annex_a | clause
    theme: str | None = None
    was: tuple[str, ...] = ()  # 2022 only: the 2013 ids it replaced

    @property
    def key(self) -> str:
        return f"{self.edition}:{self.id}"


@dataclass
class Catalogue:
    controls: dict[str, dict[str, Control]] = field(default_factory=lambda: {e: {} for e in EDITIONS})
    successors: dict[str, list[str]] = field(default_factory=dict)  # 2013 id -> 2022 ids

    def get(self, edition: str, cid: str) -> Control | None:
        return self.controls[edition].get(cid)

    def predecessors(self, cid_2022: str) -> tuple[str, ...]:
        c = self.controls["2022"].get(cid_2022)
        return c.was if c else ()

    def resolve(self, ref: str) -> list[Control]:
        """Controls an auditor's reference names, in either edition.

        Accepts ``A.5.28``, ``5.28``, ``A.16.1.7``, ``2013:A.16.1.7``, ``2022:10.1`` and
        ``clause 5.3``. A bare ``5.3`` that is both a clause and an Annex A control
        resolves to both; prefix ``A.`` or ``clause`` to choose.
        """
        text = ref.strip()
        editions: Iterable[str] = EDITIONS
        m = re.match(r"^(2013|2022)\s*[:/]\s*(.+)$", text)
        if m:
            editions, text = (m.group(1),), m.group(2).strip()
        clause_only = text.lower().startswith("clause ")
        if clause_only:
            text = text[7:].strip()
        if text[:2].lower() == "a.":
            candidates = ["A." + text[2:]]
        elif clause_only:
            candidates = [text]
        else:
            candidates = [text, "A." + text]
        found = []
        for ed in editions:
            for cid in candidates:
                c = self.controls[ed].get(cid)
                if c:
                    found.append(c)
        return found


def _load_catalogue(root: Path, errors: list[MappingError]) -> Catalogue:
    cat = Catalogue()
    for edition in EDITIONS:
        path = root / "catalogue" / f"iso27001-{edition}.yaml"
        name = _display(path, root)
        try:
            doc = load_yaml(path, name)
        except MappingError as e:
            errors.append(e)
            continue
        if not isinstance(doc, dict) or str(doc.get("edition")) != edition:
            errors.append(MappingError(Location(name, 1), "edition", f"expected edition: \"{edition}\""))
            continue
        for section, kind in (("clauses", "clause"), ("controls", "annex_a")):
            items = doc.get(section)
            if not isinstance(items, list):
                errors.append(MappingError(_loc(doc, section), section, "expected a list"))
                continue
            for i, item in enumerate(items):
                p = f"{section}[{i}]"
                try:
                    cid, title = item["id"], item["title"]
                    if not isinstance(cid, str) or not isinstance(title, str):
                        raise KeyError
                except (KeyError, TypeError):
                    errors.append(MappingError(_loc(items, i), p, "expected {id: string, title: string}"))
                    continue
                if (kind == "annex_a") != cid.startswith("A."):
                    errors.append(MappingError(_loc(items, i), f"{p}.id", f"{section} ids {'start' if kind == 'annex_a' else 'do not start'} with 'A.', got {cid!r}"))
                    continue
                if cid in cat.controls[edition]:
                    errors.append(MappingError(_loc(items, i), f"{p}.id", f"duplicate control id {cid!r}"))
                    continue
                was = tuple(str(w) for w in (item.get("was") or ())) if edition == "2022" else ()
                cat.controls[edition][cid] = Control(edition, cid, title, kind, item.get("theme"), was)
    for c in cat.controls["2022"].values():
        for old in c.was:
            if cat.controls["2013"] and old not in cat.controls["2013"]:
                errors.append(MappingError(Location("catalogue/iso27001-2022.yaml", 0), f"controls.{c.id}.was", f"unknown 2013 id {old!r}"))
            cat.successors.setdefault(old, []).append(c.id)
    return cat


# --- sub-processes --------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    subprocess: str | None  # None: no specific sub-process
    control: str  # 2022 id
    relation: str
    rationale: str
    needs: str = ""


@dataclass(frozen=True)
class SubProcess:
    id: str
    name: str
    objective: str


def _load_subprocesses(root: Path, cat: Catalogue, errors: list[MappingError]) -> tuple[dict[str, SubProcess], list[Relation]]:
    path = root / "subprocesses.yaml"
    name = _display(path, root)
    subs: dict[str, SubProcess] = {}
    relations: list[Relation] = []
    try:
        doc = load_yaml(path, name)
    except MappingError as e:
        errors.append(e)
        return subs, relations
    items = doc.get("subprocesses") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        errors.append(MappingError(Location(name, 1), "subprocesses", "expected a list of sub-processes"))
        return subs, relations
    for i, item in enumerate(items):
        p = f"subprocesses[{i}]"
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("id", "name", "objective")):
            errors.append(MappingError(_loc(items, i), p, "expected id, name and objective (strings)"))
            continue
        subs[item["id"]] = SubProcess(item["id"], item["name"], item["objective"])
        relations.extend(_relations(item.get("relations") or [], item["id"], f"{p}.relations", cat, errors, _loc(item, "relations")))
    general = doc.get("general_relations") or []
    relations.extend(_relations(general, None, "general_relations", cat, errors, _loc(doc, "general_relations")))
    return subs, relations


def _relations(items: Any, sub: str | None, path: str, cat: Catalogue, errors: list[MappingError], loc: Location) -> list[Relation]:
    out: list[Relation] = []
    if not isinstance(items, list):
        errors.append(MappingError(loc, path, "expected a list"))
        return out
    for j, rel in enumerate(items):
        rp = f"{path}[{j}]"
        rloc = _loc(items, j)
        if not isinstance(rel, dict):
            errors.append(MappingError(rloc, rp, "expected {control, relation, rationale}"))
            continue
        extra = set(rel) - {"control", "relation", "rationale", "needs"}
        if extra:
            errors.append(MappingError(rloc, f"{rp}.{sorted(extra)[0]}", "unknown key; expected control, relation, rationale, needs"))
            continue
        control, relation = rel.get("control"), rel.get("relation")
        if not isinstance(control, str) or cat.get("2022", control) is None:
            errors.append(MappingError(rloc, f"{rp}.control", f"unknown 2022 control or clause {control!r}"))
            continue
        if relation not in RELATIONS:
            errors.append(MappingError(rloc, f"{rp}.relation", f"expected one of {', '.join(RELATIONS)}, got {relation!r}"))
            continue
        if not isinstance(rel.get("rationale"), str) or not rel["rationale"].strip():
            errors.append(MappingError(rloc, f"{rp}.rationale", "a relation needs a rationale"))
            continue
        out.append(Relation(sub, control, relation, rel["rationale"].strip(), str(rel.get("needs") or "").strip()))
    return out


# --- checks ---------------------------------------------------------------------------


@dataclass
class Check:
    id: str
    title: str
    subprocess: str
    controls_2022: tuple[str, ...]
    controls_2013: tuple[str, ...]
    relation: str
    severity: str
    rationale: str
    remediation: str
    applies: Predicate
    requires: Predicate
    missing: str
    params: dict[str, Any]
    origin: Location
    overlay: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    definition: dict[str, Any] = field(default_factory=dict)  # the effective YAML, for the hash and explain
    rule: AcrossRule | None = None  # set for checks across incidents
    fields: frozenset[str] = frozenset()  # canonical fields the check reads

    @property
    def across(self) -> bool:
        return self.rule is not None

    def evaluate(self, incident: Mapping[str, Any], now: datetime) -> str:
        if not self.applies.fn(incident, now):
            return NOT_APPLICABLE
        return PASS if self.requires.fn(incident, now) else FAIL

    def explain(self, incident: Mapping[str, Any], now: datetime) -> list[str]:
        return self.requires.explain(incident, now)


@dataclass
class Ruleset:
    root: Path
    catalogue: Catalogue
    subprocesses: dict[str, SubProcess]
    relations: list[Relation]
    checks: list[Check]
    hash: str
    overlays: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.by_id = {c.id: c for c in self.checks}
        self.incident_checks = [c for c in self.checks if not c.across]
        self.across_checks = [c for c in self.checks if c.across]

    def check(self, check_id: str) -> Check | None:
        return self.by_id.get(check_id)

    def assess(self, incident: Mapping[str, Any], now: datetime) -> list[tuple[Check, str]]:
        """Per-incident checks only; checks across incidents need the whole set."""
        return [(c, c.evaluate(incident, now)) for c in self.incident_checks]


def _loc(node: Any, key: Any = None) -> Location:
    if isinstance(node, (LocatedDict, LocatedList)):
        return node.loc(key)
    return Location("?", 0)


def _display(path: Path, root: Path) -> str:
    try:
        return f"mappings/{path.relative_to(root).as_posix()}"
    except ValueError:
        return str(path)


def _plain(node: Any) -> Any:
    return json.loads(json.dumps(node, default=str))


def _check_docs(root: Path, overlays: Iterable[str], errors: list[MappingError]) -> list[tuple[Any, str, Location, str | None]]:
    """(check node, key path, location, overlay) for every check in the shipped files."""
    found: list[tuple[Any, str, Location, str | None]] = []
    for path in sorted((root / "checks").glob("*.yaml")):
        name = _display(path, root)
        try:
            doc = load_yaml(path, name)
        except MappingError as e:
            errors.append(e)
            continue
        found.extend(_checks_in(doc, name, None, errors))
    wanted = set(overlays)
    seen = set()
    for path in sorted((root / "overlays").glob("*.yaml")):
        name = _display(path, root)
        try:
            doc = load_yaml(path, name)
        except MappingError as e:
            errors.append(e)
            continue
        meta = doc.get("overlay") if isinstance(doc, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("id"), str):
            errors.append(MappingError(Location(name, 1), "overlay", "expected overlay: {id, title}"))
            continue
        seen.add(meta["id"])
        if meta["id"] in wanted:
            found.extend(_checks_in(doc, name, meta["id"], errors))
    for missing in sorted(wanted - seen):
        errors.append(MappingError(Location("configuration", 0), "mappings.regulatory", f"no overlay named {missing!r} in mappings/overlays (found: {', '.join(sorted(seen)) or 'none'})"))
    return found


def _checks_in(doc: Any, name: str, overlay: str | None, errors: list[MappingError]) -> list[tuple[Any, str, Location, str | None]]:
    items = doc.get("checks") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        errors.append(MappingError(_loc(doc) if doc is not None else Location(name, 1), "checks", "expected a list of checks"))
        return []
    return [(c, f"checks[{i}]", _loc(items, i), overlay) for i, c in enumerate(items)]


def available_overlays(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted((root / "overlays").glob("*.yaml")):
        try:
            doc = load_yaml(path, _display(path, root))
        except MappingError:
            continue
        meta = doc.get("overlay") if isinstance(doc, dict) else None
        if isinstance(meta, dict) and "id" in meta:
            out[str(meta["id"])] = str(meta.get("title", meta["id"]))
    return out


def compile_check(node: Any, path: str, loc: Location, cat: Catalogue, subs: Mapping[str, SubProcess],
                  relations: list[Relation], overlay: str | None, provenance: dict[str, str]) -> Check:
    """Validate and compile one check definition; raise MappingError on the first fault."""
    if not isinstance(node, dict):
        raise MappingError(loc, path, "expected a check mapping")
    unknown = sorted(set(node) - CHECK_KEYS)
    if unknown:
        raise MappingError(_loc(node, unknown[0]), f"{path}.{unknown[0]}", f"unknown key; expected one of: {', '.join(sorted(CHECK_KEYS))}")
    for k in REQUIRED_CHECK_KEYS:
        if k not in node:
            raise MappingError(loc, path, f"missing required key {k!r}")
    cid = node["id"]
    if not isinstance(cid, str) or not CHECK_ID.match(cid):
        raise MappingError(_loc(node, "id"), f"{path}.id", f"check ids look like EVID-001 (capitals, digits, dashes), got {cid!r}")
    path = f"{path}({cid})"
    for k in ("title", "rationale", "remediation"):
        if not isinstance(node[k], str) or not node[k].strip():
            raise MappingError(_loc(node, k), f"{path}.{k}", "expected non-empty text")
    sub = node["subprocess"]
    if sub not in subs:
        raise MappingError(_loc(node, "subprocess"), f"{path}.subprocess", f"unknown ITIL sub-process {sub!r}; expected one of: {', '.join(subs)}")
    sev = node["severity"]
    if sev not in SEVERITIES:
        raise MappingError(_loc(node, "severity"), f"{path}.severity", f"expected one of {', '.join(SEVERITIES)}, got {sev!r}")
    controls = node["controls"]
    if not isinstance(controls, list) or not controls:
        raise MappingError(_loc(node, "controls"), f"{path}.controls", "expected a non-empty list of ISO 27001:2022 ids such as A.5.28")
    for i, c in enumerate(controls):
        if not isinstance(c, str) or cat.get("2022", c) is None:
            raise MappingError(_loc(controls, i), f"{path}.controls[{i}]", f"unknown ISO 27001:2022 control or clause {c!r}")
    c2013: list[str]
    if "controls_2013" in node:
        c2013 = node["controls_2013"]
        if not isinstance(c2013, list) or not c2013:
            raise MappingError(_loc(node, "controls_2013"), f"{path}.controls_2013", "expected a non-empty list of ISO 27001:2013 ids")
        for i, c in enumerate(c2013):
            if not isinstance(c, str) or cat.get("2013", c) is None:
                raise MappingError(_loc(c2013, i), f"{path}.controls_2013[{i}]", f"unknown ISO 27001:2013 control or clause {c!r}")
    else:
        c2013 = [old for c in controls for old in cat.predecessors(c)]
        if not c2013:
            raise MappingError(_loc(node, "controls"), f"{path}.controls", f"{controls} have no 2013 predecessor; name them in controls_2013 so the finding resolves in both editions")
    relation = node.get("relation")
    if relation is None:
        rel = next((r for r in relations if r.control in controls and r.subprocess in (sub, None)), None)
        relation = rel.relation if rel else "covered"
    elif relation not in RELATIONS:
        raise MappingError(_loc(node, "relation"), f"{path}.relation", f"expected one of {', '.join(RELATIONS)}, got {relation!r}")
    params = node.get("params") or {}
    if not isinstance(params, dict):
        raise MappingError(_loc(node, "params"), f"{path}.params", "expected a mapping of parameter -> value")
    scope_kind = node.get("scope", "incident")
    if scope_kind not in ("incident", "across"):
        raise MappingError(_loc(node, "scope"), f"{path}.scope", f"expected incident or across, got {scope_kind!r}")
    rule = None
    if scope_kind == "across":
        if "rule" not in node:
            raise MappingError(loc, path, "a check with scope: across needs a rule")
        rule = compile_rule(node["rule"], f"{path}.rule", _loc(node, "rule"))
    elif "rule" in node:
        raise MappingError(_loc(node, "rule"), f"{path}.rule", "rule belongs to checks with scope: across")
    conditions = Scope(params)
    applies = ALWAYS
    if node.get("applies_when") is not None:
        applies = compile_condition(node["applies_when"], f"{path}.applies_when", _loc(node, "applies_when"), conditions)
    if "requires" in node:
        requires = compile_condition(node["requires"], f"{path}.requires", _loc(node, "requires"), conditions)
    elif rule is not None and rule.type == "open_weakness":
        requires = ALWAYS
    else:
        raise MappingError(loc, path, "missing required key 'requires'")
    missing = node.get("missing") or requires.text
    return Check(
        id=cid, title=node["title"].strip(), subprocess=sub, controls_2022=tuple(controls),
        controls_2013=tuple(dict.fromkeys(c2013)), relation=relation, severity=sev,
        rationale=" ".join(node["rationale"].split()), remediation=" ".join(node["remediation"].split()),
        applies=applies, requires=requires, missing=str(missing), params=dict(params), origin=loc,
        overlay=overlay, provenance=provenance, definition=_plain(node), rule=rule,
        fields=frozenset(conditions.used | (rule.fields if rule else frozenset())),
    )


# --- overrides --------------------------------------------------------------------------


def _load_overrides(path: Path | None, errors: list[MappingError]) -> tuple[dict[str, Any], list[tuple[Any, str, Location]]]:
    """Per-check overrides by id, and added checks, from an organisation's file."""
    if path is None:
        return {}, []
    name = str(path)
    try:
        doc = load_yaml(path, name)
    except MappingError as e:
        errors.append(e)
        return {}, []
    if doc is None:
        return {}, []
    if not isinstance(doc, dict):
        errors.append(MappingError(Location(name, 1), "", "expected a mapping with checks and/or add_checks"))
        return {}, []
    extra = sorted(set(doc) - {"checks", "add_checks"})
    if extra:
        errors.append(MappingError(_loc(doc, extra[0]), extra[0], "unknown key; expected checks or add_checks"))
    per_check = doc.get("checks") or {}
    if not isinstance(per_check, dict):
        errors.append(MappingError(_loc(doc, "checks"), "checks", "expected a mapping of check id -> overrides"))
        per_check = {}
    added = doc.get("add_checks") or []
    if not isinstance(added, list):
        errors.append(MappingError(_loc(doc, "add_checks"), "add_checks", "expected a list of checks"))
        added = []
    return per_check, [(c, f"add_checks[{i}]", _loc(added, i)) for i, c in enumerate(added)]


def _apply_override(node: Any, ov: Any, cid: str, errors: list[MappingError], provenance: dict[str, str]) -> Any:
    """A copy of a check definition with the organisation's values laid over it."""
    path = f"checks.{cid}"
    if not isinstance(ov, dict):
        errors.append(MappingError(_loc(ov), path, "expected a mapping of overrides"))
        return node
    unknown = sorted(set(ov) - OVERRIDE_CHECK_KEYS)
    if unknown:
        errors.append(MappingError(_loc(ov, unknown[0]), f"{path}.{unknown[0]}", f"cannot override this; expected one of: {', '.join(sorted(OVERRIDE_CHECK_KEYS))}"))
        return node
    merged = LocatedDict(copy.copy(node))
    merged.location = node.location
    merged.key_locations = dict(node.key_locations)
    for key, value in ov.items():
        if key == "enabled":
            continue
        if key == "params":
            base = node.get("params") or {}
            if not isinstance(value, dict):
                errors.append(MappingError(_loc(ov, key), f"{path}.params", "expected a mapping of parameter -> value"))
                continue
            unknown_params = sorted(set(value) - set(base))
            if unknown_params:
                errors.append(MappingError(_loc(value, unknown_params[0]), f"{path}.params.{unknown_params[0]}", f"unknown parameter; {cid} has: {', '.join(sorted(base)) or 'none'}"))
                continue
            params = LocatedDict({**base, **value})
            params.location = _loc(ov, key)
            # overrides come from load_yaml, which builds every mapping as a LocatedDict
            params.key_locations = {**getattr(base, "key_locations", {}), **cast(LocatedDict, value).key_locations}
            merged["params"] = params
            for p in value:
                provenance[f"params.{p}"] = str(_loc(value, p))
            continue
        merged[key] = value
        merged.key_locations[key] = _loc(ov, key)
        provenance[key] = str(_loc(ov, key))
    return merged


# --- the whole ruleset -------------------------------------------------------------------


def load_ruleset(root: Path, *, overrides: Path | None = None, overlays: Iterable[str] = ()) -> Ruleset:
    """Load and compile everything; raise MappingErrors listing every fault."""
    errors: list[MappingError] = []
    overlays = tuple(sorted(set(overlays)))
    cat = _load_catalogue(root, errors)
    subs, relations = _load_subprocesses(root, cat, errors)
    docs = _check_docs(root, overlays, errors)
    per_check, added = _load_overrides(overrides, errors)

    checks: list[Check] = []
    seen: dict[str, Location] = {}
    disabled: list[str] = []
    shipped_ids = {n.get("id") for n, *_ in docs if isinstance(n, dict)}
    for override_id in per_check:
        if override_id not in shipped_ids:
            errors.append(MappingError(_loc(per_check, override_id), f"checks.{override_id}", "no shipped check has this id (to add a check, use add_checks)"))
    candidates = [(n, p, loc, ov) for n, p, loc, ov in docs] + [(n, p, loc, None) for n, p, loc in added]
    for node, path, loc, overlay in candidates:
        cid = node.get("id") if isinstance(node, dict) else None
        provenance: dict[str, str] = {"definition": str(loc)}
        if cid in per_check:
            ov = per_check[cid]
            if isinstance(ov, dict) and ov.get("enabled") is False:
                disabled.append(cid)
                provenance["enabled"] = str(_loc(ov, "enabled"))
                seen[cid] = loc
                continue
            node = _apply_override(node, ov, cid, errors, provenance)
        try:
            check = compile_check(node, path, loc, cat, subs, relations, overlay, provenance)
        except MappingError as e:
            errors.append(e)
            continue
        if check.id in seen:
            errors.append(MappingError(loc, f"{path}.id", f"duplicate check id {check.id!r} (first defined at {seen[check.id]})"))
            continue
        seen[check.id] = loc
        checks.append(check)
    if errors:
        raise MappingErrors(errors)
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "checks": [c.definition for c in checks],
        "controls": {e: sorted((c.id, c.was) for c in cat.controls[e].values()) for e in EDITIONS},
    }, sort_keys=True, default=str).encode())
    return Ruleset(root, cat, subs, relations, checks, digest.hexdigest()[:16], overlays, tuple(disabled))
