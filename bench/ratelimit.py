"""Politeness under a server-side cap: the emulator allows 8 unfinished tasks, the client asks for 32.

Figures, medians of several runs:
- achieved throughput (images per second of the build) against the cap's, 8 tasks per latency
  (target >= 0.9 of it);
- 429 answers as a share of submissions (target <= 10%).

    python bench/ratelimit.py [--quick] [--tasks N] [--cap K] [--concurrency C] [--latency L] [--runs R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cli_env, matrix_project, median, run_measured, spread, starbuild_cmd, verdict  # noqa: E402

TARGET_SHARE = 0.9
TARGET_429 = 0.10


def one_run(tasks: int, cap: int, concurrency: int, latency: float) -> dict:
    from starbuild.emulator import Emulator, EmulatorConfig, Faults, serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        matrix_project(root, tasks, concurrency=concurrency)
        emulator = Emulator(EmulatorConfig(latency=latency, render="plain", faults=Faults(max_unfinished=cap)))
        with serve_in_thread(emulator) as url:
            run = run_measured(starbuild_cmd(root, "build", "--json"), env=cli_env(url, Path(tmp) / "cache"))
        counters = dict(emulator.counters)
    if run.returncode != 0:
        raise SystemExit(f"the build failed ({run.returncode}): {run.stderr[-3000:]}")
    summary = run.json()["summary"]
    if summary["built"] != tasks or len(emulator.ledger) != tasks:
        raise SystemExit(f"built {summary['built']} of {tasks}, {len(emulator.ledger)} submissions")
    return {"elapsed": summary["elapsed"], "wall": run.wall, "submits": counters.get("submit", 0),
            "429": counters.get("status_429", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run instead of three")
    parser.add_argument("--tasks", type=int, default=96)
    parser.add_argument("--cap", type=int, default=8, help="the emulator's max_unfinished")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    cap_rate = args.cap / args.latency

    results = [one_run(args.tasks, args.cap, args.concurrency, args.latency) for _ in range(runs)]
    shares = [args.tasks / r["elapsed"] / cap_rate for r in results]
    wall_shares = [args.tasks / r["wall"] / cap_rate for r in results]
    rejected = [r["429"] / r["submits"] for r in results]
    share, reject = median(shares), median(rejected)
    print(f"ratelimit: {args.tasks} tasks of {args.latency:g} s, cap {args.cap} unfinished, client concurrency "
          f"{args.concurrency}: {args.tasks / median([r['elapsed'] for r in results]):.2f} images/s = {share:.3f} "
          f"of the cap's {cap_rate:g}/s median of {runs} ({spread(shares, '{:.3f}')}; {median(wall_shares):.3f} "
          f"counting interpreter start); target >= {TARGET_SHARE}: {verdict(share >= TARGET_SHARE)}")
    last = results[-1]
    print(f"ratelimit: 429 answers {reject:.1%} of submissions median of {runs} ({last['429']} of {last['submits']} "
          f"in the last run); target <= {TARGET_429:.0%}: {verdict(reject <= TARGET_429)}")


if __name__ == "__main__":
    main()
