"""``python -m tests.auditor_cases [--case ID]``: where the engine disagrees with the auditor labels.

A report, not a gate: the exit status is always 0 (tests/test_auditor_cases.py is the gate).
"""

from __future__ import annotations

import argparse
import sys

from tests.auditor_cases import RulesetCache, all_cases, describe, failing_checks, score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.auditor_cases", description=__doc__)
    parser.add_argument("--case", metavar="ID", help="show this case's labels and failing checks, agreeing or not")
    args = parser.parse_args(argv)
    cases = all_cases()
    cache: RulesetCache = {}

    if args.case:
        match = [c for c in cases if c.id == args.case]
        if not match:
            print(f"no case {args.case}; ids run {cases[0].id} .. {cases[-1].id}")
            return 0
        case = match[0]
        print(f"{case.id}  {case.title}")
        print(f"  overlays: {', '.join(case.overlays) or '-'}   now: {case.now.isoformat()}   context: {len(case.context)}")
        print(f"  must: {', '.join(sorted(case.must)) or '-'}   may: {', '.join(sorted(case.may)) or '-'}")
        failing = failing_checks(case, cache)
        for check_id, controls in failing:
            print(f"  fails: {check_id}  -> {', '.join(controls)}")
        if not failing:
            print("  fails: nothing")
        print(f"  why: {case.why}")
        return 0

    recall, precision, disagreements = score(cases, cache)
    for d in disagreements:
        print(describe(d))
        print()
    print(f"{len(cases)} cases, {len(disagreements)} disagreeing; recall {recall:.3f}, precision {precision:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
