"""A stop asked for (SIGTERM, Ctrl-C in a worker): long jobs look here between units of work.

A sync checks between pages, a drain between write-back items, the scheduler between jobs: each
commits what it finished, releases its leases and returns, so that the next run resumes from there.
"""

from __future__ import annotations

import threading

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
