"""The pipeline: sync each source → assess what is stale → expire risk acceptances → plan and drain the outbox.

One pass, as the CLI, the scheduler, the demo and the benchmarks run it. It decides nothing about
presentation: callers get the summaries (and, if they ask, each source's as it finishes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import ConnectorError, FatalConnectorError

from ..config import ConfigError
from ..state import GapBridge
from .assess import AssessSummary, assess
from .enrich import DrainSummary, PlanSummary, drain, plan
from .risk import expire_due
from .sync import SyncBusyError, SyncSummary, sync_source

Progress = Callable[[Any, int | None], None]


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


@dataclass
class WritebackResult:
    plan: PlanSummary
    drain: DrainSummary

    @property
    def ok(self) -> bool:
        return not (self.drain.failed or self.drain.retrying)


@dataclass
class PassResult:
    synced: list[SourceSync] = field(default_factory=list)
    assessed: AssessSummary | None = None
    expired: int = 0
    writeback: WritebackResult | None = None

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
    connector = state.connector(name)  # a ConfigError names the instance
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


def reassess(state: GapBridge) -> AssessSummary:
    """Re-assess what is stale: open incidents whose clocks run, changed mappings, checks across incidents."""
    return assess(state.ruleset, time_sensitive_minutes=state.config["mappings"]["time_sensitive_interval_minutes"])


def write_back(state: GapBridge, sources: Sequence[str] | None = None, *, retry_failed: bool = False) -> WritebackResult:
    """Queue changed enrichments, then write what is due onto the tickets of ``sources``."""
    names = source_names(state, sources)
    planned = plan(state.ruleset)
    connectors = {n: state.connector(n) for n in names}
    ob = state.config["outbox"]
    try:
        drained = drain(connectors, max_attempts=ob["max_attempts"], backoff_base=ob["backoff_base_seconds"],
                        backoff_cap=ob["backoff_max_seconds"], batch_size=ob["batch_size"], retry_failed=retry_failed)
    finally:
        for c in connectors.values():
            c.close()
    return WritebackResult(planned, drained)


def run_pass(state: GapBridge, sources: Sequence[str] | None = None, *, full: bool = False, write_back_after: bool | None = None,
             progress_for: Callable[[str], Progress | None] | None = None,
             on_source: Callable[[SourceSync], None] | None = None) -> PassResult:
    """Sync each source, re-assess, record expired acceptances, then (by default as configured) write back."""
    names = source_names(state, sources)
    result = PassResult()
    for name in names:
        synced = sync_one(state, name, full=full, progress=progress_for(name) if progress_for else None)
        result.synced.append(synced)
        if on_source:
            on_source(synced)
    result.assessed = reassess(state)
    # recorded before the write-back, whose plan then tells the tickets concerned that their gaps count again
    result.expired = len(expire_due())
    if write_back_after if write_back_after is not None else state.config["sync"]["write_back_after_sync"]:
        result.writeback = write_back(state, names)
    return result
