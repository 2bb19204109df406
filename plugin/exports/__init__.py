"""Exports of an assessment: OSCAL assessment plan and results, CSV and JSON, all built from the plain data in ``assessment``."""
