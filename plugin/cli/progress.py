"""Progress of long commands on stderr: one line rewritten in place on a terminal, a plain line every few seconds
otherwise (a log file or a pipe gets lines it can keep), with the rate and, when the total is known, the time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import click

PLAIN_EVERY = 5.0  # seconds between lines when stderr is no terminal
TTY_EVERY = 0.2  # a terminal line is rewritten at most this often


def duration(seconds: float) -> str:
    """A span as an operator reads it: 42 s, 3 min 5 s, 2 h 10 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s} s" if s else f"{minutes} min"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m} min" if m else f"{hours} h"


class ProgressLine:
    """``update(done, total, text)`` shows ``text`` with the rate of ``done`` since the first update and, with a total, the time left."""

    def __init__(self, *, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.started: float | None = None  # at the first update: the work before it (a plan, a login) is not its rate
        self.done_at_start = 0
        self.last = float("-inf")
        self.shown = False

    def rate(self, done: int) -> float:
        if self.started is None:
            return 0.0
        elapsed = self.clock() - self.started
        return (done - self.done_at_start) / elapsed if elapsed > 0 else 0.0

    def line(self, done: int, total: int | None, text: str) -> str:
        rate = self.rate(done)
        parts = [text, f"{rate:.1f}/s" if rate else ""]
        if total and rate and done < total:
            parts.append(f"about {duration((total - done) / rate)} left")
        return ", ".join(p for p in parts if p)

    def update(self, done: int, total: int | None, text: str, *, force: bool = False) -> None:
        now = self.clock()
        if self.started is None:
            self.started, self.done_at_start = now, done
        if not force and now - self.last < (TTY_EVERY if self.tty else PLAIN_EVERY):
            return
        self.last = now
        line = self.line(done, total, text)
        if self.tty:
            click.echo("\r\x1b[K" + line, file=self.stream, nl=False)  # \x1b[K: a shorter line leaves no tail
        else:
            click.echo(line, file=self.stream)
        self.shown = True

    def end(self) -> None:
        """Leave the terminal line for what is printed next."""
        if self.tty and self.shown:
            click.echo("", file=self.stream)
            self.shown = False


def sync_progress(label: str) -> Callable[[Any, int | None], None]:
    """The progress of one source's sync: ``show(summary, total)`` after each page."""
    line = ProgressLine()

    def show(summary: Any, total: int | None) -> None:
        of = f"/{total}" if total else ""
        line.update(summary.fetched, total, f"{label}: {summary.fetched}{of} fetched, {summary.stored} stored, "
                                            f"{summary.rejected} rejected (page {summary.pages})")
    return show


def writeback_progress() -> tuple[Callable[[int, int], None], ProgressLine]:
    """The progress of a drain: ``show(done, due)`` as items are settled; end the line before the summary."""
    line = ProgressLine()

    def show(done: int, due: int) -> None:
        line.update(done, due, f"write-back: {done}/{due} done", force=done == due and done > 0)
    return show, line
