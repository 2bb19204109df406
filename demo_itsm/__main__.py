"""python -m demo_itsm --db PATH [--tool servicenow|jira] [--size N] [--seed 42] [--host 127.0.0.1] [--port 8080] [--delay 0]
[--latency-ms 0]"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .jira import API_TOKEN, EMAIL, DemoJira
from .server import DemoITSM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo_itsm", description="A demo ServiceNow Table API over SQLite.")
    parser.add_argument("--db", required=True, help="SQLite file; seeded when it holds no incidents")
    parser.add_argument("--tool", choices=["servicenow", "jira"], default="servicenow",
                        help="the API served: ServiceNow's Table API, or Jira Cloud's REST API (same incident stories)")
    parser.add_argument("--size", type=int, default=None, help="incidents to seed into an empty database")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each API answer")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="milliseconds added to every API answer, as a remote instance would take (adds to --delay)")
    args = parser.parse_args(argv)
    if args.delay < 0 or args.latency_ms < 0:
        parser.error("--delay and --latency-ms cannot be negative")
    stop = threading.Event()
    # SIGTERM (terminate()) ends like Ctrl-C: the server and the database close cleanly
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = (DemoJira(args.db, size=args.size, seed=args.seed, host=args.host, port=args.port) if args.tool == "jira"
              else DemoITSM(args.db, size=args.size, seed=args.seed, host=args.host, port=args.port))
    with server as sn:
        sn.delay = args.delay + args.latency_ms / 1000
        login = f"{EMAIL} with the API token {API_TOKEN}" if args.tool == "jira" else "user admin/admin"
        print(f"demo ITSM serving {sn.count()} incidents at {sn.url} ({login})", file=sys.stderr, flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
