"""What the ruleset says, for people and other tools: explain, docs/mappings.md, CISO Assistant."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import yaml

from .conditions import ALWAYS
from .model import Check, Ruleset
from .subprocesses import RELATIONS

SUBPROCESS_FRAMEWORK = "urn:gapbridge:risk:framework:itil-incident-subprocesses"
SUBPROCESS_LIBRARY = "urn:gapbridge:risk:library:itil-incident-subprocesses"
MAPPING_LIBRARY = "urn:gapbridge:risk:library:mapping-itil-incident-subprocesses-to-iso27001-2022"
ISO_2022_FRAMEWORK = "urn:intuitem:risk:framework:iso27001-2022"
ISO_2022_LIBRARY = "urn:intuitem:risk:library:iso27001-2022"
# How much of the control the sub-process already delivers, 0-10.
STRENGTH = {"covered": 8, "improvement": 3, "gap": 2}


def explain(ruleset: Ruleset, check: Check) -> str:
    """What a check checks, why, for which controls, and its effective values."""
    cat = ruleset.catalogue
    sub = ruleset.subprocesses[check.subprocess]

    def title(edition: str, cid: str) -> str:
        control = cat.get(edition, cid)
        return control.title if control else ""

    def controls(edition: str, ids: tuple[str, ...]) -> str:
        return "; ".join(f"{c} {title(edition, c)}".strip() for c in ids)

    lines = [
        f"{check.id}: {check.title}",
        f"  kind:              {check.kind} ({'a nonconformity when it fails' if check.kind == 'gap' else 'never an open gap'})",
        f"  severity:          {check.severity}",
        f"  ITIL sub-process:  {sub.name} ({check.subprocess}), relation: {check.relation}",
        f"  ISO 27001:2022:    {controls('2022', check.controls_2022)}",
        f"  ISO 27001:2013:    {controls('2013', check.controls_2013)}",
    ]
    if check.overlay:
        lines.append(f"  overlay:           {check.overlay}")
    if check.rule is not None:
        lines.append(f"  across incidents:  {json.dumps(check.definition.get('rule'))}")
    lines += [
        f"  applies when:      {check.applies.text}",
        *([f"  requires:          {check.requires.text}"] if check.requires is not ALWAYS else []),
        *([f"  clock:             {check.clock.text}; pending until then"] if check.clock else []),
        "",
        "  Why: " + check.rationale,
        "",
        "  What to do: " + check.remediation,
    ]
    if check.params:
        lines += ["", "  Effective parameters:"]
        for name, value in check.params.items():
            origin = check.provenance.get(f"params.{name}", check.provenance.get("definition", ""))
            lines.append(f"    {name} = {json.dumps(value, default=str)}   (from {origin})")
    lines += ["", "  Where each value comes from:"]
    for key in ("definition", *sorted(k for k in check.provenance if k != "definition" and not k.startswith("params."))):
        lines.append(f"    {key}: {check.provenance[key]}")
    return "\n".join(lines)


# --- docs/mappings.md ---------------------------------------------------------------------


def _cell(relations: set[str]) -> str:
    return ", ".join(r for r in RELATIONS if r in relations)


def mappings_markdown(ruleset: Ruleset) -> str:
    """The controls x sub-processes matrix and every check, generated from the YAML."""
    cat = ruleset.catalogue
    subs = list(ruleset.subprocesses.values())
    matrix: dict[str, dict[str | None, set[str]]] = {}
    for rel in ruleset.relations:
        matrix.setdefault(rel.control, {}).setdefault(rel.subprocess, set()).add(rel.relation)
    for check in ruleset.checks:
        for c in check.controls_2022:
            matrix.setdefault(c, {}).setdefault(check.subprocess, set()).add(check.relation)

    def order(cid: str) -> tuple:
        return (cid.startswith("A."), [int(x) for x in re.findall(r"\d+", cid)])

    out = [
        "# GapBridge mappings",
        "",
        "Generated from `mappings/` by `gapbridge mappings docs`; do not edit by hand.",
        f"Ruleset {ruleset.hash}: {len(ruleset.checks)} checks"
        + (f" (overlays: {', '.join(ruleset.overlays)})" if ruleset.overlays else "") + ".",
        "",
        "## ITIL sub-processes × ISO/IEC 27001 controls",
        "",
        "Relations: **covered** (ITIL already satisfies the control), **gap** (ITIL falls short; the control "
        "closes it), **improvement** (not required, makes the process better). Clauses are management-system "
        "clauses; `A.` ids are Annex A.",
        "",
        "| 2022 | 2013 | title | " + " | ".join(s.name for s in subs) + " | no specific sub-process |",
        "|---|---|---|" + "---|" * (len(subs) + 1),
    ]
    for cid in sorted(matrix, key=order):
        control = cat.get("2022", cid)
        row = matrix[cid]
        olds = ", ".join(control.was) if control else ""
        cells = [_cell(row.get(s.id, set())) for s in subs] + [_cell(row.get(None, set()))]
        out.append(f"| {cid} | {olds} | {control.title if control else ''} | " + " | ".join(cells) + " |")
    out += ["", "## Sub-processes", ""]
    for s in subs:
        out.append(f"- **{s.name}** (`{s.id}`): {s.objective}")
    out += ["", "### Relations and rationale", ""]
    for rel in ruleset.relations:
        name = ruleset.subprocesses[rel.subprocess].name if rel.subprocess else "No specific sub-process"
        needs = f" Still needed: {rel.needs}" if rel.needs else ""
        out.append(f"- {name} — {rel.control} ({rel.relation}): {rel.rationale}{needs}")
    out += ["", "## Checks", ""]
    out.append("Kinds: a failed **gap** is a nonconformity an auditor would raise; an **improvement** is an "
               "opportunity for improvement and never an open gap (see docs/findings.md).")
    out.append("")
    out.append("| id | title | sub-process | 2022 | 2013 | relation | kind | severity |")
    out.append("|---|---|---|---|---|---|---|---|")
    for ch in ruleset.checks:
        out.append(f"| [{ch.id}](#{ch.id.lower()}) | {ch.title} | {ruleset.subprocesses[ch.subprocess].name} | "
                   f"{', '.join(ch.controls_2022)} | {', '.join(ch.controls_2013)} | {ch.relation} | {ch.kind} | {ch.severity} |")
    for ch in ruleset.checks:
        out += [
            "", f"### {ch.id}", "", f"**{ch.title}**" + (f" (overlay `{ch.overlay}`)" if ch.overlay else ""), "",
            f"- Applies when: {ch.applies.text}",
        ]
        if ch.requires is not ALWAYS:
            out.append(f"- Requires: {ch.requires.text}")
        if ch.clock is not None:
            out.append(f"- Clock: {ch.clock.text}; pending until then")
        if ch.rule is not None:
            out.append(f"- Across incidents: `{json.dumps(ch.definition.get('rule'))}`")
        if ch.params:
            out.append("- Parameters: " + ", ".join(f"`{k}` = `{json.dumps(v, default=str)}`" for k, v in ch.params.items()))
        out += [f"- Why: {ch.rationale}", f"- What to do: {ch.remediation}"]
    return "\n".join(out) + "\n"


# --- CISO Assistant -------------------------------------------------------------------------


def _iso_urn(cid: str) -> str:
    node = cid.lower() if cid.startswith("A.") else cid
    return f"urn:intuitem:risk:req_node:iso27001-2022:{node.replace('A.', 'a.')}"


def ciso_assistant_libraries(ruleset: Ruleset, *, today: date | None = None) -> dict[str, dict[str, Any]]:
    """Two libraries: the seven sub-processes as a framework, and their mapping to ISO 27001:2022."""
    published = (today or date.today()).isoformat()
    common = {"locale": "en", "version": 1, "publication_date": published, "provider": "GapBridge", "packager": "gapbridge",
              "copyright": "GapBridge contributors; control titles are short names, not the standard's text."}
    framework = {
        "urn": SUBPROCESS_LIBRARY,
        "ref_id": "gapbridge-itil-incident-subprocesses",
        "name": "ITIL incident management sub-processes",
        "description": "The seven ITIL incident-management sub-processes, as GapBridge assesses them.",
        **common,
        "objects": {"framework": {
            "urn": SUBPROCESS_FRAMEWORK,
            "ref_id": "itil-incident-subprocesses",
            "name": "ITIL incident management sub-processes",
            "description": "Sub-processes of ITIL incident management.",
            "requirement_nodes": [
                {"urn": f"urn:gapbridge:risk:req_node:itil-incident-subprocesses:{s.id.replace('_', '-')}",
                 "assessable": True, "depth": 1, "ref_id": s.id, "name": s.name, "description": s.objective}
                for s in ruleset.subprocesses.values()
            ],
        }},
    }
    mappings = []
    for rel in ruleset.relations:
        if rel.subprocess is None:
            continue  # a mapping needs a source node; general improvements have none
        ann = f"{rel.relation}" + (f"; still needed: {rel.needs}" if rel.needs else "")
        mappings.append({
            "source_requirement_urn": f"urn:gapbridge:risk:req_node:itil-incident-subprocesses:{rel.subprocess.replace('_', '-')}",
            "target_requirement_urn": _iso_urn(rel.control),
            "relationship": "intersect",
            "strength_of_relationship": STRENGTH[rel.relation],
            "rationale": rel.rationale,
            "annotation": ann,
        })
    mapping = {
        "urn": MAPPING_LIBRARY,
        "ref_id": "gapbridge-mapping-itil-incident-iso27001-2022",
        "name": "ITIL incident management sub-processes -> ISO/IEC 27001:2022",
        "description": "Which ISO/IEC 27001:2022 controls each ITIL incident sub-process covers, falls short of (gap) "
                       "or is improved by, after GapBridge's analysis.",
        **common,
        "dependencies": [SUBPROCESS_LIBRARY, ISO_2022_LIBRARY],
        "objects": {"requirement_mapping_sets": [{
            "urn": "urn:gapbridge:risk:req_mapping_set:itil-incident-subprocesses-to-iso27001-2022",
            "ref_id": "itil-incident-subprocesses-to-iso27001-2022",
            "name": "ITIL incident sub-processes to ISO/IEC 27001:2022",
            "source_framework_urn": SUBPROCESS_FRAMEWORK,
            "target_framework_urn": ISO_2022_FRAMEWORK,
            "requirement_mappings": mappings,
        }]},
    }
    return {"gapbridge-itil-incident-subprocesses.yaml": framework,
            "gapbridge-mapping-itil-incident-iso27001-2022.yaml": mapping}


def dump_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
