"""Clocks: time-bound requirements that pass, fail, or are pending until they fall due.

A check with a ``clock`` asks for something to be done by a due time::

    clock:
      what: NIS2 early warning to the CSIRT or authority   # named in the note
      due:                      # the clock falls due at the earliest of these
        - from: [assessed_at, opened_at]                    # the first recorded starts it
          within: {param: deadline}                         # a duration or {by: severity, ...}
      stop: {first: notifications, where: {...}}            # what stops it, and when

Times (``from``, ``stop``) are *anchors*: a timestamp field (``contained_at``),
``{field: f, plus: 72h}``, the earliest matching list item ``{first: notifications,
where: c, at: at, plus: 30d}``, or ``{latest: [a, b]}`` (known only when all are). A
list of anchors is the first one recorded, so a missing start falls back to the
earliest possible one (``opened_at``).

The outcome: pass when the stop is recorded by the due time; fail when it was
recorded late, or the due time passed without it; pending (with the due time)
otherwise, whether the ticket is open or closed. No deadline with a known start:
not applicable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from connectors.canonical import DATETIME_FIELDS, ITEM_KEYS, LIST_FIELDS

from .conditions import ItemView, Record, Scope, compile_condition, duration_lookup, human_duration, param_value, parse_duration
from .model import FAIL, NOT_APPLICABLE, PASS, PENDING, Outcome
from .yamlsource import Location, MappingError, MappingErrors, collecting, located, only_keys


class Anchor:
    """A time read from a record (or None when it is not recorded), with what it is in words."""

    __slots__ = ("fn", "text")

    def __init__(self, fn: Callable[[Record], datetime | None], text: str) -> None:
        self.fn = fn
        self.text = text

    def __call__(self, incident: Record) -> datetime | None:
        return self.fn(incident)


def format_utc(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def time_left(delta: timedelta) -> str:
    """``3 h 10 min``, ``2 d 4 h``, ``45 min``: what a person reads on a ticket."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min"


class Clock:
    __slots__ = ("what", "deadlines", "stop", "text")

    def __init__(self, what: str, deadlines: list[tuple[Anchor, Callable[[Record], timedelta | None], str]], stop: Anchor) -> None:
        self.what = what
        self.deadlines = deadlines
        self.stop = stop
        due = "; or, if earlier, ".join(f"within {within} of {start.text}" for start, _, within in deadlines)
        self.text = f"{what}: due {due}; done at {stop.text}"

    def due_at(self, incident: Record) -> datetime | None:
        dues = []
        for start, within, _ in self.deadlines:
            began = start(incident)
            limit = within(incident) if began is not None else None
            if began is not None and limit is not None:
                dues.append(began + limit)
        return min(dues) if dues else None

    def evaluate(self, incident: Record, now: datetime) -> Outcome:
        due = self.due_at(incident)
        if due is None:
            return NOT_APPLICABLE, [], None
        stopped = self.stop(incident)
        if stopped is not None:
            if stopped <= due:
                return PASS, [], due
            return FAIL, [f"{self.what}: recorded at {format_utc(stopped)}, {time_left(stopped - due)} after it was due "
                          f"at {format_utc(due)}"], due
        if now < due:
            return PENDING, [], due
        return FAIL, [f"{self.what}: due at {format_utc(due)}, not recorded"], due


def compile_clock(node: Any, path: str, loc: Location, scope: Scope) -> Clock:
    """Compile a check's ``clock``; raise MappingErrors listing every fault in it."""
    if not isinstance(node, dict):
        raise MappingError(loc, path, "expected a clock: {what, due, stop}")
    faults: list[MappingError] = []
    extra = sorted(set(node) - {"what", "due", "stop"})
    if extra:
        faults.append(MappingError(located(node, extra[0], loc), f"{path}.{extra[0]}", "unknown key; expected what, due, stop"))
    what = node.get("what")
    if not isinstance(what, str) or not what.strip():
        faults.append(MappingError(located(node, "what", loc), f"{path}.what", "expected non-empty text naming what is due"))
    deadlines = []
    due = node.get("due")
    items = due if isinstance(due, list) else [due] if isinstance(due, dict) else None
    if not items:
        faults.append(MappingError(located(node, "due", loc), f"{path}.due", "expected a deadline {from, within} or a non-empty list of them"))
        items = []
    for i, item in enumerate(items):
        p = f"{path}.due[{i}]" if isinstance(due, list) else f"{path}.due"
        iloc = located(due, i, loc) if isinstance(due, list) else located(node, "due", loc)
        deadline = collecting(faults, _deadline, item, p, iloc, scope)
        if deadline is not None:
            deadlines.append(deadline)
    stop: Anchor | None = None
    if "stop" not in node:
        faults.append(MappingError(loc, f"{path}.stop", "a clock needs stop: the time that stops it (a field or {first: list, where: ...})"))
    else:
        stop = collecting(faults, compile_anchors, node["stop"], f"{path}.stop", located(node, "stop", loc), scope)
    if faults:
        raise MappingErrors(faults)
    assert stop is not None and isinstance(what, str)
    return Clock(" ".join(what.split()), deadlines, stop)


def _deadline(node: Any, path: str, loc: Location, scope: Scope) -> tuple[Anchor, Callable[[Record], timedelta | None], str]:
    if not isinstance(node, dict) or set(node) != {"from", "within"}:
        raise MappingError(loc, path, "expected a deadline {from: time, within: duration}")
    start = compile_anchors(node["from"], f"{path}.from", located(node, "from", loc), scope)
    within, shown = duration_lookup(node["within"], f"{path}.within", located(node, "within", loc), scope)
    return start, within, shown


def compile_anchors(node: Any, path: str, loc: Location, scope: Scope) -> Anchor:
    """One anchor, or a list of them meaning the first one recorded."""
    if isinstance(node, list):
        if not node:
            raise MappingError(loc, path, "expected a non-empty list of times (the first recorded is used)")
        anchors = tuple(compile_anchor(a, f"{path}[{i}]", located(node, i, loc), scope) for i, a in enumerate(node))

        def first_known(inc: Record) -> datetime | None:
            for anchor in anchors:
                at = anchor(inc)
                if at is not None:
                    return at
            return None
        return Anchor(first_known, " (or, if not recorded, ".join(a.text for a in anchors) + ")" * (len(anchors) - 1))
    return compile_anchor(node, path, loc, scope)


def compile_anchor(node: Any, path: str, loc: Location, scope: Scope) -> Anchor:
    if isinstance(node, str):
        return _field_anchor(node, None, path, loc, scope)
    if not isinstance(node, dict):
        raise MappingError(loc, path, "expected a timestamp field, {field, plus}, {first, where, at, plus} or {latest: [...]}")
    if "latest" in node:
        only_keys(node, {"latest"}, path, loc)
        parts = node["latest"]
        if not isinstance(parts, list) or len(parts) < 2:
            raise MappingError(located(node, "latest", loc), f"{path}.latest", "expected a list of at least two times")
        anchors = tuple(compile_anchors(a, f"{path}.latest[{i}]", located(parts, i, loc), scope) for i, a in enumerate(parts))

        def latest(inc: Record) -> datetime | None:
            times = [a(inc) for a in anchors]
            return None if any(t is None for t in times) else max(t for t in times if t is not None)
        return Anchor(latest, "the later of " + " and ".join(a.text for a in anchors))
    plus = parse_duration(param_value(node["plus"], scope, f"{path}.plus", located(node, "plus", loc)), f"{path}.plus",
                          located(node, "plus", loc)) if "plus" in node else timedelta(0)
    if "field" in node:
        only_keys(node, {"field", "plus"}, path, loc)
        return _field_anchor(node["field"], plus, f"{path}.field", located(node, "field", loc), scope)
    if "first" in node:
        only_keys(node, {"first", "where", "at", "plus"}, path, loc)
        return _first_item(node, plus, path, loc, scope)
    raise MappingError(loc, path, "expected field, first or latest")


def _field_anchor(name: Any, plus: timedelta | None, path: str, loc: Location, scope: Scope) -> Anchor:
    if not isinstance(name, str) or name not in DATETIME_FIELDS:
        raise MappingError(loc, path, f"expected a timestamp field ({', '.join(sorted(DATETIME_FIELDS))}), got {name!r}")
    scope.used.add(name)
    label = name.replace("_", " ")
    if not plus:
        return Anchor(lambda inc: inc.get(name), label)

    def shifted(inc: Record) -> datetime | None:
        at = inc.get(name)
        return None if at is None else at + plus
    return Anchor(shifted, f"{human_duration(plus)} after {label}")


def _first_item(node: Mapping[str, Any], plus: timedelta, path: str, loc: Location, scope: Scope) -> Anchor:
    list_field = node["first"]
    if list_field not in LIST_FIELDS or list_field not in ITEM_KEYS:
        raise MappingError(located(node, "first", loc), f"{path}.first",
                           f"expected a list of items with times ({', '.join(sorted(set(ITEM_KEYS) & LIST_FIELDS))}), got {list_field!r}")
    at_key = node.get("at", "at")
    if at_key not in ITEM_KEYS[list_field]:
        raise MappingError(located(node, "at", loc), f"{path}.at", f"{list_field} items have no key {at_key!r}")
    scope.used.add(list_field)
    where = None
    what = f"the first {list_field.replace('_', ' ')} item"
    if "where" in node:
        condition = compile_condition(node["where"], f"{path}.where", located(node, "where", loc), scope.item_scope(list_field))
        where, what = condition.fn, f"{what} with {condition.text}"
    now_unused = datetime.min  # where-conditions of anchors read the record, not the clock

    def first(inc: Record) -> datetime | None:
        times: list[datetime] = [it[at_key] for it in inc.get(list_field) or ()
                                 if isinstance(it, Mapping) and isinstance(it.get(at_key), datetime)
                                 and (where is None or where(ItemView(it, inc), now_unused))]
        return min(times) + plus if times else None
    return Anchor(first, f"{human_duration(plus)} after {what}" if plus else what)
