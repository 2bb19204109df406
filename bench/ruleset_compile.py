"""Benchmark: compiling the shipped ruleset (all overlays), YAML composed by libyaml vs pure Python.

    python bench/ruleset_compile.py --repeat 10

The last line printed is ``c_loader_s=<n> python_loader_s=<n> ratio=<python/c> checks=<n>``:
the median time of one full load (catalogues, sub-processes, checks, overlays) with the
composer GapBridge uses (libyaml's ``CSafeLoader``, where PyYAML has it) and with the
pure-Python ``SafeLoader`` it replaced. Both keep line marks for error messages.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed_load(repeat: int) -> tuple[float, int]:
    from plugin.rules.loader import load_ruleset

    times, checks = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        ruleset = load_ruleset(ROOT / "mappings", overlays=["gdpr", "nis2", "dora"])
        times.append(time.perf_counter() - start)
        checks = len(ruleset.checks)
    return statistics.median(times), checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    from plugin.rules import yamlsource

    if not yaml.__with_libyaml__:
        print("PyYAML was built without libyaml: GapBridge falls back to the pure-Python composer")
    c_time, checks = timed_load(args.repeat)
    yamlsource._COMPOSER = yaml.SafeLoader  # the composer before the change, same constructor
    py_time, _ = timed_load(args.repeat)
    print(f"c_loader_s={c_time:.4f} python_loader_s={py_time:.4f} ratio={py_time / c_time:.1f} checks={checks}")


if __name__ == "__main__":
    main()
