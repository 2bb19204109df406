"""The per-app state: the validated configuration and the last good ruleset, and ``gapbridge()`` to reach it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from flask import Flask

from .config import ConfigError
from .rules.loader import load_ruleset
from .rules.model import Ruleset


def shipped_mappings() -> Path:
    """The mappings folder installed with GapBridge (a namespace package of YAML files)."""
    spec = importlib.util.find_spec("mappings")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "subprocesses.yaml").is_file():
            return Path(location)
    return Path(__file__).resolve().parent.parent / "mappings"


class GapBridge:
    """Per-app state: the validated configuration and the running ruleset."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._ruleset: Ruleset | None = None

    @property
    def mappings_root(self) -> Path:
        return Path(self.config["mappings"]["path"]) if self.config["mappings"]["path"] else shipped_mappings()

    @property
    def overrides_path(self) -> Path | None:
        p = self.config["mappings"]["overrides"]
        return Path(p) if p else None

    def compile_ruleset(self) -> Ruleset:
        return load_ruleset(self.mappings_root, overrides=self.overrides_path, overlays=self.config["mappings"]["regulatory"])

    @property
    def ruleset(self) -> Ruleset:
        if self._ruleset is None:
            self._ruleset = self.compile_ruleset()
        return self._ruleset

    def reload_ruleset(self) -> Ruleset:
        """Recompile; on failure raise and keep the last good ruleset running."""
        new = self.compile_ruleset()
        self._ruleset = new
        return new

    def read_only_sources(self) -> list[str]:
        """Configured sources whose connector type writes nothing back (by its declared capabilities)."""
        from connectors.base import ConnectorError, connector_class

        from .config import UNLOADABLE

        found = []
        for name, options in self.config["connectors"].items():
            if UNLOADABLE in options:
                continue  # unknown capabilities: its items wait for the plugin to be fixed
            try:
                if connector_class(options["type"]).capabilities.read_only:
                    found.append(name)
            except ConnectorError:
                continue
        return found

    def connector(self, name: str) -> Any:
        from connectors.base import ConnectorLoadError, connector_class

        from .config import UNLOADABLE

        try:
            options = self.config["connectors"][name]
        except KeyError:
            known = ", ".join(sorted(self.config["connectors"])) or "none configured"
            raise ConfigError(f"no connector named {name!r} in the configuration (configured: {known})") from None
        if UNLOADABLE in options:
            raise ConnectorLoadError(f"connectors.{name}: {options[UNLOADABLE]}")
        return connector_class(options["type"])(name, options)


def gapbridge(app: Flask | None = None) -> GapBridge:
    from flask import current_app

    return (app or current_app).extensions["gapbridge"]
