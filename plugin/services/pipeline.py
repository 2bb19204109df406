"""The pipeline: sync each source → assess what is stale → expire risk acceptances → plan and drain the outbox.

One pass, as the CLI, the scheduler, the demo and the benchmarks run it. It decides nothing about
presentation: callers get the summaries (and, if they ask, each source's as it finishes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import Connector, ConnectorError, ConnectorLoadError, FatalConnectorError

from ..config import ConfigError
from ..db.leases import LeaseBusy, held_lease
from ..state import GapBridge
from . import shutdown
from .assess import AssessSummary, assess
from .enrich import PlanSummary, plan
from .outbox import DrainSummary, drain
from .risk import expire_due
from .sync import SyncBusyError, SyncSummary, sync_source

Progress = Callable[[Any, int | None], None]

# one assessment pass and one outbox plan at a time across instances: two at once race on the
# delete-then-insert of findings, and on queueing the same note
ASSESS_LEASE = "assess"
PLAN_LEASE = "outbox:plan"


@dataclass
class SourceSync:
    """One source's sync in a pass: its summary, or why it did not run or did not finish."""

    source: str
    summary: SyncSummary | None = None
    error: str | None = None
    busy: bool = False  # another process holds its lease: not a failure of this source

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def stopped(self) -> bool:
        """A stop was asked for during the sync (SIGTERM, Ctrl-C): the next run resumes from its bookmark."""
        return self.summary is not None and self.summary.status == "stopped"


@dataclass
class WritebackResult:
    plan: PlanSummary
    drain: DrainSummary
    plan_skipped: str | None = None  # another instance held the plan lease: this run wrote what was already queued
    read_only: list[str] = field(default_factory=list)  # sources whose connector writes nothing back
    unusable: dict[str, str] = field(default_factory=dict)  # source -> why its connector cannot be loaded

    @property
    def ok(self) -> bool:
        """Nothing failed and nothing waits; a stop asked for is no failure (the next run goes on)."""
        d = self.drain
        return not (d.failed or d.retrying or (d.not_attempted and not d.stopped) or self.unusable)


@dataclass
class PassResult:
    synced: list[SourceSync] = field(default_factory=list)
    assessed: AssessSummary | None = None
    expired: int = 0
    writeback: WritebackResult | None = None
    assess_skipped: str | None = None  # another instance held the assessment lease
    stopped: bool = False  # a stop was asked for: the steps after it did not run

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.synced) and (self.writeback is None or self.writeback.ok)


class NoSourceError(ConfigError):
    """A pass was asked for with no connector configured, or for one that is not."""


def source_names(state: GapBridge, sources: Sequence[str] | None) -> list[str]:
    names = list(sources or state.config["connectors"])
    if not names:
        raise NoSourceError("no connector is configured (add one under connectors: in the configuration file)")
    return names


def sync_one(state: GapBridge, name: str, *, full: bool = False, progress: Progress | None = None) -> SourceSync:
    """Sync one source; a failure of its tool is reported in the result, never raised (the next run resumes)."""
    try:
        connector = state.connector(name)  # a ConfigError names the instance
    except ConnectorLoadError as exc:  # a broken plugin: this source fails, the others go on
        return SourceSync(name, error=f"sync of {name!r} failed (fatal): {exc}")
    try:
        summary = sync_source(connector, full=full, lease_seconds=state.config["sync"]["lease_seconds"], progress=progress,
                              ruleset=state.ruleset, worker_process=state.config["sync"]["worker_process"])
    except SyncBusyError as exc:
        return SourceSync(name, error=str(exc), busy=True)
    except ConnectorError as exc:
        kind = "fatal" if isinstance(exc, FatalConnectorError) else "gave up after retries"
        return SourceSync(name, error=f"sync of {name!r} failed ({kind}): {exc}")
    finally:
        connector.close()
    return SourceSync(name, summary)


def step_lease_seconds(state: GapBridge) -> int:
    return int(state.config["schedule"]["job_lease_seconds"])


def reassess(state: GapBridge, *, everything: bool = False) -> AssessSummary:
    """Re-assess what is stale: open incidents whose clocks run, changed mappings, checks across incidents.

    Under the assessment lease; LeaseBusy if another process is assessing (what it leaves stale, the next pass does).
    """
    with held_lease(ASSESS_LEASE, step_lease_seconds(state)):
        return assess(state.ruleset, everything=everything,
                      time_sensitive_minutes=state.config["mappings"]["time_sensitive_interval_minutes"])


def busy_step(what: str, exc: LeaseBusy) -> str:
    """What a pass says of a step it skipped because another process holds its lease."""
    by = f" ({exc.holder} until {exc.until:%H:%M:%S} UTC)" if exc.holder else ""
    return f"{what} skipped: another process is at it{by}; nothing is lost, the next pass does what is left"


def write_back(state: GapBridge, sources: Sequence[str] | None = None, *, retry_failed: bool = False,
               progress: Callable[[int, int], None] | None = None) -> WritebackResult:
    """Queue changed enrichments, then write what is due onto the tickets of ``sources``."""
    names = source_names(state, sources)
    connectors: dict[str, Connector] = {}
    read_only: list[str] = []
    unusable: dict[str, str] = {}
    for name in names:
        try:
            connector = state.connector(name)
        except ConnectorLoadError as exc:  # a broken plugin: its tickets wait, the other sources are written
            unusable[name] = str(exc)
            continue
        if connector.capabilities.read_only:
            read_only.append(name)  # nothing is queued for it, so nothing piles up in the outbox
            connector.close()
            continue
        connectors[name] = connector
    planned, plan_skipped = PlanSummary(), None
    try:
        with held_lease(PLAN_LEASE, step_lease_seconds(state)):
            planned = plan(state.ruleset, exclude_sources=state.read_only_sources())
    except LeaseBusy as exc:  # the other plan queues what changed; the drain below writes what is queued
        plan_skipped = busy_step("outbox plan", exc)
    ob = state.config["outbox"]
    try:
        drained = drain(connectors, max_attempts=ob["max_attempts"], backoff_base=ob["backoff_base_seconds"],
                        backoff_cap=ob["backoff_max_seconds"], batch_size=ob["batch_size"], retry_failed=retry_failed,
                        progress=progress)
    finally:
        for c in connectors.values():
            c.close()
    for name, reason in unusable.items():
        drained.errors.append(f"{name}: nothing written: {reason}")
    return WritebackResult(planned, drained, plan_skipped, read_only, unusable)


def run_pass(state: GapBridge, sources: Sequence[str] | None = None, *, full: bool = False, write_back_after: bool | None = None,
             progress_for: Callable[[str], Progress | None] | None = None,
             on_source: Callable[[SourceSync], None] | None = None,
             writeback_progress: Callable[[int, int], None] | None = None) -> PassResult:
    """Sync each source, re-assess, record expired acceptances, then (by default as configured) write back."""
    names = source_names(state, sources)
    result = PassResult()
    for name in names:
        if shutdown.requested():
            break
        synced = sync_one(state, name, full=full, progress=progress_for(name) if progress_for else None)
        result.synced.append(synced)
        if on_source:
            on_source(synced)
    if shutdown.requested():  # what was stored is committed; the next pass resumes from each bookmark
        result.stopped = True
        return result
    try:
        result.assessed = reassess(state)
    except LeaseBusy as exc:
        result.assess_skipped = busy_step("re-assessment", exc)
    # recorded before the write-back, whose plan then tells the tickets concerned that their gaps count again
    result.expired = len(expire_due())
    if write_back_after if write_back_after is not None else state.config["sync"]["write_back_after_sync"]:
        result.writeback = write_back(state, names, progress=writeback_progress)
    return result
