"""Checks across incidents, run after every incident has been assessed on its own.

A check with ``scope: across`` carries a ``rule`` whose ``type`` picks one of:

    recurrence     {group_by: [fields], window: 30d, min_count: 3}
        An incident is in scope when at least min_count incidents (itself included)
        share every group_by value and were opened within ``window`` of it; each of
        those must satisfy ``requires``. Others are not applicable.
    open_weakness  {max_age: 30d}
        An incident whose weakness_refs name a stored incident (by number) that is
        still open and older than max_age fails; one whose referenced weaknesses are
        closed or young passes; one whose references are not stored is not applicable.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from connectors.canonical import FIELDS, OPEN_STATES

from .conditions import human_duration, parse_duration
from .model import FAIL, NOT_APPLICABLE, PASS, AcrossOutcome, AcrossRule, Check
from .yamlsource import Location, MappingError, located, only_keys


class Recurrence(AcrossRule):
    type = "recurrence"

    def __init__(self, node: Mapping[str, Any], path: str, loc: Location) -> None:
        only_keys(node, {"type", "group_by", "window", "min_count"}, path, loc)
        group_by = node.get("group_by")
        if not isinstance(group_by, list) or not group_by or not all(isinstance(g, str) for g in group_by):
            raise MappingError(located(node, "group_by", loc), f"{path}.group_by", "expected a non-empty list of canonical field names")
        for i, g in enumerate(group_by):
            if g not in FIELDS:
                raise MappingError(located(group_by, i, loc), f"{path}.group_by[{i}]", f"unknown canonical field {g!r}")
        if "window" not in node:
            raise MappingError(loc, path, "recurrence needs a window such as 30d")
        self.window = parse_duration(node["window"], f"{path}.window", located(node, "window", loc))
        n = node.get("min_count", 2)
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise MappingError(located(node, "min_count", loc), f"{path}.min_count", f"expected a whole number >= 2, got {n!r}")
        self.group_by, self.min_count = tuple(group_by), n
        self.fields = frozenset({*group_by, "opened_at"})
        self.partition_by = self.group_by  # groups are independent of each other
        self.present_fields = (*self.group_by, "opened_at")  # without them an incident is in no group

    def partition_key(self, incident: Mapping[str, Any]) -> tuple[Any, ...] | None:
        key = tuple(incident.get(g) for g in self.group_by)
        return None if any(k in (None, "") for k in key) else key  # not in any group: not applicable alone

    def evaluate(self, check: Check, incidents: Sequence[Mapping[str, Any]], now: datetime,
                 known: Mapping[str, Mapping[str, Any]] | None = None) -> list[AcrossOutcome]:
        out: list[AcrossOutcome] = [(NOT_APPLICABLE, [])] * len(incidents)
        groups: dict[tuple, list[tuple[datetime, int]]] = defaultdict(list)
        for i, inc in enumerate(incidents):
            key = tuple(inc.get(g) for g in self.group_by)
            opened = inc.get("opened_at")
            if opened is None or any(k in (None, "") for k in key) or not check.applies.fn(inc, now):
                continue
            groups[key].append((opened, i))
        for members in groups.values():
            if len(members) < self.min_count:
                continue
            members.sort()
            times = [t for t, _ in members]
            for t, i in members:
                near = bisect_right(times, t + self.window) - bisect_left(times, t - self.window)
                if near < self.min_count:
                    continue
                inc = incidents[i]
                if check.requires.fn(inc, now):
                    out[i] = (PASS, [])
                else:
                    what = ", ".join(f"{g.replace('_', ' ')} {inc.get(g)}" for g in self.group_by)
                    out[i] = (FAIL, [f"{near} incidents with {what} within {human_duration(self.window)}: "
                                     + "; ".join(check.requires.explain(inc, now))])
        return out


class OpenWeakness(AcrossRule):
    type = "open_weakness"

    def __init__(self, node: Mapping[str, Any], path: str, loc: Location) -> None:
        only_keys(node, {"type", "max_age"}, path, loc)
        if "max_age" not in node:
            raise MappingError(loc, path, "open_weakness needs max_age such as 30d")
        self.max_age: timedelta = parse_duration(node["max_age"], f"{path}.max_age", located(node, "max_age", loc))
        self.fields = frozenset({"weakness_refs", "number", "state", "opened_at"})
        # an incident naming no weakness is not applicable; a weakness record counts for the others through
        # ``references`` (read by number), not by being read beside them
        self.present_fields = ("weakness_refs",)

    def references(self, incidents: Sequence[Mapping[str, Any]]) -> set[str]:
        return {r for inc in incidents for r in inc.get("weakness_refs") or ()}

    def evaluate(self, check: Check, incidents: Sequence[Mapping[str, Any]], now: datetime,
                 known: Mapping[str, Mapping[str, Any]] | None = None) -> list[AcrossOutcome]:
        by_number = known if known is not None else {inc["number"]: inc for inc in incidents if inc.get("number")}
        out: list[AcrossOutcome] = []
        for inc in incidents:
            refs = [r for r in inc.get("weakness_refs") or () if r in by_number]
            if not refs or not check.applies.fn(inc, now):
                out.append((NOT_APPLICABLE, []))
                continue
            overdue = []
            for r in refs:
                w = by_number[r]
                opened = w.get("opened_at")
                if w.get("state") in OPEN_STATES and opened is not None and now - opened > self.max_age:
                    overdue.append(f"weakness {r} open for {(now - opened).days} days (limit {human_duration(self.max_age)})")
            out.append((FAIL, overdue) if overdue else (PASS, []))
        return out


RULE_TYPES: dict[str, Callable[[Mapping[str, Any], str, Location], AcrossRule]] = {
    "recurrence": Recurrence,
    "open_weakness": OpenWeakness,
}


def compile_rule(node: Any, path: str, loc: Location) -> AcrossRule:
    if not isinstance(node, dict) or "type" not in node:
        raise MappingError(loc, path, f"expected a rule with a type: {', '.join(RULE_TYPES)}")
    kind = node["type"]
    if kind not in RULE_TYPES:
        raise MappingError(located(node, "type", loc), f"{path}.type", f"unknown rule type {kind!r}; expected one of: {', '.join(RULE_TYPES)}")
    return RULE_TYPES[kind](node, path, loc)


def evaluate_across_detailed(check: Check, incidents: Sequence[Mapping[str, Any]], now: datetime,
                             known: Mapping[str, Mapping[str, Any]] | None = None) -> list[AcrossOutcome]:
    assert check.rule is not None, f"{check.id} is not a cross-incident check"
    return check.rule.evaluate(check, incidents, now, known)


def evaluate_across(check: Check, incidents: Sequence[Mapping[str, Any]], now: datetime) -> list[str]:
    """Statuses aligned with ``incidents``."""
    return [status for status, _ in evaluate_across_detailed(check, incidents, now)]
