"""Safe YAML loading that remembers where every value came from.

Mapping files are loaded into ``LocatedDict`` / ``LocatedList``: ordinary dicts and
lists that also know the line of each key or item, so a validation error can say
``mappings/checks/evidence.yaml:42: checks[3].requires.count: ...``.
Duplicate keys are an error (PyYAML silently keeps the last one).

Nodes are composed by libyaml (``CSafeLoader``) where PyYAML was built with it: the
pure-Python composer was almost all of the time it took to compile the shipped
ruleset. Its nodes carry the same line marks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..errors import GapBridgeError

T = TypeVar("T")


@dataclass(frozen=True)
class Location:
    file: str
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class LocatedDict(dict):
    """A dict that knows the location of itself and of each of its keys."""

    location: Location
    key_locations: dict[Any, Location]

    def loc(self, key: Any = None) -> Location:
        if key is not None and key in self.key_locations:
            return self.key_locations[key]
        return self.location


class LocatedList(list):
    location: Location
    item_locations: list[Location]

    def loc(self, index: int | None = None) -> Location:
        if index is not None and 0 <= index < len(self.item_locations):
            return self.item_locations[index]
        return self.location


class MappingError(GapBridgeError):
    """One fault in a mapping or override file, with its place."""

    def __init__(self, location: Location | str, path: str, message: str) -> None:
        self.location = location
        self.path = path
        self.message = message
        where = f"{location}: {path}: " if path else f"{location}: "
        super().__init__(where + message)


class MappingErrors(GapBridgeError):
    """Every fault found in one pass."""

    def __init__(self, errors: list[MappingError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def collecting(faults: list[MappingError], make: Callable[..., T], *args: Any) -> T | None:
    """``make(*args)``, or None with its fault (or faults) added to ``faults``: lint mode goes on past a fault."""
    try:
        return make(*args)
    except MappingError as e:
        faults.append(e)
    except MappingErrors as e:
        faults.extend(e.errors)
    return None


def load_yaml(path: Path, display_name: str | None = None) -> Any:
    """Load one YAML file into located containers; raise MappingError on any fault."""
    name = display_name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(Location(name, 0), "", f"cannot read file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise MappingError(Location(name, 0), "", "file is not UTF-8 text") from None
    return load_yaml_text(text, name)


_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_or_note(path: Path, name: str, errors: list[MappingError]) -> tuple[bool, Any]:
    """(loaded, document) of one mapping file; a fault goes to ``errors`` (lint mode) and the file is skipped."""
    try:
        return True, load_yaml(path, name)
    except MappingError as e:
        errors.append(e)
        return False, None


def load_yaml_text(text: str, name: str) -> Any:
    try:
        node = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        detail = exc.problem or str(exc)
        if exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            detail += f" ({exc.context.replace('while parsing', 'in').strip()} started on line {exc.context_mark.line + 1})"
        raise MappingError(Location(name, line), "", f"invalid YAML: {detail}") from None
    except yaml.YAMLError as exc:
        raise MappingError(Location(name, 0), "", f"invalid YAML: {exc}") from None
    if node is None:
        return None
    return _construct(node, name)


def _construct(node: yaml.Node, name: str) -> Any:
    loc = Location(name, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = LocatedDict()
        out.location = loc
        out.key_locations = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise MappingError(Location(name, key_node.start_mark.line + 1), "", "merge keys (<<) are not supported")
            key = _construct(key_node, name)
            if isinstance(key, (dict, list)):
                raise MappingError(Location(name, key_node.start_mark.line + 1), "", "a key must be a scalar")
            key_loc = Location(name, key_node.start_mark.line + 1)
            if key in out:
                raise MappingError(key_loc, str(key), f"duplicate key (first defined on line {out.key_locations[key].line})")
            out[key] = _construct(value_node, name)
            out.key_locations[key] = key_loc
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LocatedList()
        seq.location = loc
        seq.item_locations = []
        for item in node.value:
            seq.append(_construct(item, name))
            seq.item_locations.append(Location(name, item.start_mark.line + 1))
        return seq
    # scalars: let the safe constructor resolve the tag (int, bool, null, timestamp...)
    return _scalar(node)


_SCALAR_LOADER = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    return _SCALAR_LOADER.construct_object(node, deep=True)


def located(node: Any, key: Any = None, default: Location | None = None) -> Location:
    """Where ``node`` (or its ``key``) was written; ``default`` (or an unknown place) for plain values."""
    if isinstance(node, (LocatedDict, LocatedList)):
        return node.loc(key)
    return default or Location("?", 0)


def display_name(path: Path, root: Path) -> str:
    """``mappings/<path inside the mappings folder>`` for messages, else the path as given."""
    try:
        return f"mappings/{path.relative_to(root).as_posix()}"
    except ValueError:
        return str(path)


def only_keys(node: Any, allowed: set[str], path: str, loc: Location) -> None:
    """Reject the first key of ``node`` outside ``allowed``, naming it and where it is."""
    extra = sorted((k for k in node if k not in allowed), key=str)
    if extra:
        raise MappingError(located(node, extra[0], loc), f"{path}.{extra[0]}", f"unknown key; expected one of: {', '.join(sorted(allowed))}")
