"""The engine against the auditor-labelled cases (tests/auditor_cases, rules in docs/findings.md).

Recall must be 1.0 (every gap an auditor must raise is raised) and precision at least 0.95
(flags fall inside must or may). ``python -m tests.auditor_cases`` prints the same disagreements.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.auditor_cases import REPO, Case, Disagreement, RulesetCache, all_cases, describe, ruleset_for, score

ALL_OVERLAYS = ("gdpr", "nis2", "dora")


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return all_cases()


@pytest.fixture(scope="module")
def cache() -> RulesetCache:
    return {}


@pytest.fixture(scope="module")
def scored(cases: list[Case], cache: RulesetCache) -> tuple[float, float, list[Disagreement]]:
    return score(cases, cache)


def test_enough_cases_with_unique_ids(cases: list[Case]) -> None:
    assert len(cases) >= 50
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_recall_and_precision(scored: tuple[float, float, list[Disagreement]]) -> None:
    recall, precision, disagreements = scored
    report = "\n\n".join(describe(d) for d in disagreements)
    assert recall == 1.0 and precision >= 0.95, f"recall {recall:.3f}, precision {precision:.3f}\n\n{report}"


def test_every_check_fails_and_passes_somewhere(cases: list[Case], cache: RulesetCache) -> None:
    """Each shipped check is shown failing on some case and passing on another where it applies, and every clock pending."""
    from plugin.rules.across import evaluate_across
    from plugin.rules.loader import load_ruleset

    shipped = load_ruleset(REPO / "mappings", overlays=ALL_OVERLAYS)
    seen: dict[str, set[str]] = defaultdict(set)
    for case in cases:
        ruleset = ruleset_for(case.overlays, cache)
        for check in ruleset.incident_checks:
            seen[check.id].add(check.evaluate(case.incident, case.now))
        for check in ruleset.across_checks:
            seen[check.id].add(evaluate_across(check, [case.incident, *case.context], case.now)[0])
    every = [c.id for c in shipped.checks]
    never_fail = [cid for cid in every if "fail" not in seen[cid]]
    never_pass = [cid for cid in every if "pass" not in seen[cid]]
    never_pending = [c.id for c in shipped.checks if c.clock is not None and "pending" not in seen[c.id]]
    assert not never_fail and not never_pass and not never_pending, (
        f"no case fails: {never_fail}; no case passes: {never_pass}; no clock pending: {never_pending}")
