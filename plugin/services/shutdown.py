"""A stop asked for (SIGTERM, Ctrl-C in a worker): long jobs look here between units of work.

A sync checks between pages, a drain between write-back items, the scheduler between jobs: each
commits what it finished, releases its leases and returns, so that the next run resumes from there.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

_stop = threading.Event()


def request() -> None:
    """Ask every job of this process to stop at its next safe point."""
    _stop.set()


def requested() -> bool:
    return _stop.is_set()


def wait(seconds: float) -> bool:
    """Sleep up to ``seconds``; True at once if a stop is asked for meanwhile."""
    return _stop.wait(seconds)


def reset() -> None:
    """For tests and for a process that starts over (a fresh worker after a stop)."""
    _stop.clear()


# a stop taking longer than this is cut short: a container platform kills at 30 s (Kubernetes, docker stop)
GRACE_SECONDS = 25.0


@contextmanager
def on_signals(say: Callable[[str], None], stopping: str, *, grace: float = GRACE_SECONDS) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT ask for a stop (``request``) instead of killing the process.

    The first signal says ``stopping`` (what finishes, where the next run resumes); a second one, or the
    stop taking longer than ``grace`` seconds, exits at once, as a kill would (the next run resumes all the
    same: each page and its bookmark commit together). Outside the main thread signals cannot be caught,
    and the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    timers: list[threading.Timer] = []

    def exit_now(status: int, why: str) -> None:
        say(why)
        os._exit(status)

    def handle(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if requested():
            exit_now(128 + signum, f"{name} again: exiting at once (the next run resumes from the last bookmark)")
        request()
        say(f"{name}: {stopping} (a second signal exits at once)")
        timer = threading.Timer(grace, exit_now, (1, f"the stop took longer than {grace:g} s: exiting at once "
                                                       "(the next run resumes from the last bookmark)"))
        timer.daemon = True
        timer.start()
        timers.append(timer)

    reset()
    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for timer in timers:  # stopped in time
            timer.cancel()
        for s, handler in previous.items():
            signal.signal(s, handler)
        reset()
