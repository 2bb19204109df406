"""The ISO/IEC 27001 control catalogue of both editions and the correspondence between them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .yamlsource import Location, MappingError, display_name, load_or_note, located

EDITIONS = ("2022", "2013")


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

    def wrong_edition(self, edition: str, cid: str) -> str | None:
        """Why ``cid`` is not an id of ``edition`` when it is one of the other edition's, else None."""
        other = "2013" if edition == "2022" else "2022"
        if self.get(edition, cid) is not None or self.get(other, cid) is None:
            return None
        if other == "2013":
            successors = ", ".join(self.successors.get(cid, ())) or "none"
            return f"{cid} is an ISO 27001:2013 id (its 2022 counterparts: {successors}); controls takes 2022 ids, controls_2013 the 2013 ones"
        was = ", ".join(self.predecessors(cid)) or "none"
        return f"{cid} is an ISO 27001:2022 id (its 2013 predecessors: {was}); controls_2013 takes 2013 ids, controls the 2022 ones"


def load_catalogue(root: Path, errors: list[MappingError]) -> Catalogue:
    """Both editions from mappings/catalogue; faults go to ``errors``."""
    cat = Catalogue()
    for edition in EDITIONS:
        path = root / "catalogue" / f"iso27001-{edition}.yaml"
        name = display_name(path, root)
        loaded, doc = load_or_note(path, name, errors)
        if not loaded:
            continue
        if not isinstance(doc, dict) or str(doc.get("edition")) != edition:
            errors.append(MappingError(Location(name, 1), "edition", f"expected edition: \"{edition}\""))
            continue
        for section, kind in (("clauses", "clause"), ("controls", "annex_a")):
            items = doc.get(section)
            if not isinstance(items, list):
                errors.append(MappingError(located(doc, section), section, "expected a list"))
                continue
            for i, item in enumerate(items):
                p = f"{section}[{i}]"
                try:
                    cid, title = item["id"], item["title"]
                    if not isinstance(cid, str) or not isinstance(title, str):
                        raise KeyError
                except (KeyError, TypeError):
                    errors.append(MappingError(located(items, i), p, "expected {id: string, title: string}"))
                    continue
                if (kind == "annex_a") != cid.startswith("A."):
                    errors.append(MappingError(located(items, i), f"{p}.id", f"{section} ids {'start' if kind == 'annex_a' else 'do not start'} with 'A.', got {cid!r}"))
                    continue
                if cid in cat.controls[edition]:
                    errors.append(MappingError(located(items, i), f"{p}.id", f"duplicate control id {cid!r}"))
                    continue
                was = tuple(str(w) for w in (item.get("was") or ())) if edition == "2022" else ()
                cat.controls[edition][cid] = Control(edition, cid, title, kind, item.get("theme"), was)
    for c in cat.controls["2022"].values():
        for old in c.was:
            if cat.controls["2013"] and old not in cat.controls["2013"]:
                errors.append(MappingError(Location("catalogue/iso27001-2022.yaml", 0), f"controls.{c.id}.was", f"unknown 2013 id {old!r}"))
            cat.successors.setdefault(old, []).append(c.id)
    return cat
