"""``gapbridge worker``: the schedule alone, for deployments that serve the web app under gunicorn."""

from __future__ import annotations

import click

from . import Context, fail, main, migrate_db

STOPPING = "stopping after the job under way (a sync after its current page); the next run resumes from there"


@main.command()
@click.option("--once", is_flag=True, help="Run the jobs that are due now, then exit (for cron, or a try).")
@click.pass_obj
def worker(obj: Context, once: bool) -> None:
    """Run the scheduled jobs (syncs, write-back, re-assessment, expiries, audit verify) until SIGTERM or Ctrl-C.

    Start as many as you like on as many machines: each job runs once across every worker (and every
    `gapbridge serve`) sharing the database.
    """
    from ..metrics import start_metrics_server
    from ..services import shutdown
    from ..services.scheduler import Scheduler, describe
    from ..state import gapbridge

    app = obj.app()
    if not gapbridge(app).config["schedule"]["enabled"]:
        fail("schedule.enabled is false in the configuration: a worker would have no job to run (set it to true, or do not start workers)")
    migrate_db(app)
    scheduler = Scheduler(app)
    say = lambda text: click.echo(f"gapbridge worker: {text}", err=True)  # noqa: E731
    if not once:
        say(f"{scheduler.holder}: {describe(list(scheduler.jobs.values()))} (SIGTERM or Ctrl-C stops)")
    # a worker serves no web app: the metrics address is how Prometheus sees its write-back and sync timings
    metrics_listener = None if once else start_metrics_server(app)
    if metrics_listener is not None:
        say(f"metrics on {metrics_listener.url}")
    try:
        with shutdown.on_signals(say, STOPPING):
            if once:
                for run in scheduler.tick():
                    click.echo(f"{run.name}: {run.outcome}: {run.summary}" + (f" ({run.error})" if run.error else ""), err=True)
            else:
                scheduler.run()
                say("stopped; the next run of each job resumes where this one ended")
    finally:
        if metrics_listener is not None:
            metrics_listener.close()
