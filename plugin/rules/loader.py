"""Load ``mappings/`` into a Ruleset: catalogue, sub-processes, checks, overlays and overrides.

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

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .catalogue import EDITIONS, load_catalogue
from .compiler import compile_check
from .model import Check, Ruleset
from .overrides import apply_override, load_overrides
from .subprocesses import load_subprocesses
from .yamlsource import Location, MappingError, MappingErrors, collecting, display_name, load_or_note, located


def _check_docs(root: Path, overlays: Iterable[str], errors: list[MappingError]) -> list[tuple[Any, str, Location, str | None]]:
    """(check node, key path, location, overlay) for every check in the shipped files."""
    found: list[tuple[Any, str, Location, str | None]] = []
    for path in sorted((root / "checks").glob("*.yaml")):
        name = display_name(path, root)
        loaded, doc = load_or_note(path, name, errors)
        if not loaded:
            continue
        found.extend(_checks_in(doc, name, None, errors))
    wanted = set(overlays)
    seen = set()
    for path in sorted((root / "overlays").glob("*.yaml")):
        name = display_name(path, root)
        loaded, doc = load_or_note(path, name, errors)
        if not loaded:
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
        errors.append(MappingError(located(doc) if doc is not None else Location(name, 1), "checks", "expected a list of checks"))
        return []
    return [(c, f"checks[{i}]", located(items, i), overlay) for i, c in enumerate(items)]


def available_overlays(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted((root / "overlays").glob("*.yaml")):
        loaded, doc = load_or_note(path, display_name(path, root), [])  # a broken overlay is reported when loaded
        if not loaded:
            continue
        meta = doc.get("overlay") if isinstance(doc, dict) else None
        if isinstance(meta, dict) and "id" in meta:
            out[str(meta["id"])] = str(meta.get("title", meta["id"]))
    return out


def load_ruleset(root: Path, *, overrides: Path | None = None, overlays: Iterable[str] = ()) -> Ruleset:
    """Load and compile everything; raise MappingErrors listing every fault."""
    errors: list[MappingError] = []
    overlays = tuple(sorted(set(overlays)))
    cat = load_catalogue(root, errors)
    subs, relations = load_subprocesses(root, cat, errors)
    docs = _check_docs(root, overlays, errors)
    per_check, added = load_overrides(overrides, errors)

    checks: list[Check] = []
    seen: dict[str, Location] = {}
    disabled: list[str] = []
    shipped_ids = {n.get("id") for n, *_ in docs if isinstance(n, dict)}
    for override_id in per_check:
        if override_id not in shipped_ids:
            errors.append(MappingError(located(per_check, override_id), f"checks.{override_id}", "no shipped check has this id (to add a check, use add_checks)"))
    candidates = [(n, p, loc, ov) for n, p, loc, ov in docs] + [(n, p, loc, None) for n, p, loc in added]
    for node, path, loc, overlay in candidates:
        cid = node.get("id") if isinstance(node, dict) else None
        provenance: dict[str, str] = {"definition": str(loc)}
        if cid in per_check:
            ov = per_check[cid]
            if isinstance(ov, dict) and ov.get("enabled") is False:
                disabled.append(cid)
                provenance["enabled"] = str(located(ov, "enabled"))
                seen[cid] = loc
                continue
            node = apply_override(node, ov, cid, errors, provenance)
        check = collecting(errors, compile_check, node, path, loc, cat, subs, relations, overlay, provenance)
        if check is None:
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
