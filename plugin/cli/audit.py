"""``gapbridge audit``: the audit log."""

from __future__ import annotations

import re

import click

from . import Context, fail, main

SHOWN = 50  # problems listed; the rest are counted


@main.group("audit")
def audit_group() -> None:
    """The append-only, hash-chained audit log."""


def _head(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    from ..services.audit import GENESIS

    m = re.fullmatch(r"(\d+):([0-9a-f]{64})", value.strip().lower())
    if m is None:
        raise click.BadParameter("expected SEQ:HASH, as `gapbridge audit verify` prints the head (a seq and 64 hex digits)")
    seq, digest = int(m[1]), m[2]
    if seq == 0 and digest != GENESIS:
        raise click.BadParameter(f"seq 0 is the empty log, whose head hash is {GENESIS}")
    return seq, digest


@audit_group.command("verify")
@click.option("--expect-head", "expect_head", metavar="SEQ:HASH", callback=_head,
              help="A head printed by an earlier run: the log must still reach it with that hash (catches the newest rows removed).")
@click.pass_obj
def audit_verify(obj: Context, expect_head: tuple[int, str] | None) -> None:
    """Check the chain: every row changed, removed, inserted or moved is listed. Exit 1 if any."""
    from ..services.audit import verify

    with obj.app().app_context():
        result = verify(expect_head, limit=SHOWN)
    if result.intact:
        click.echo(f"audit log intact: {result.rows} rows, head {result.head}")
        return
    click.echo(f"audit log tampered: {result.problem_count} problem{'s' if result.problem_count != 1 else ''} "
               f"in {result.rows} rows, head {result.head}")
    for problem in result.problems:
        click.echo(f"  {problem}")
    if result.problem_count > len(result.problems):
        click.echo(f"  ... and {result.problem_count - len(result.problems)} more")
    fail("the audit log has been tampered with", code=1)
