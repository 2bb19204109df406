"""``gapbridge mappings``: validate, explain, export and document the mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..config import ConfigError, load_config
from ..rules.yamlsource import MappingErrors
from . import Context, fail, main


@main.group("mappings")
def mappings_group() -> None:
    """Validate, explain and export the mappings."""


def _ruleset(obj: Context, root: str | None = None, overrides: str | None = None, overlays: tuple[str, ...] = (), *,
             every_overlay: bool = False) -> Any:
    """The ruleset as configured, with command-line choices laid over; exit 2 on any fault.

    ``every_overlay``: with no --overlay given, switch on every overlay the mappings folder has, not the configured ones.
    """
    from ..rules.loader import available_overlays, load_ruleset
    from ..state import shipped_mappings

    try:
        cfg = load_config(Path(obj.config_path) if obj.config_path else None)
    except ConfigError as exc:
        fail(f"configuration error:\n{exc}")
    base = Path(root) if root else Path(cfg["mappings"]["path"]) if cfg["mappings"]["path"] else shipped_mappings()
    ov = Path(overrides) if overrides else Path(cfg["mappings"]["overrides"]) if cfg["mappings"]["overrides"] else None
    if every_overlay and not overlays:
        overlays = tuple(available_overlays(base))
    try:
        return load_ruleset(base, overrides=ov, overlays=overlays or cfg["mappings"]["regulatory"])
    except MappingErrors as exc:
        fail(f"{len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''} in the mappings:\n{exc}")


_ruleset_options = [
    click.option("--path", "root", type=click.Path(file_okay=False), help="A mappings folder (default: the configured one)."),
    click.option("--overrides", type=click.Path(dir_okay=False), help="An organisation's override file (default: the configured one)."),
    click.option("--overlay", "overlays", multiple=True, metavar="ID",
                 help="Regulatory overlay to switch on, by its id in the mappings' overlays/ (repeatable; default: the configured ones)."),
]


def ruleset_options(fn: Any) -> Any:
    for option in reversed(_ruleset_options):
        fn = option(fn)
    return fn


@mappings_group.command("validate")
@ruleset_options
@click.pass_obj
def mappings_validate(obj: Context, root: str | None, overrides: str | None, overlays: tuple[str, ...]) -> None:
    """Report every error in the mappings in one pass."""
    rs = _ruleset(obj, root, overrides, overlays)
    click.echo(f"ok: {len(rs.checks)} checks, {len(rs.subprocesses)} sub-processes, "
               f"{len(rs.catalogue.controls['2022'])} + {len(rs.catalogue.controls['2013'])} controls and clauses; ruleset {rs.hash}")



@mappings_group.command("explain")
@click.argument("check_id")
@ruleset_options
@click.pass_obj
def mappings_explain(obj: Context, check_id: str, root: str | None, overrides: str | None, overlays: tuple[str, ...]) -> None:
    """What CHECK_ID checks, why, for which controls, and its effective values."""
    from ..rules.publish import explain

    rs = _ruleset(obj, root, overrides, overlays, every_overlay=True)
    check = rs.check(check_id.upper())
    if check is None:
        fail(f"no check {check_id!r}; known: {', '.join(c.id for c in rs.checks)}")
    click.echo(explain(rs, check))


@mappings_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["ciso-assistant"]), required=True)
@click.option("--output", type=click.Path(file_okay=False), default=".", show_default=True, help="Folder for the library files.")
@ruleset_options
@click.pass_obj
def mappings_export(obj: Context, fmt: str, output: str, root: str | None, overrides: str | None, overlays: tuple[str, ...]) -> None:
    """Export the ITIL -> ISO 27001:2022 relations for another tool."""
    from ..rules.publish import ciso_assistant_libraries, dump_yaml

    rs = _ruleset(obj, root, overrides, overlays)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    for name, doc in ciso_assistant_libraries(rs).items():
        (folder / name).write_text(dump_yaml(doc), encoding="utf-8")
        click.echo(f"wrote {folder / name}")


@mappings_group.command("docs")
@click.option("--output", type=click.Path(dir_okay=False), default="docs/mappings.md", show_default=True)
@click.option("--check", "check_only", is_flag=True, help="Exit 1 if the file is out of date instead of writing it.")
@click.pass_obj
def mappings_docs(obj: Context, output: str, check_only: bool) -> None:
    """Generate docs/mappings.md from the shipped mappings and every overlay."""
    from ..rules.loader import available_overlays, load_ruleset
    from ..rules.publish import mappings_markdown
    from ..state import shipped_mappings

    try:
        text = mappings_markdown(load_ruleset(shipped_mappings(), overlays=available_overlays(shipped_mappings())))
    except MappingErrors as exc:
        fail(f"mapping error:\n{exc}")
    path = Path(output)
    if check_only:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            fail(f"{path} is out of date; run: gapbridge mappings docs", code=1)
        click.echo(f"{path} is up to date")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path}")
