"""Declarative conditions compiled to plain Python callables.

A condition is a YAML mapping whose operator key selects its kind from a registry:

    all: [c, ...]            any: [c, ...]            not: c
    present: field           empty: field
    {field: f, equals: v}    {field: f, in: [v, ...]} {field: f, matches: regex}
    {field: f, gt|gte|lt|lte: v}
    {field: f, before: g}                       timestamps, both recorded, f <= g
    {count: f, where: c, min: n, max: n}        items of a list field, optionally filtered
    {every: f, where: c}                        every item of a list field satisfies c
    {elapsed: {from: f, to: g}, at_most|at_least: duration}
    {since: f, at_most|at_least: duration}      from f until the time of assessment
    {option: p, then: c}                        c when the check's parameter p is true, else holds:
                                                an extra an organisation switches on in its override file

Durations are ``30m``, ``4h``, ``3d``, ``2w`` or a table keyed by a field's value:
``{by: severity, values: {critical: 1h, high: 4h}, default: 24h}``. Any value may be
``{param: name}``, resolved from the check's parameters when the ruleset compiles.
Nothing is ever evaluated as code: strings are data, regexes are only matched.

A compiled ``Predicate`` is called as ``pred(incident, now) -> bool``; ``explain``
returns the leaves that made it false, in words for the work note.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol, overload

from connectors.canonical import DATETIME_FIELDS, FIELD_VALUES, FIELDS, ITEM_KEYS, ITEM_VALUES, LIST_FIELDS, parse_utc

from .yamlsource import LocatedDict, LocatedList, Location, MappingError, MappingErrors, collecting, located, only_keys


class Record(Protocol):
    """What a compiled condition reads fields from: an incident mapping, or an ``ItemView``."""

    @overload
    def get(self, key: str, /) -> Any: ...

    @overload
    def get(self, key: str, default: Any, /) -> Any: ...

    def __getitem__(self, key: str, /) -> Any: ...


Fn = Callable[[Record, datetime], bool]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)\s*$")
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
COMPARATORS = ("gt", "gte", "lt", "lte")
PARENT = "incident."  # inside count/every, names the enclosing incident's fields


class Predicate:
    """A compiled condition: callable, with a description and an explainer.

    ``admits`` (a leaf ``field`` equals or in): (field, the values it holds for), so that a
    ruleset can skip, without calling them, the checks an incident's value rules out.
    """

    __slots__ = ("fn", "text", "children", "kind", "admits")

    def __init__(self, fn: Fn, text: str, kind: str, children: tuple[Predicate, ...] = (),
                 admits: tuple[str, frozenset[Any]] | None = None) -> None:
        self.fn = fn
        self.text = text
        self.kind = kind
        self.children = children
        self.admits = admits

    def __call__(self, incident: Mapping[str, Any], now: datetime) -> bool:
        return self.fn(incident, now)

    def explain(self, incident: Mapping[str, Any], now: datetime) -> list[str]:
        """The failing leaves, in words; [] when the condition holds."""
        if self.fn(incident, now):
            return []
        if self.kind == "all":
            return [t for c in self.children for t in c.explain(incident, now)]
        if self.kind == "any" and len(self.children) == 1:
            return self.children[0].explain(incident, now)
        return [self.text]


class Scope:
    """Where a condition is compiled: which names are fields, and the check's params."""

    def __init__(self, params: Mapping[str, Any], *, item_of: str | None = None, used: set[str] | None = None) -> None:
        self.params = params
        self.item_of = item_of  # inside count/every: fields are the item's keys
        self.used: set[str] = set() if used is None else used  # canonical fields the condition reads

    def item_scope(self, list_field: str) -> Scope:
        return Scope(self.params, item_of=list_field, used=self.used)


def compile_condition(node: Any, path: str, where: Location, scope: Scope) -> Predicate:
    """Compile one condition node; raise MappingError naming the path, or MappingErrors for several faults."""
    loc = node.loc() if isinstance(node, (LocatedDict, LocatedList)) else where
    if not isinstance(node, dict) or not node:
        raise MappingError(loc, path, f"expected a condition mapping with one of: {', '.join(sorted(_KINDS))}")
    kinds = [k for k in node if k in _KINDS]
    if len(kinds) != 1:
        if not kinds:
            raise MappingError(loc, path, f"unknown condition {sorted(map(str, node))}; expected one of: {', '.join(sorted(_KINDS))}")
        raise MappingError(loc, path, f"a condition has exactly one operator, found {kinds}")
    return _KINDS[kinds[0]](node, path, loc, scope)


# --- helpers -----------------------------------------------------------------------


def param_value(node: Any, scope: Scope, path: str, loc: Location) -> Any:
    """Resolve ``{param: name}`` references."""
    if isinstance(node, dict) and set(node) == {"param"}:
        name = node["param"]
        if name not in scope.params:
            known = ", ".join(sorted(scope.params)) or "none"
            raise MappingError(loc, path, f"unknown parameter {name!r} (this check's parameters: {known})")
        return scope.params[name]
    return node


def field_name(node: dict, key: str, path: str, loc: Location, scope: Scope) -> str:
    name = node.get(key)
    if not isinstance(name, str) or not name:
        raise MappingError(located(node, key, loc), f"{path}.{key}", "expected a field name")
    if scope.item_of is None or name.startswith(PARENT):
        canonical = name[len(PARENT):] if scope.item_of is not None else name
        if canonical not in FIELDS:
            raise MappingError(located(node, key, loc), f"{path}.{key}", f"unknown canonical field {canonical!r}")
        scope.used.add(canonical)
    else:
        keys = ITEM_KEYS.get(scope.item_of)
        if keys is not None and name not in keys:
            raise MappingError(located(node, key, loc), f"{path}.{key}",
                               f"unknown key {name!r} of a {scope.item_of} item; expected one of: {', '.join(keys)} "
                               f"(or incident.<field> for the incident's own fields)")
        scope.used.add(scope.item_of)
    return name


def vocabulary(name: str, scope: Scope) -> tuple[str, ...] | None:
    """The closed set of values a field (or item key) takes in the canonical contract, if it has one."""
    if scope.item_of is None:
        return FIELD_VALUES.get(name)
    if name.startswith(PARENT):
        return FIELD_VALUES.get(name[len(PARENT):])
    return ITEM_VALUES.get((scope.item_of, name))


def _known_values(values: list[Any], name: str, scope: Scope, path: str, loc: Location) -> None:
    allowed = vocabulary(name, scope)
    if allowed is None:
        return
    unknown = [v for v in values if v not in allowed]
    if unknown:
        what = name.removeprefix(PARENT).replace("_", " ")
        raise MappingError(loc, path, f"unknown {what} {unknown[0]!r}; expected one of: {', '.join(allowed)}")


class ItemView:
    """A list item seen from a where-condition: its own keys, and ``incident.<field>``."""

    __slots__ = ("item", "parent")

    def __init__(self, item: Mapping[str, Any], parent: Record) -> None:
        self.item = item
        self.parent = parent

    def get(self, key: str, default: Any = None) -> Any:
        if key.startswith(PARENT):
            return self.parent.get(key[len(PARENT):], default)
        return self.item.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.get(key)


def parse_duration(value: Any, path: str, loc: Location) -> timedelta:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(hours=value)  # a bare number is hours
    m = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise MappingError(loc, path, f"expected a duration such as 30m, 4h, 3d or 2w, got {value!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def duration_lookup(node: Any, path: str, loc: Location, scope: Scope) -> tuple[Callable[[Record], timedelta | None], str]:
    """A duration, or a table of durations keyed by a field's value."""
    node = param_value(node, scope, path, loc)
    if isinstance(node, dict) and "by" in node:
        only_keys(node, {"by", "values", "default"}, path, loc)
        by = field_name(node, "by", path, loc, scope)
        values = param_value(node.get("values"), scope, f"{path}.values", loc)
        if not isinstance(values, dict) or not values:
            raise MappingError(located(node, "values", loc), f"{path}.values", "expected a mapping of value -> duration")
        table = {k: parse_duration(param_value(v, scope, f"{path}.values.{k}", loc), f"{path}.values.{k}", located(values, k, loc)) for k, v in values.items()}
        default = None
        if "default" in node:
            default = parse_duration(param_value(node["default"], scope, f"{path}.default", loc), f"{path}.default", located(node, "default", loc))

        def lookup(inc: Record) -> timedelta | None:
            return table.get(inc.get(by), default)

        shown = ", ".join(f"{k} {human_duration(v)}" for k, v in table.items())
        return lookup, f"({shown} by {by})"
    fixed = parse_duration(node, path, loc)
    return (lambda inc: fixed), human_duration(fixed)


def human_duration(td: timedelta) -> str:
    s = int(td.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0 and s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _bound(node: dict, path: str, loc: Location, scope: Scope) -> tuple[str, Callable[[Record], timedelta | None], str]:
    has = [k for k in ("at_most", "at_least") if k in node]
    if len(has) != 1:
        raise MappingError(loc, path, "expected exactly one of at_most, at_least")
    lookup, shown = duration_lookup(node[has[0]], f"{path}.{has[0]}", located(node, has[0], loc), scope)
    return has[0], lookup, shown


def is_present(v: Any) -> bool:
    return v is not None and v != "" and v != []


def _label(name: str) -> str:
    return name.replace("_", " ")


# --- kinds --------------------------------------------------------------------------


def _all(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    return _combine(node, "all", path, loc, scope)


def _any(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    return _combine(node, "any", path, loc, scope)


def _combine(node: dict, kind: str, path: str, loc: Location, scope: Scope) -> Predicate:
    only_keys(node, {kind, "text"}, path, loc)
    items = node[kind]
    if not isinstance(items, list) or not items:
        raise MappingError(located(node, kind, loc), f"{path}.{kind}", "expected a non-empty list of conditions")
    faults: list[MappingError] = []
    # every faulty branch is reported, not only the first
    compiled = [collecting(faults, compile_condition, c, f"{path}.{kind}[{i}]", located(items, i, loc), scope)
                for i, c in enumerate(items)]
    if faults:
        raise faults[0] if len(faults) == 1 else MappingErrors(faults)
    children = tuple(c for c in compiled if c is not None)
    fns = tuple(c.fn for c in children)
    if kind == "all":
        def fn(inc: Record, now: datetime) -> bool:
            for f in fns:
                if not f(inc, now):
                    return False
            return True
        text = node.get("text") or " and ".join(c.text for c in children)
    else:
        def fn(inc: Record, now: datetime) -> bool:
            for f in fns:
                if f(inc, now):
                    return True
            return False
        text = node.get("text") or "one of: " + "; or ".join(c.text for c in children)
    return Predicate(fn, text, kind, children)


def _not(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    only_keys(node, {"not", "text"}, path, loc)
    inner = compile_condition(node["not"], f"{path}.not", located(node, "not", loc), scope)
    f = inner.fn
    return Predicate(lambda inc, now: not f(inc, now), node.get("text") or f"not ({inner.text})", "not", (inner,))


def _present(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    only_keys(node, {"present", "text"}, path, loc)
    names = param_value(node["present"], scope, f"{path}.present", located(node, "present", loc))
    if isinstance(names, list):
        # present: [a, b] is all-of, and explains each missing field on its own
        if not names:
            raise MappingError(located(node, "present", loc), f"{path}.present", "expected a field name or a non-empty list of them")
        children = tuple(_present({"present": n}, f"{path}.present[{i}]", loc, scope) for i, n in enumerate(names))
        fns = tuple(c.fn for c in children)
        return Predicate(lambda inc, now: all(f(inc, now) for f in fns), node.get("text") or ", ".join(c.text for c in children), "all", children)
    name = field_name({"present": names}, "present", path, loc, scope)
    return Predicate(lambda inc, now: is_present(inc.get(name)), node.get("text") or f"{_label(name)} recorded", "leaf")


def _empty(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    only_keys(node, {"empty", "text"}, path, loc)
    name = field_name(node, "empty", path, loc, scope)
    return Predicate(lambda inc, now: not is_present(inc.get(name)), node.get("text") or f"{_label(name)} empty", "leaf")


_FIELD_OPS = ("equals", "in", "matches", "before", *COMPARATORS)


def _admits(name: str, values: Any, scope: Scope) -> tuple[str, frozenset[Any]] | None:
    """What an equals/in leaf admits, for an incident's own field (not a list item's) with hashable values."""
    if scope.item_of is not None or name in LIST_FIELDS:
        return None
    try:
        return name, frozenset(values)
    except TypeError:
        return None


def necessary_values(predicate: Predicate) -> list[tuple[str, frozenset[Any]]]:
    """(field, values) pairs an incident must all meet for ``predicate`` to hold: its leaves joined by ``all``."""
    if predicate.admits is not None:
        return [predicate.admits]
    if predicate.kind == "all":
        return [pair for child in predicate.children for pair in necessary_values(child)]
    return []


def _field_condition(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    ops = [k for k in node if k in _FIELD_OPS]
    if len(ops) != 1:
        raise MappingError(loc, path, f"a field condition needs exactly one of: {', '.join(_FIELD_OPS)}")
    op = ops[0]
    only_keys(node, {"field", op, "text"}, path, loc)
    name = field_name(node, "field", path, loc, scope)
    p, vloc = f"{path}.{op}", located(node, op, loc)
    raw = param_value(node[op], scope, p, vloc)
    label, custom = _label(name), node.get("text")
    is_time = _is_time(name, scope)

    if op == "equals":
        if isinstance(raw, (dict, list)):
            raise MappingError(vloc, p, "expected a single value")
        if is_time:
            raw = _timestamp(raw, p, vloc)
        _known_values([raw], name, scope, p, vloc)
        v = raw
        return Predicate(lambda inc, now: inc.get(name) == v, custom or f"{label} is {v}", "leaf",
                         admits=_admits(name, [v], scope))
    if op == "in":
        if not isinstance(raw, list) or not raw:
            raise MappingError(vloc, p, "expected a non-empty list of values")
        _known_values(raw, name, scope, p, vloc)
        values = frozenset(raw)
        if name in LIST_FIELDS and scope.item_of is None:
            return Predicate(lambda inc, now: any(x in values for x in inc.get(name) or ()), custom or f"{label} includes one of {sorted(map(str, values))}", "leaf")
        return Predicate(lambda inc, now: inc.get(name) in values, custom or f"{label} is one of {', '.join(map(str, raw))}", "leaf",
                         admits=_admits(name, values, scope))
    if op == "matches":
        if not isinstance(raw, str):
            raise MappingError(vloc, p, "expected a regular expression string")
        try:
            rx = re.compile(raw)
        except re.error as exc:
            raise MappingError(vloc, p, f"invalid regular expression: {exc}") from None
        search = rx.search
        return Predicate(lambda inc, now: isinstance(inc.get(name), str) and search(inc[name]) is not None, custom or f"{label} matches {raw}", "leaf")
    if op == "before":
        other = field_name(node, "before", path, loc, scope)
        if scope.item_of is None and not (_is_time(name, scope) and _is_time(other, scope)):
            raise MappingError(vloc, p, "before compares two timestamp fields")

        def before(inc: Record, now: datetime) -> bool:
            a, b = inc.get(name), inc.get(other)
            return a is not None and b is not None and a <= b
        return Predicate(before, custom or f"{label} not after {_label(other)}", "leaf")
    # comparators
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str, datetime)):
        raise MappingError(vloc, p, "expected a number or a timestamp")
    v = _timestamp(raw, p, vloc) if is_time else raw
    cmp = {"gt": lambda a: a > v, "gte": lambda a: a >= v, "lt": lambda a: a < v, "lte": lambda a: a <= v}[op]

    def compare(inc: Record, now: datetime) -> bool:
        a = inc.get(name)
        if a is None:
            return False
        try:
            return bool(cmp(a))
        except TypeError:
            return False
    sym = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    return Predicate(compare, custom or f"{label} {sym} {v}", "leaf")


def _is_time(name: str, scope: Scope) -> bool:
    if scope.item_of is None:
        return name in DATETIME_FIELDS
    return name.startswith(PARENT) and name[len(PARENT):] in DATETIME_FIELDS


def _timestamp(raw: Any, path: str, loc: Location) -> datetime:
    try:
        dt = parse_utc(raw)
    except ValueError:
        dt = None
    if dt is None:
        raise MappingError(loc, path, f"expected a timestamp, got {raw!r}")
    return dt


def _list_field(node: dict, key: str, path: str, loc: Location, scope: Scope) -> str:
    name = field_name(node, key, path, loc, scope)
    if scope.item_of is None and name not in LIST_FIELDS:
        raise MappingError(located(node, key, loc), f"{path}.{key}", f"{name!r} is not a list field (list fields: {', '.join(sorted(LIST_FIELDS))})")
    return name


def _count(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    only_keys(node, {"count", "where", "min", "max", "text"}, path, loc)
    name = _list_field(node, "count", path, loc, scope)
    bounds = {}
    for k in ("min", "max"):
        if k in node:
            v = param_value(node[k], scope, f"{path}.{k}", located(node, k, loc))
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise MappingError(located(node, k, loc), f"{path}.{k}", f"expected a whole number >= 0, got {v!r}")
            bounds[k] = v
    if not bounds:
        raise MappingError(loc, path, "count needs min, max or both")
    lo, hi = bounds.get("min", 0), bounds.get("max")
    where = None
    if "where" in node:
        where = compile_condition(node["where"], f"{path}.where", located(node, "where", loc), scope.item_scope(name)).fn

    def count(inc: Record, now: datetime) -> bool:
        items = inc.get(name) or ()
        n = len(items) if where is None else sum(1 for it in items if isinstance(it, Mapping) and where(ItemView(it, inc), now))
        return n >= lo and (hi is None or n <= hi)
    what = _label(name) if where is None else f"{_label(name)} ({node.get('where', {}).get('text') or 'matching'})"
    if hi is None:
        text = f"at least {lo} {what}"
    elif lo == 0:
        text = f"at most {hi} {what}"
    else:
        text = f"{lo} to {hi} {what}"
    return Predicate(count, node.get("text") or text, "leaf")


def _every(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    only_keys(node, {"every", "where", "text"}, path, loc)
    name = _list_field(node, "every", path, loc, scope)
    if "where" not in node:
        raise MappingError(loc, path, "every needs a where condition")
    inner = compile_condition(node["where"], f"{path}.where", located(node, "where", loc), scope.item_scope(name))
    f = inner.fn

    def every(inc: Record, now: datetime) -> bool:
        return all(isinstance(it, Mapping) and f(ItemView(it, inc), now) for it in inc.get(name) or ())
    return Predicate(every, node.get("text") or f"every {_label(name)} item has {inner.text}", "leaf")


def _elapsed(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    only_keys(node, {"elapsed", "at_most", "at_least", "text"}, path, loc)
    span = node["elapsed"]
    sp, sloc = f"{path}.elapsed", located(node, "elapsed", loc)
    if not isinstance(span, dict):
        raise MappingError(sloc, sp, "expected {from: field, to: field}")
    only_keys(span, {"from", "to"}, sp, sloc)
    start, end = field_name(span, "from", sp, sloc, scope), field_name(span, "to", sp, sloc, scope)
    for n in (start, end):
        if scope.item_of is None and n not in DATETIME_FIELDS:
            raise MappingError(sloc, sp, f"{n!r} is not a timestamp field")
    bound, lookup, shown = _bound(node, path, loc, scope)
    at_most = bound == "at_most"

    def elapsed(inc: Record, now: datetime) -> bool:
        a, b = inc.get(start), inc.get(end)
        if a is None or b is None:
            return False
        limit = lookup(inc)
        if limit is None:
            return True  # no limit for this value: nothing to breach
        return (b - a) <= limit if at_most else (b - a) >= limit
    word = "within" if at_most else "at least"
    return Predicate(elapsed, node.get("text") or f"{_label(end)} {word} {shown} of {_label(start)}", "leaf")


def _since(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    only_keys(node, {"since", "at_most", "at_least", "text"}, path, loc)
    name = field_name(node, "since", path, loc, scope)
    if scope.item_of is None and name not in DATETIME_FIELDS:
        raise MappingError(located(node, "since", loc), f"{path}.since", f"{name!r} is not a timestamp field")
    bound, lookup, shown = _bound(node, path, loc, scope)
    at_most = bound == "at_most"

    def since(inc: Record, now: datetime) -> bool:
        a = inc.get(name)
        if a is None:
            return False
        limit = lookup(inc)
        if limit is None:
            return True
        return (now - a) <= limit if at_most else (now - a) >= limit
    word = "less than" if at_most else "more than"
    return Predicate(since, node.get("text") or f"{word} {shown} since {_label(name)}", "leaf")


def _option(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    only_keys(node, {"option", "then"}, path, loc)
    name = node["option"]
    if not isinstance(name, str) or name not in scope.params:
        raise MappingError(located(node, "option", loc), f"{path}.option",
                           f"expected the name of one of this check's parameters ({', '.join(sorted(scope.params)) or 'none'}), got {name!r}")
    switched_on = scope.params[name]
    if not isinstance(switched_on, bool):
        raise MappingError(located(node, "option", loc), f"{path}.option", f"parameter {name!r} must be true or false, got {switched_on!r}")
    if "then" not in node:
        raise MappingError(loc, path, "option needs then: the condition that applies when the option is on")
    inner = compile_condition(node["then"], f"{path}.then", located(node, "then", loc), scope)
    # decided when the ruleset compiles: an option that is off costs nothing at assessment
    return inner if switched_on else Predicate(lambda inc, now: True, f"({inner.text}: not required)", "leaf")


def _dispatch_field(node: dict, path: str, loc: Location, scope: Scope) -> Predicate:
    return _field_condition(node, path, loc, scope)


_KINDS: dict[str, Callable[[dict, str, Location, Scope], Predicate]] = {
    "all": _all,
    "any": _any,
    "not": _not,
    "present": _present,
    "empty": _empty,
    "field": _dispatch_field,
    "count": _count,
    "every": _every,
    "elapsed": _elapsed,
    "since": _since,
    "option": _option,
}

ALWAYS = Predicate(lambda inc, now: True, "always", "leaf")
