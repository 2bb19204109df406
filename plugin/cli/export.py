"""``gapbridge export``: gaps, coverage and populations as OSCAL, CSV or JSON, for a period."""

from __future__ import annotations

import sys
from itertools import chain, islice
from pathlib import Path
from typing import Any

import click
import orjson
from marshmallow import ValidationError

from ..schemas.common import parse_period
from . import Context, fail, main, migrate_db

DATASETS = ("gaps", "coverage", "population")


def _scope(period: str | None, by: str, business_unit: str | None, source: str | None) -> Any:
    from ..queries.scope import Scope

    if period is None:
        return Scope(by=by, business_unit=business_unit, source=source)
    try:
        p = parse_period(period)
    except ValidationError as exc:
        fail(f"invalid --period {period!r}: {exc.messages[0] if isinstance(exc.messages, list) else exc.messages}")
    return Scope(start=p.start, end=p.end, by=by, business_unit=business_unit, source=source, label=p.label)


@main.command("export")
@click.argument("fmt", metavar="oscal|csv|json", type=click.Choice(["oscal", "csv", "json"]))
@click.option("--period", help="2026, 2026-Q3, 2026-09 or 2026-W05 (UTC); required for oscal.")
@click.option("--by", type=click.Choice(["opened_at", "closed_at"]), default="opened_at", show_default=True,
              help="Which time puts an incident in the period.")
@click.option("--dataset", type=click.Choice(DATASETS), default="gaps", show_default=True, help="csv and json: what to export.")
@click.option("--control", help="population: the control (either edition), or --subprocess.")
@click.option("--subprocess", "subprocess_id", help="population: the ITIL sub-process.")
@click.option("--status", type=click.Choice(["open", "accepted", "resolved"]), default="open", show_default=True, help="gaps: which.")
@click.option("--business-unit")
@click.option("--source")
@click.option("--out", required=True, type=click.Path(), help="A file for csv and json ('-' for stdout); a folder for oscal.")
@click.pass_obj
def export(obj: Context, fmt: str, period: str | None, by: str, dataset: str, control: str | None, subprocess_id: str | None,
           status: str, business_unit: str | None, source: str | None, out: str) -> None:
    """Write an export: OSCAL assessment results with their plan, or gaps, coverage or a population as CSV or JSON."""
    from ..exports.tabular import COLUMNS, csv_lines, json_document
    from ..models import utcnow
    from ..queries import export_rows as rows
    from ..state import gapbridge
    from ..web.api import _version

    scope = _scope(period, by, business_unit, source)
    app = obj.app()
    migrate_db(app)
    with app.app_context():
        ruleset = gapbridge(app).ruleset
        now = utcnow()
        if fmt == "oscal":
            if period is None:
                fail("an OSCAL assessment covers a period: give --period (e.g. 2026-Q3)")
            from ..exports import oscal
            from ..queries import assessment

            folder = Path(out)
            if folder.exists() and not folder.is_dir():
                fail(f"--out {out}: for oscal, a folder (both documents are written into it)")
            folder.mkdir(parents=True, exist_ok=True)
            a = assessment.build(ruleset, scope, title=f"GapBridge assessment {period}", now=now, version=_version())
            for name, doc in (("assessment-plan.json", oscal.assessment_plan(a)),
                              ("assessment-results.json", oscal.assessment_results(a, "assessment-plan.json"))):
                (folder / name).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
                click.echo(f"wrote {folder / name}", err=True)
            click.echo(f"{len(a.incidents)} incidents, {len(a.controls)} controls, {len(a.risks)} accepted risks "
                       f"({a.period_start:%Y-%m-%d} to {a.period_end:%Y-%m-%d}, by {by})", err=True)
            return
        try:
            if dataset == "gaps":
                args: dict[str, Any] = {"status": status, "sort": "severity", "kind": "gap", "by": by}
                if period:
                    args["period"] = parse_period(period)
                args.update({k: v for k, v in (("business_unit", business_unit), ("source", source), ("control", control)) if v})
                items: Any = rows.gap_rows(ruleset, args, now)
            elif dataset == "coverage":
                items = rows.coverage_rows(ruleset, scope, "subprocess" if subprocess_id else "control", now)
            else:
                from ..web.api.coverage import _control_group, _subprocess_group

                if bool(control) == bool(subprocess_id):
                    fail("a population is of one control (--control) or one sub-process (--subprocess)")
                group = _control_group(ruleset, control) if control else _subprocess_group(ruleset, str(subprocess_id))
                items = rows.population_rows(group, scope, None, now)
            first = list(islice(items, 1))  # a bad filter fails here, before the file is created
            items = chain(first, items)
            if fmt == "csv":
                chunks: Any = csv_lines(COLUMNS[dataset], items)
            else:
                chunks = [json_document(dataset, {"generated_at": now, "ruleset": ruleset.hash, "scope": scope.describe()}, items)]
            target = sys.stdout.buffer if out == "-" else open(out, "wb")  # noqa: SIM115 - closed below unless stdout
            try:
                n = 0
                for chunk in chunks:
                    target.write(chunk.encode() if isinstance(chunk, str) else chunk)
                    n += 1
            finally:
                if target is not sys.stdout.buffer:
                    target.close()
        except ValidationError as exc:
            fail("; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in exc.messages.items())
                 if isinstance(exc.messages, dict) else str(exc.messages))
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror}")
        if out != "-":
            click.echo(f"wrote {out}" + (f" ({n - 1} rows)" if fmt == "csv" else ""), err=True)
