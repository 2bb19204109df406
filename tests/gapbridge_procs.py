"""A real `gapbridge` in a subprocess against the demo ITSM: its configuration, its environment, its live processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from demo_itsm import DemoITSM

from .conftest import REPO


def write_config(tmp_path: Path, database_url: str, itsm: DemoITSM, **overrides: Any) -> Path:
    cfg: dict[str, Any] = {
        "database_url": database_url,
        "instance_path": str(tmp_path / "instance"),
        "connectors": {"demo": {
            "type": "servicenow", "instance_url": itsm.url, "auth": {"method": "basic", "username": "admin", "password": "admin"},
            "page_size": 10, "is_security": {"field": "u_security_incident"},
            "write_back": {"fingerprint_field": "u_gapbridge_fingerprint", "work_note": True},
        }},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def env_for(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GAPBRIDGE_DATABASE_URL")}
    return {**env, "GAPBRIDGE_CONFIG": str(config), "PYTHONPATH": str(REPO)}


def processes_with_env(entry: str) -> set[int]:
    """Live (not zombie) processes whose environment holds ``entry``: the command and any fetch worker it forked."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if entry.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.add(int(pid))
        except OSError:
            continue
    return found
