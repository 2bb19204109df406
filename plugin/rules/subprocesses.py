"""The ITIL incident-management sub-processes and how each relates to ISO 27001 controls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalogue import Catalogue
from .yamlsource import Location, MappingError, display_name, load_or_note, located

RELATIONS = ("covered", "gap", "improvement")

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


def load_subprocesses(root: Path, cat: Catalogue, errors: list[MappingError]) -> tuple[dict[str, SubProcess], list[Relation]]:
    """The sub-processes and every relation of mappings/subprocesses.yaml; faults go to ``errors``."""
    path = root / "subprocesses.yaml"
    name = display_name(path, root)
    subs: dict[str, SubProcess] = {}
    relations: list[Relation] = []
    loaded, doc = load_or_note(path, name, errors)
    if not loaded:
        return subs, relations
    items = doc.get("subprocesses") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        errors.append(MappingError(Location(name, 1), "subprocesses", "expected a list of sub-processes"))
        return subs, relations
    for i, item in enumerate(items):
        p = f"subprocesses[{i}]"
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("id", "name", "objective")):
            errors.append(MappingError(located(items, i), p, "expected id, name and objective (strings)"))
            continue
        subs[item["id"]] = SubProcess(item["id"], item["name"], item["objective"])
        relations.extend(_relations(item.get("relations") or [], item["id"], f"{p}.relations", cat, errors, located(item, "relations")))
    general = doc.get("general_relations") or []
    relations.extend(_relations(general, None, "general_relations", cat, errors, located(doc, "general_relations")))
    return subs, relations


def _relations(items: Any, sub: str | None, path: str, cat: Catalogue, errors: list[MappingError], loc: Location) -> list[Relation]:
    out: list[Relation] = []
    if not isinstance(items, list):
        errors.append(MappingError(loc, path, "expected a list"))
        return out
    for j, rel in enumerate(items):
        rp = f"{path}[{j}]"
        rloc = located(items, j)
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


