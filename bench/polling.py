"""Polling at realistic task times: C = N = 40 tasks of 2.5 s, 12 s and 60 s, with and without callbacks.

The emulator also notes when each result is downloaded after its task ended: how late the
schedule looked. Each case builds 40 images at concurrency 40 as a `python -m starbuild` subprocess against the
emulator over HTTP. Figures per case: wall time against the ideal ceil(N/C) * L (target <= 1.10x),
and HTTP requests per image counted by the emulator (target <= 3.5 without callbacks, 2 with).
The 2.5 s case runs twice without callbacks: with estimated_time rounded up (the emulator's
default) and rounded down (a service that under-promises).

    python bench/polling.py [--quick] [--cases 2.5,12,60] [--runs R]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (cli_env, matrix_project, median, requests_of, run_measured, spread,  # noqa: E402
                     starbuild_cmd, verdict)

N = C = 40
TARGET_RATIO = 1.10
TARGET_POLLING = 3.5
TARGET_CALLBACKS = 2.0
CALLBACK = "  callback:\n    listen: 127.0.0.1:0\n"


def timed_emulator(config):
    """The emulator, noting how long after its task's end each result download arrives."""
    from starbuild.emulator import Emulator

    class Timed(Emulator):
        late: list[float] = []

        async def __call__(self, scope, receive, send):
            path = scope.get("path", "")
            if scope["type"] == "http" and path.startswith("/cdn/") and not path.startswith("/cdn/files/"):
                task = self.tasks.get(path.rsplit("/", 1)[-1].rsplit("-", 1)[0])
                if task is not None:
                    self.late.append(self.clock() - task.done_at)
            await super().__call__(scope, receive, send)

    em = Timed(config)
    em.late = []
    return em


def one_run(latency: float, rounding: str, callbacks: bool) -> tuple[float, float, dict, float, list[float]]:
    from starbuild.emulator import EmulatorConfig, serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        matrix_project(root, N, concurrency=C, extra=CALLBACK if callbacks else "")
        emulator = timed_emulator(EmulatorConfig(latency=latency, render="plain", estimate_round=rounding,
                                                 allow_loopback_callbacks=callbacks))
        with serve_in_thread(emulator) as url:
            run = run_measured(starbuild_cmd(root, "build", "--json"), env=cli_env(url, Path(tmp) / "cache"))
        counters = dict(emulator.counters)
    if run.returncode != 0 or len(emulator.ledger) != N:
        raise SystemExit(f"the build failed ({run.returncode}, {len(emulator.ledger)} submissions): "
                         f"{run.stderr[-2000:]}")
    return run.wall, requests_of(counters) / N, counters, run.json()["summary"]["elapsed"], emulator.late


def case(latency: float, rounding: str, callbacks: bool, runs: int) -> None:
    ideal = math.ceil(N / C) * latency
    results = [one_run(latency, rounding, callbacks) for _ in range(runs)]
    ratios = [r[0] / ideal for r in results]
    inner = [r[3] / ideal for r in results]
    per_image = [r[1] for r in results]
    last = results[-1][2]
    late = sorted(x for r in results for x in r[4])
    mix = ", ".join(f"{k} {last.get(k, 0)}" for k in ("submit", "task", "result"))
    target = TARGET_CALLBACKS if callbacks else TARGET_POLLING
    label = "callbacks" if callbacks else f"polling, estimate rounded {rounding}"
    ratio, req = median(ratios), median(per_image)
    print(f"polling: {N} tasks of {latency:g} s at C={C} ({label}): wall/ideal {ratio:.3f}x median of {runs} "
          f"({spread(ratios, '{:.3f}')}), target <= {TARGET_RATIO:.2f}x: {verdict(ratio <= TARGET_RATIO)} "
          f"(the build's own elapsed {median(inner):.3f}x: {verdict(median(inner) <= TARGET_RATIO)}); "
          f"{req:.2f} requests per image ({mix}), target <= {target:g}: {verdict(req <= target)}; "
          f"downloads {median(late) * 1000:.0f} ms after the task's end (median; 90th percentile "
          f"{late[int(0.9 * (len(late) - 1))] * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per case, 2.5 s and 12 s only")
    parser.add_argument("--cases", default=None, help="task times, comma-separated (default 2.5,12,60)")
    parser.add_argument("--runs", type=int, default=None, help="runs per case (default 3; 1 for 60 s)")
    args = parser.parse_args()
    cases = [float(c) for c in (args.cases or ("2.5,12" if args.quick else "2.5,12,60")).split(",")]
    for latency in cases:
        runs = args.runs or (1 if args.quick or latency >= 30 else 3)
        roundings = ("up", "down") if latency == 2.5 else ("up",)
        for rounding in roundings:
            case(latency, rounding, False, runs)
        case(latency, "up", True, runs)


if __name__ == "__main__":
    main()
