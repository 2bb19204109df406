"""config.example.yaml runs as documented: every variable it reads is in the README, and it syncs the demo ITSM."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from demo_itsm import DemoITSM
from demo_itsm.server import CLIENT_ID, CLIENT_SECRET, PASSWORD, USER
from plugin.cli import main
from plugin.config import load_config

from .conftest import REPO

EXAMPLE = REPO / "config.example.yaml"


def variables_in(text: str, *, commented: bool = False) -> set[str]:
    """The ${VAR} the file reads; ``commented``: also those of settings commented out (``# key: ${VAR}``)."""
    names = set()
    for line in text.splitlines():
        setting = line.split("#", 1)[0] if not commented or not re.match(r"^\s*#\s*[a-z_]+: ", line) else line
        names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", setting))
    return names


def readme_variables() -> set[str]:
    """The names in the first column of the README's table of environment variables."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("| variable | what it is |", 1)[1].split("\n\n", 1)[0]
    return {name for row in table.splitlines()[2:] for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])}


def test_every_variable_of_the_example_is_listed_in_the_readme() -> None:
    used = variables_in(EXAMPLE.read_text(), commented=True)
    assert used >= {"GAPBRIDGE_DB_PASSWORD", "SN_CLIENT_ID", "SN_CLIENT_SECRET", "SN_USERNAME"}
    assert used - readme_variables() == set()


def test_the_example_loads_with_its_variables_and_names_the_first_one_missing() -> None:
    env = {name: "x" * 20 for name in variables_in(EXAMPLE.read_text())}
    cfg = load_config(EXAMPLE, env=env)
    assert cfg["connectors"]["servicenow"]["auth"]["client_id"] == "x" * 20
    missing = sorted(env)[0]
    del env[missing]
    try:
        load_config(EXAMPLE, env=env)
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        assert f"environment variable {missing} is not set" in str(exc)
    else:
        raise AssertionError("a missing variable must stop loading")


def test_the_example_syncs_the_demo_itsm_with_its_scope_query(tmp_path: Path, database_url: str, app_factory: Any) -> None:
    """As an operator would: the example, with the instance, database and override file changed, nothing else."""
    app_factory()  # empties the shared test database when the test ends
    doc = yaml.safe_load(EXAMPLE.read_text())
    with DemoITSM(tmp_path / "itsm.sqlite", size=60) as itsm:
        assert itsm.url is not None
        # ten closed last year: out of the example's scope (open, or changed this year)
        with itsm._db:
            itsm._db.execute("UPDATE incident SET active = 'false', sys_updated_on = '2025-06-01 00:00:00' "
                             "WHERE sys_id IN (SELECT sys_id FROM incident ORDER BY sys_id LIMIT 10)")
        doc["connectors"]["servicenow"]["instance_url"] = itsm.url
        doc["mappings"]["overrides"] = str(REPO / "mappings" / "overrides.example.yaml")
        doc["database_url"] = "${TEST_DATABASE}"
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        env = {"TEST_DATABASE": database_url, "SN_CLIENT_ID": CLIENT_ID, "SN_CLIENT_SECRET": CLIENT_SECRET,
               "SN_USERNAME": USER, "SN_PASSWORD": PASSWORD, "GAPBRIDGE_DB_PASSWORD": "unused", "DATABASE_URL": None}
        result = CliRunner().invoke(main, ["--config", str(config), "sync", "--no-writeback"], env=env)
        assert result.exit_code == 0, result.output
        # the demo refuses any part of a query it does not understand, so the scope was applied as written
        assert "Invalid query" not in result.output
        fetched = int(re.search(r"servicenow: (\d+) fetched", result.output).group(1))  # type: ignore[union-attr]
        in_scope = sum(1 for sid in itsm.sys_ids() if (r := itsm.record(sid))["active"] == "true"
                       or r["sys_updated_on"] >= "2026-01-01 00:00:00")
        assert fetched == in_scope == 50
