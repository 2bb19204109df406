"""``gapbridge export``: gaps, coverage and populations as OSCAL, CSV or JSON."""

from __future__ import annotations
