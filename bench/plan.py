"""Planning speed and start-up cost.

Prints: the time to plan 10,000 matrix cells (target <= 0.3 s of plan work), and the time of
`starbuild --help` next to `python -c pass` (target <= 1.5x). Medians of several runs; the ratio
is taken pair by pair in the same run, because these machines are noisy.

    python bench/plan.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """\
version: 1
vars:
  style: flat vector, soft pastel palette
images:
  "cells/{{ a }}-{{ b }}":
    matrix:
      a: %s
      b: %s
    prompt: "Icon {{ a }} of set {{ b }}, {{ style }}"
    size: "1:1"
    quality: low
"""


def plan_seconds(root: Path) -> tuple[float, int]:
    from starbuild.engine.build import plan_project
    from starbuild.config.resolve import load_and_resolve

    start = time.perf_counter()
    project, specs = load_and_resolve(root / "starbuild.yaml")
    plan = plan_project(project, specs=specs)
    return time.perf_counter() - start, len(plan.assets)


def run_seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    runs = 7
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "starbuild.yaml").write_text(CONFIG % (list(range(100)), list(range(100))))
        plan_seconds(root)  # warm-up: imports and compiled templates
        times = []
        for _ in range(runs):
            t, count = plan_seconds(root)
            times.append(t)
    plan = statistics.median(times)
    print(f"plan: {count} cells in {plan:.3f} s median of {runs} (min {min(times):.3f}, max {max(times):.3f}); "
          f"target <= 0.300 s: {'met' if plan <= 0.3 else 'MISSED'}")

    ratios, helps, bares = [], [], []
    for _ in range(runs):
        bare = run_seconds([sys.executable, "-c", "pass"])
        helped = run_seconds([sys.executable, "-m", "starbuild", "--help"])
        bares.append(bare)
        helps.append(helped)
        ratios.append(helped / bare)
    ratio = statistics.median(ratios)
    print(f"help: starbuild --help {statistics.median(helps) * 1000:.0f} ms vs python -c pass "
          f"{statistics.median(bares) * 1000:.0f} ms: ratio {ratio:.2f}x median of {runs}; "
          f"target <= 1.5x: {'met' if ratio <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
