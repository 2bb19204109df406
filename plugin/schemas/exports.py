"""What the exports take: the dataset's filters and the format."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from ..queries.coverage import OUTCOMES
from .common import ScopeArgs, text
from .findings import GapFilterArgs

FORMATS = ("csv", "json")
OSCAL_DOCUMENTS = ("assessment-results", "assessment-plan")


class GapExportArgs(GapFilterArgs):
    format = fields.String(load_default="csv", validate=validate.OneOf(FORMATS))


class CoverageExportArgs(ScopeArgs):
    format = fields.String(load_default="csv", validate=validate.OneOf(FORMATS))
    group = fields.String(load_default="control", validate=validate.OneOf(["control", "subprocess"]))


class PopulationExportArgs(ScopeArgs):
    format = fields.String(load_default="csv", validate=validate.OneOf(FORMATS))
    control = text(max=32, metadata={"description": "a control of either edition; or subprocess"})
    subprocess = text(max=32)
    outcome = fields.String(validate=validate.OneOf(OUTCOMES))

    @validates_schema
    def _one_group(self, data: dict[str, Any], **_: Any) -> None:
        if ("control" in data) == ("subprocess" in data):
            raise ValidationError("give control or subprocess (one of them)", "control")


class OscalArgs(ScopeArgs):
    @validates_schema
    def _needs_period(self, data: dict[str, Any], **_: Any) -> None:
        if "period" not in data and not ("from_" in data and "to" in data):
            raise ValidationError("an assessment covers a period: give period (e.g. 2026-Q3) or from and to", "period")
