"""Configuration errors, the CLI's exit codes, the docs being current, and the read-only API."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from plugin.cli import main
from plugin.config import ConfigError, load_config, redact

from .conftest import REPO


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- configuration -------------------------------------------------------------------------


def test_defaults_need_no_file() -> None:
    cfg = load_config(None, env={})
    assert cfg["connectors"] == {} and cfg["api"]["enabled"] is True and cfg["database_url"] is None


def test_unknown_key_is_named_with_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, "log_level: INFO\noutbox:\n  max_attempts: 3\n  max_atempts: 4\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p, env={})
    assert str(exc.value) == f"{p}:4: outbox.max_atempts: unknown key"


def test_bad_value_is_named_with_key_and_expectation(tmp_path: Path) -> None:
    p = write(tmp_path, "outbox:\n  max_attempts: many\n")
    with pytest.raises(ConfigError, match=r"config.yaml:2: outbox.max_attempts: Not a valid integer"):
        load_config(p, env={})


def test_worker_process_is_one_of_its_modes(tmp_path: Path) -> None:
    assert load_config(None, env={})["sync"]["worker_process"] == "auto"
    assert load_config(write(tmp_path, "sync:\n  worker_process: never\n"), env={})["sync"]["worker_process"] == "never"
    for value in ("off", "sometimes"):  # YAML reads off as false
        with pytest.raises(ConfigError, match=r"config.yaml:2: sync.worker_process: Must be one of: auto, always, never"):
            load_config(write(tmp_path, f"sync:\n  worker_process: {value}\n"), env={})


def test_unknown_connector_type(tmp_path: Path) -> None:
    p = write(tmp_path, "connectors:\n  main:\n    type: remedy\n")
    with pytest.raises(ConfigError, match=r"config.yaml:3: connectors.main.type: unknown connector type 'remedy'"):
        load_config(p, env={})


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    p = write(tmp_path, "database_url: postgresql://gb:${GB_DB_PASSWORD}@db/gapbridge\n")
    assert load_config(p, env={"GB_DB_PASSWORD": "s3cret"})["database_url"] == "postgresql://gb:s3cret@db/gapbridge"
    with pytest.raises(ConfigError, match=r"config.yaml:1: database_url: environment variable GB_UNSET_VAR is not set"):
        load_config(write(tmp_path, "database_url: ${GB_UNSET_VAR}\n"), env={})


def test_database_url_from_the_environment_wins() -> None:
    cfg = load_config(None, env={"DATABASE_URL": "postgresql://x@h/db"})
    assert cfg["database_url"] == "postgresql://x@h/db"


def test_redact_hides_every_secret() -> None:
    tree = {"auth": {"username": "u", "password": "hunter2", "client_secret": "s3"}, "token": "t", "list": [{"api_token": "a"}]}
    text = repr(redact(tree))
    assert "hunter2" not in text and "s3" not in text and "'t'" not in text and "'a'" not in text and "'u'" in text


def test_malformed_yaml_in_config(tmp_path: Path) -> None:
    p = write(tmp_path, "outbox: [\n")
    with pytest.raises(ConfigError, match=r"config.yaml:2: invalid YAML"):
        load_config(p, env={})


# --- CLI exit codes ---------------------------------------------------------------------------


def test_bad_config_exits_2_with_one_message_and_no_traceback(tmp_path: Path) -> None:
    p = write(tmp_path, "outbox:\n  nonsense: 1\n")
    result = CliRunner().invoke(main, ["--config", str(p), "assess"])
    assert result.exit_code == 2
    assert "config.yaml:2: outbox.nonsense: unknown key" in result.output
    assert "Traceback" not in result.output


def test_bad_mapping_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    (root / "checks" / "broken.yaml").write_text("checks:\n  - id: BAD-001\n    title: x\n    severity: fatal\n")
    p = write(tmp_path, f"mappings:\n  path: {root}\n")
    result = CliRunner().invoke(main, ["--config", str(p), "mappings", "validate"])
    assert result.exit_code == 2
    assert "mappings/checks/broken.yaml:2: checks[0]: missing required key 'subprocess'" in result.output
    result = CliRunner().invoke(main, ["--config", str(p), "assess"])
    assert result.exit_code == 2 and "broken.yaml:2" in result.output and "Traceback" not in result.output


def test_validate_and_explain_the_shipped_mappings() -> None:
    result = CliRunner().invoke(main, ["mappings", "validate"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")
    result = CliRunner().invoke(main, ["mappings", "explain", "EVID-001"])
    assert result.exit_code == 0, result.output
    assert "A.5.28 Collection of evidence" in result.output and "A.16.1.7 Collection of evidence" in result.output
    assert "Incident Resolution" in result.output and "What to do:" in result.output
    assert CliRunner().invoke(main, ["mappings", "explain", "NOPE-1"]).exit_code == 2


def test_overlays_are_whatever_the_mappings_folder_has(tmp_path: Path) -> None:
    """No overlay list is built in: a folder with its own overlay can switch it on, and an unknown id is named."""
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    dora = (root / "overlays" / "dora.yaml").read_text()
    (root / "overlays" / "sector.yaml").write_text(
        dora.replace("overlay: {id: dora,", "overlay: {id: sector-x,").replace("id: DORA-", "id: SECX-"))
    cfg = write(tmp_path, f"mappings:\n  path: {root}\n  regulatory: [sector-x]\n")
    result = CliRunner().invoke(main, ["--config", str(cfg), "mappings", "validate"])
    assert result.exit_code == 0, result.output
    # with no --overlay, explain knows the checks of every overlay of the folder
    result = CliRunner().invoke(main, ["mappings", "explain", "SECX-001", "--path", str(root)])
    assert result.exit_code == 0 and "SECX-001" in result.output, result.output

    cfg = write(tmp_path, f"mappings:\n  path: {root}\n  regulatory: [gpdr]\n")
    result = CliRunner().invoke(main, ["--config", str(cfg), "mappings", "validate"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "mappings.regulatory: no overlay named 'gpdr' in mappings/overlays (found: dora, gdpr, nis2, sector-x)" in result.output
    bad = write(tmp_path, "mappings:\n  regulatory: [GDPR 2016]\n")
    with pytest.raises(ConfigError, match="mappings.regulatory.0: an overlay id, such as gdpr"):
        load_config(bad, env={})


def test_explain_shows_where_overridden_values_come_from(tmp_path: Path) -> None:
    ov = write(tmp_path, "checks:\n  EVID-001:\n    severity: critical\n    params:\n      severities: [critical]\n", "overrides.yaml")
    result = CliRunner().invoke(main, ["mappings", "explain", "EVID-001", "--overrides", str(ov)])
    assert result.exit_code == 0, result.output
    assert "severity:          critical" in result.output
    assert f'severities = ["critical"]   (from {ov}:5)' in result.output
    assert f"severity: {ov}:3" in result.output


def test_ciso_assistant_export(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["mappings", "export", "--format", "ciso-assistant", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    framework = yaml.safe_load((tmp_path / "gapbridge-itil-incident-subprocesses.yaml").read_text())
    mapping = yaml.safe_load((tmp_path / "gapbridge-mapping-itil-incident-iso27001-2022.yaml").read_text())
    nodes = {n["urn"] for n in framework["objects"]["framework"]["requirement_nodes"]}
    assert len(nodes) == 7
    for lib in (framework, mapping):
        assert lib["urn"] == lib["urn"].lower() and lib["urn"].startswith("urn:gapbridge:risk:library:")
        assert len(lib["urn"]) <= 255 and len(lib["ref_id"]) <= 100 and len(lib["name"]) <= 200
        assert isinstance(lib["version"], int)
    (mset,) = mapping["objects"]["requirement_mapping_sets"]
    assert mset["target_framework_urn"] == "urn:intuitem:risk:framework:iso27001-2022"
    assert mset["source_framework_urn"] == framework["objects"]["framework"]["urn"]
    pairs = {(m["source_requirement_urn"].rsplit(":", 1)[1], m["target_requirement_urn"].rsplit(":", 1)[1], m["annotation"].split(";")[0])
             for m in mset["requirement_mappings"]}
    assert ("resolution", "a.5.28", "gap") in pairs and ("user-info", "a.6.8", "gap") in pairs
    assert ("logging", "a.5.25", "covered") in pairs and ("monitoring", "a.8.15", "improvement") in pairs
    for m in mset["requirement_mappings"]:
        assert m["source_requirement_urn"] in nodes
        assert m["target_requirement_urn"] == m["target_requirement_urn"].lower()
        assert m["relationship"] in {"equal", "superset", "subset", "intersect"}
        assert 0 <= m["strength_of_relationship"] <= 10


def test_docs_mappings_md_is_up_to_date() -> None:
    result = CliRunner().invoke(main, ["mappings", "docs", "--check", "--output", str(REPO / "docs" / "mappings.md")])
    assert result.exit_code == 0, "docs/mappings.md is stale: run `gapbridge mappings docs` and commit it\n" + result.output


# --- health --------------------------------------------------------------------------------


def test_health(client) -> None:
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["database"] == "ok" and len(body["ruleset"]) == 16


