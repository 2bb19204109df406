"""Connector types by name, from the ``gapbridge.connectors`` entry points.

Only the entry point asked for is loaded: a third-party connector that fails to import (a
missing dependency, a syntax error) fails the instances configured with its type, with an
error that names its package, and no other.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from .contract import Connector
from .errors import ConfigurationError

ENTRY_POINT_GROUP = "gapbridge.connectors"


class ConnectorLoadError(ConfigurationError):
    """A connector type is registered but its code cannot be loaded."""


def connector_types() -> list[str]:
    """The names of the registered connector types, without loading any."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _package(ep: EntryPoint) -> str:
    dist = ep.dist
    if dist is None:
        return f"the module {ep.module!r}"
    return f"package {dist.name} {dist.version}"


def connector_class(kind: str) -> type[Connector]:
    """The class registered for ``kind``; ConfigurationError if none, ConnectorLoadError if it cannot be loaded."""
    found = list(entry_points(group=ENTRY_POINT_GROUP, name=kind))
    if not found:
        known = ", ".join(connector_types()) or "none installed"
        raise ConfigurationError(f"unknown connector type {kind!r} (known: {known})")
    ep = found[0]
    try:
        cls = ep.load()
    except Exception as exc:  # noqa: BLE001  (any failure of a plugin's import is that plugin's, reported as such)
        raise ConnectorLoadError(f"connector type {kind!r} from {_package(ep)} cannot be loaded "
                                 f"({ep.value}): {type(exc).__name__}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConnectorLoadError(f"connector type {kind!r} from {_package(ep)}: {ep.value} is not a Connector class")
    return cls


def available_connectors() -> dict[str, type[Connector]]:
    """Every registered connector type that loads (for listings; a broken one is left out)."""
    found: dict[str, type[Connector]] = {}
    for kind in connector_types():
        try:
            found[kind] = connector_class(kind)
        except ConnectorLoadError:
            continue
    return found
