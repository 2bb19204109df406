"""An organisation's override file: per-check changes laid over the shipped checks, and added checks.

It changes parameters, severities, kinds, texts and scope without editing the shipped
mappings; every value it sets is remembered with its place, for ``mappings explain``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

from .yamlsource import LocatedDict, Location, MappingError, load_or_note, located

OVERRIDE_CHECK_KEYS = {"enabled", "severity", "kind", "params", "title", "remediation", "applies_when", "requires", "missing"}

def load_overrides(path: Path | None, errors: list[MappingError]) -> tuple[dict[str, Any], list[tuple[Any, str, Location]]]:
    """Per-check overrides by id, and added checks, from an organisation's file."""
    if path is None:
        return {}, []
    name = str(path)
    loaded, doc = load_or_note(path, name, errors)
    if not loaded:
        return {}, []
    if doc is None:
        return {}, []
    if not isinstance(doc, dict):
        errors.append(MappingError(Location(name, 1), "", "expected a mapping with checks and/or add_checks"))
        return {}, []
    extra = sorted(set(doc) - {"checks", "add_checks"})
    if extra:
        errors.append(MappingError(located(doc, extra[0]), extra[0], "unknown key; expected checks or add_checks"))
    per_check = doc.get("checks") or {}
    if not isinstance(per_check, dict):
        errors.append(MappingError(located(doc, "checks"), "checks", "expected a mapping of check id -> overrides"))
        per_check = {}
    added = doc.get("add_checks") or []
    if not isinstance(added, list):
        errors.append(MappingError(located(doc, "add_checks"), "add_checks", "expected a list of checks"))
        added = []
    return per_check, [(c, f"add_checks[{i}]", located(added, i)) for i, c in enumerate(added)]


def apply_override(node: Any, ov: Any, cid: str, errors: list[MappingError], provenance: dict[str, str]) -> Any:
    """A copy of a check definition with the organisation's values laid over it."""
    path = f"checks.{cid}"
    if not isinstance(ov, dict):
        errors.append(MappingError(located(ov), path, "expected a mapping of overrides"))
        return node
    unknown = sorted(set(ov) - OVERRIDE_CHECK_KEYS)
    if unknown:
        errors.append(MappingError(located(ov, unknown[0]), f"{path}.{unknown[0]}", f"cannot override this; expected one of: {', '.join(sorted(OVERRIDE_CHECK_KEYS))}"))
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
                errors.append(MappingError(located(ov, key), f"{path}.params", "expected a mapping of parameter -> value"))
                continue
            unknown_params = sorted(set(value) - set(base))
            if unknown_params:
                errors.append(MappingError(located(value, unknown_params[0]), f"{path}.params.{unknown_params[0]}", f"unknown parameter; {cid} has: {', '.join(sorted(base)) or 'none'}"))
                continue
            params = LocatedDict({**base, **value})
            params.location = located(ov, key)
            # overrides come from load_yaml, which builds every mapping as a LocatedDict
            params.key_locations = {**getattr(base, "key_locations", {}), **cast(LocatedDict, value).key_locations}
            merged["params"] = params
            for p in value:
                provenance[f"params.{p}"] = str(located(value, p))
            continue
        merged[key] = value
        merged.key_locations[key] = located(ov, key)
        provenance[key] = str(located(ov, key))
    return merged


