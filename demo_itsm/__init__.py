"""A small stand-in for ServiceNow's Table API, for the demo, the tests and the benchmark.

Not a product feature: it answers the Table API the way GapBridge's ServiceNow connector
uses it, over its own SQLite file, seeded deterministically by ``demo_itsm.seed``.
"""

from __future__ import annotations

from .server import DemoITSM

__all__ = ["DemoITSM"]
