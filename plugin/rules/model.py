"""The engine's model: outcomes, kinds, severities, a compiled Check and the Ruleset.

A check's outcome on one record is pass, fail, pending (a clock runs and has not fallen
due) or not applicable. Its kind says what a failure is: a ``gap``, a nonconformity an
auditor would raise, or an ``improvement``, an opportunity for improvement that never
counts as an open gap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.canonical import FIELD_VALUES, FIELDS, SEVERITIES

from .catalogue import Catalogue
from .conditions import ALWAYS, Predicate, necessary_values
from .subprocesses import Relation, SubProcess
from .yamlsource import Location

if TYPE_CHECKING:
    from .clocks import Clock

PASS, FAIL, PENDING, NOT_APPLICABLE = "pass", "fail", "pending", "not_applicable"
STATUSES = (PASS, FAIL, PENDING, NOT_APPLICABLE)
GAP, IMPROVEMENT = "gap", "improvement"
KINDS = (GAP, IMPROVEMENT)
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}

# (status, what is missing, due time): the outcome of one check that applies to one record
Outcome = tuple[str, list[str], datetime | None]
_PASSED: Outcome = (PASS, [], None)  # shared: callers never change an outcome's details
# (status, what is missing): the outcome of a check across incidents on one of them
AcrossOutcome = tuple[str, list[str]]


class AcrossRule:
    """A rule over many incidents. So that the store can stream them in bounded batches,
    a rule says what a batch must hold together (``partition_by``) and which other
    incidents it looks up (``references``); ``evaluate`` is then exact on each batch."""

    type: str
    fields: frozenset[str]  # incident fields the rule itself reads
    #: a batch holds every incident sharing these values (empty: any batch will do)
    partition_by: tuple[str, ...] = ()

    def evaluate(self, check: Check, incidents: Sequence[Mapping[str, Any]], now: datetime,
                 known: Mapping[str, Mapping[str, Any]] | None = None) -> list[AcrossOutcome]:
        """(status, details) aligned with ``incidents``; ``known`` holds the referenced incidents by number."""
        raise NotImplementedError

    def references(self, incidents: Sequence[Mapping[str, Any]]) -> set[str]:
        """Numbers of the other incidents that evaluating these needs (see ``known``)."""
        return set()

    def partition_key(self, incident: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The partition ``incident`` belongs to; None when it needs no other incident of its batch."""
        return tuple(incident.get(f) for f in self.partition_by) if self.partition_by else None

    #: fields an incident must have (not empty) for the rule to be anything but not applicable to it, and for it
    #: to count for any other incident except as one of their ``references``
    present_fields: tuple[str, ...] = ()


@dataclass
class Check:
    id: str
    title: str
    subprocess: str
    controls_2022: tuple[str, ...]
    controls_2013: tuple[str, ...]
    relation: str
    kind: str
    severity: str
    rationale: str
    remediation: str
    applies: Predicate
    requires: Predicate  # ALWAYS when a clock (or the across rule) decides alone
    missing: str
    params: dict[str, Any]
    origin: Location
    overlay: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    definition: dict[str, Any] = field(default_factory=dict)  # the effective YAML, for the hash and explain
    rule: AcrossRule | None = None  # set for checks across incidents
    clock: Clock | None = None  # set for time-bound checks
    fields: frozenset[str] = frozenset()  # canonical fields the check reads

    @property
    def across(self) -> bool:
        return self.rule is not None

    def __post_init__(self) -> None:
        # bound once: outcome() runs for every check on every incident of a sync
        self._applies = self.applies.fn
        self._requires = None if self.requires is ALWAYS else self.requires.fn
        self._clock = self.clock.evaluate if self.clock is not None else None

    def outcome(self, incident: Mapping[str, Any], now: datetime) -> Outcome | None:
        """The outcome on one record; None when the check does not apply to it."""
        if not self._applies(incident, now):
            return None
        if self._requires is not None and not self._requires(incident, now):
            return FAIL, self.requires.explain(incident, now), None
        if self._clock is not None:
            found = self._clock(incident, now)
            return None if found[0] == NOT_APPLICABLE else found  # no deadline with a known start
        return _PASSED

    def evaluate(self, incident: Mapping[str, Any], now: datetime) -> str:
        found = self.outcome(incident, now)
        return NOT_APPLICABLE if found is None else found[0]

    def explain(self, incident: Mapping[str, Any], now: datetime) -> list[str]:
        found = self.outcome(incident, now)
        return found[1] if found is not None and found[0] == FAIL else []


@dataclass
class Ruleset:
    root: Path
    catalogue: Catalogue
    subprocesses: dict[str, SubProcess]
    relations: list[Relation]
    checks: list[Check]
    hash: str
    overlays: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.by_id = {c.id: c for c in self.checks}
        self.incident_checks = [c for c in self.checks if not c.across]
        self.across_checks = [c for c in self.checks if c.across]
        self._candidates = _CandidateChecks(self.incident_checks)

    def check(self, check_id: str) -> Check | None:
        return self.by_id.get(check_id)

    def incident_checks_for(self, incident: Mapping[str, Any]) -> list[Check]:
        """The incident checks that may apply to ``incident``, in ruleset order; the others do not apply to it."""
        return self._candidates.of(incident)

    def assess(self, incident: Mapping[str, Any], now: datetime) -> list[tuple[Check, str]]:
        """Per-incident checks only; checks across incidents need the whole set."""
        return [(c, c.evaluate(incident, now)) for c in self.incident_checks]


# flags and fields of a closed vocabulary (FIELD_VALUES: each is its own kind): few distinct values, so the
# candidate lists, one per combination met, stay few
_KEYED_KINDS = frozenset({"bool", *FIELD_VALUES})
_MAX_COMBINATIONS = 4096


def required_values(predicate: Predicate) -> list[tuple[str, frozenset[Any]]]:
    """(field, values) pairs ``predicate`` requires, of flags and closed vocabularies only: fields whose stored values
    compare as the checks compare them (in SQL too), NULL never among the values."""
    return [(f, values) for f, values in necessary_values(predicate) if FIELDS.get(f) in _KEYED_KINDS and None not in values]


class _CandidateChecks:
    """Incident checks by the values of the fields their ``applies_when`` requires, such as record type and flags.

    Most checks apply to few incidents and most ``applies_when`` begin with a record type or a
    flag: evaluating every check on every incident was most of an assessment's time. A check is
    skipped only when one of the values its condition requires (``necessary_values``) rules it
    out, so the outcomes are those of all checks.
    """

    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks
        required = [required_values(c.applies) for c in checks]
        self.fields = tuple(sorted({f for pairs in required for f, _ in pairs}))
        self.required = [[(self.fields.index(f), values) for f, values in pairs] for pairs in required]
        self.by_values: dict[tuple[Any, ...], list[Check]] = {}

    def of(self, incident: Mapping[str, Any]) -> list[Check]:
        if not self.fields:
            return self.checks
        key = tuple([incident.get(f) for f in self.fields])
        try:
            return self.by_values[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value where a flag or a vocabulary word belongs: let every check see it
            return self.checks
        found = [c for c, pairs in zip(self.checks, self.required, strict=True)
                 if all(key[i] in values for i, values in pairs)]
        if len(self.by_values) < _MAX_COMBINATIONS:
            self.by_values[key] = found
        return found
