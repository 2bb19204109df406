"""The control catalogue of both editions with the crosswalk, and what the mappings say about each control."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from ..rules.catalogue import Control
from ..rules.model import Check, Ruleset


def resolve_one(ruleset: Ruleset, ref: str) -> Control:
    """The control ``ref`` names in either edition; a 2022 id wins over a 2013 one that reads the same."""
    found = ruleset.catalogue.resolve(ref)
    if not found:
        raise ValidationError({"control_id": [f"unknown control {ref!r} in either edition (e.g. A.5.26 or A.16.1.5)"]})
    return found[0]


def crosswalk(ruleset: Ruleset, control: Control) -> tuple[list[str], list[str]]:
    """(2022 ids, 2013 ids) for a control of either edition."""
    cat = ruleset.catalogue
    if control.edition == "2022":
        return [control.id], list(cat.predecessors(control.id))
    return list(cat.successors.get(control.id, [])), [control.id]


def checks_of(ruleset: Ruleset, control: Control) -> list[Check]:
    ids22, _ = crosswalk(ruleset, control)
    return [c for c in ruleset.checks if set(ids22) & set(c.controls_2022)
            or (control.edition == "2013" and control.id in c.controls_2013)]


def summary(ruleset: Ruleset, control: Control) -> dict[str, Any]:
    ids22, ids13 = crosswalk(ruleset, control)
    return {"id": control.id, "edition": control.edition, "title": control.title, "kind": control.kind, "theme": control.theme,
            "ids_2022": ids22, "ids_2013": ids13}


def detail(ruleset: Ruleset, control: Control) -> dict[str, Any]:
    ids22, _ = crosswalk(ruleset, control)
    relations = [{"subprocess": r.subprocess, "subprocess_name": ruleset.subprocesses[r.subprocess].name if r.subprocess else None,
                  "control_2022": r.control, "relation": r.relation, "rationale": r.rationale, "needs": r.needs or None}
                 for r in ruleset.relations if r.control in ids22]
    return {**summary(ruleset, control), "checks": [check_summary(c) for c in checks_of(ruleset, control)], "relations": relations}


def check_summary(check: Check) -> dict[str, Any]:
    return {"id": check.id, "title": check.title, "kind": check.kind, "severity": check.severity, "subprocess": check.subprocess,
            "relation": check.relation, "controls_2022": list(check.controls_2022), "controls_2013": list(check.controls_2013),
            "overlay": check.overlay, "across_incidents": check.across, "clock": check.clock is not None}


def check_detail(check: Check) -> dict[str, Any]:
    return {**check_summary(check), "rationale": check.rationale, "remediation": check.remediation, "missing": check.missing,
            "fields": sorted(check.fields), "provenance": dict(check.provenance)}
