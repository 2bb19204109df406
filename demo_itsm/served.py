"""What the demo tools share: a SQLite store, a WSGI server on a thread, faults injected on demand and their counts."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from . import seed as sd


class QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:  # one line per request drowns test output
        pass


class ServedTool:
    """A demo ITSM tool served on ``host:port`` (port 0: any free one) from its own thread.

    A subclass opens its store with ``_open``, then sets ``app``; ``with Tool(...) as tool`` serves it.
    """

    thread_name = "demo-tool"
    app: Flask

    def _open(self, db_path: str | Path, host: str, port: int, now: datetime | None) -> None:
        self.host, self.port = host, port
        self.url: str | None = None
        self.delay = 0.0  # seconds added to every answer
        self._start_now = sd.utc_naive(now) if now is not None else None
        self._start_mono = time.monotonic()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(db_path), check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        # a write per request: without WAL each commit waits for the disk twice, and bounds the demo at ~40 writes a second
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._faults: list[dict[str, Any]] = []
        self._stats = self._initial_stats()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _initial_stats(self) -> dict[str, int]:
        return {"failed_injected": 0}

    def _naive_now(self) -> datetime:
        """Current UTC time (naive); with ``now`` given at construction, ``now`` plus the time since."""
        if self._start_now is not None:
            return self._start_now + timedelta(seconds=time.monotonic() - self._start_mono)
        return datetime.now(UTC).replace(tzinfo=None)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is None:
            self._server = make_server(self.host, self.port, self.app, threaded=True, request_handler=QuietHandler)
            self.url = f"http://{self.host}:{self._server.server_port}"
            server = self._server  # a short poll interval makes stop() quick
            self._thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), name=self.thread_name,
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = self._thread = None

    def close(self) -> None:
        self.stop()
        self._db.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- faults and counts -------------------------------------------------------------------

    def _add_fault(self, count: int, status: int, **fault: Any) -> None:
        """Answer the next ``count`` requests that match ``methods`` and ``path_prefix`` with ``status``; 0 clears every fault."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0 or not 100 <= int(status) <= 599:
            raise ValueError("count must be a whole number >= 0 and status an HTTP status")
        methods = fault.pop("methods", None)
        with self._lock:
            if count == 0:
                self._faults.clear()
                return
            self._faults.append({"count": count, "status": int(status),
                                 "methods": {m.upper() for m in methods} if methods else None, **fault})

    def _fault_for(self, method: str, path: str) -> dict[str, Any] | None:
        with self._lock:
            for fault in self._faults:
                if (fault["methods"] is None or method in fault["methods"]) and path.startswith(fault["path_prefix"] or ""):
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self._faults.remove(fault)
                    self._stats["failed_injected"] += 1
                    return fault
        return None

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = self._initial_stats()
