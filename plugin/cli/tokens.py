"""``gapbridge tokens``: API tokens."""

from __future__ import annotations
