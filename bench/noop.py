"""A no-op build of 10,000 assets: the cost of finding out that nothing needs doing.

The project is built once (offline, placeholders rendered plain) through the Python API; then
`python -m starbuild build --offline` runs as a subprocess next to `python -c pass`, pair by
pair, and the difference is the work a no-op build does beyond starting the interpreter
(target <= 0.5 s). The same no-op build runs in-process against an Emulator whose request
counters must stay at zero.

    python bench/noop.py [--quick] [--assets N] [--runs N] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 0.5

CONFIG = """\
version: 1
provider:
  concurrency: 64
images:
  "cells/{{ a }}-{{ b }}":
    matrix:
      a: %s
      b: %s
    prompt: "Icon {{ a }} of set {{ b }}, flat vector"
    size: "1:1"
    quality: low
"""


def write_project(root: Path, count: int) -> None:
    side = 100 if count >= 10_000 else max(1, int(count ** 0.5))
    rows = -(-count // side)
    (root / "starbuild.yaml").write_text(CONFIG % (list(range(rows)), list(range(side))))


def first_build(root: Path):
    """Build everything once, offline, with plain placeholders."""
    from starbuild.engine.build import OFFLINE_BASE_URL, BuildOptions, build
    from starbuild.emulator import Emulator, EmulatorConfig
    from starbuild.config.resolve import load_and_resolve

    project, specs = load_and_resolve(root / "starbuild.yaml")
    emulator = Emulator(EmulatorConfig(render="plain", public_url=OFFLINE_BASE_URL))
    options = BuildOptions(offline=True, specs=specs, poll_base=0.01, poll_cap=0.05, concurrency=256)  # fewer waiters: a faster setup
    report = build(project, options, emulator=emulator)
    if int(report.exit_code) != 0:
        raise SystemExit(f"the first build failed: {[r.error for r in report.results if r.error][:3]}")
    return report


def in_process_noop(root: Path) -> tuple[dict, int, int, float]:
    """A no-op build in-process against an Emulator: (its counters, client requests, version, seconds)."""
    from starbuild.engine.build import OFFLINE_BASE_URL, BuildOptions, build
    from starbuild.emulator import Emulator, EmulatorConfig
    from starbuild.config.resolve import load_and_resolve

    emulator = Emulator(EmulatorConfig(render="plain", public_url=OFFLINE_BASE_URL))
    start = time.perf_counter()
    project, specs = load_and_resolve(root / "starbuild.yaml")
    report = build(project, BuildOptions(offline=True, specs=specs), emulator=emulator)
    seconds = time.perf_counter() - start
    return dict(emulator.counters), report.requests, report.version, seconds


def run_seconds(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed


def profile(root: Path, cache: Path) -> None:
    """cProfile of the no-op CLI build, top functions by cumulative time."""
    out = root.parent / "noop.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "starbuild", "-C", str(root), "build", "--offline"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=_env(cache))
    import pstats

    stats = pstats.Stats(str(out))
    print("profile of the no-op CLI build (cProfile; times are inflated by the profiler):")
    stats.sort_stats("cumulative").print_stats(r"starbuild|asyncio/runners|reprlib|diskcache/core.py.*\(get\)", 25)
    stats.sort_stats("tottime").print_stats(12)


def _env(cache: Path) -> dict:
    return {**os.environ, "STARBUILD_CACHE_DIR": str(cache)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing runs")
    parser.add_argument("--assets", type=int, default=None, help="default 10,000 (2,000 with --quick)")
    parser.add_argument("--runs", type=int, default=None, help="timing pairs (default 5, 3 with --quick)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the no-op build")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 5)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        root.mkdir()
        cache = Path(tmp) / "cache"
        os.environ["STARBUILD_CACHE_DIR"] = str(cache)
        assets = args.assets or (2_000 if args.quick else 10_000)
        write_project(root, assets)
        start = time.perf_counter()
        report = first_build(root)
        from starbuild.engine.outcome import Outcome

        built = report.count(Outcome.BUILT)
        print(f"setup: first build of {built} assets (offline, plain) in {time.perf_counter() - start:.1f} s")

        counters, requests, version, seconds = in_process_noop(root)
        calls = sum(v for k, v in counters.items() if not k.startswith("status_"))
        print(f"noop in-process: {seconds:.3f} s, emulator requests {calls}, client requests {requests}, "
              f"new version {version}; target 0 requests: {'met' if calls == 0 and requests == 0 and version is None else 'MISSED'}")

        cmd = [sys.executable, "-m", "starbuild", "-C", str(root), "build", "--offline"]
        bare_cmd = [sys.executable, "-c", "pass"]
        run_seconds(cmd, _env(cache))  # warm the page cache
        extras, noops, bares = [], [], []
        for _ in range(runs):
            bare = run_seconds(bare_cmd)
            noop = run_seconds(cmd, _env(cache))
            bares.append(bare)
            noops.append(noop)
            extras.append(noop - bare)
        extra = statistics.median(extras)
        print(f"noop: starbuild build --offline on {assets} assets {statistics.median(noops):.3f} s vs "
              f"python -c pass {statistics.median(bares):.3f} s: {extra:.3f} s of work beyond interpreter start, "
              f"median of {runs} (min {min(extras):.3f}, max {max(extras):.3f}); "
              f"target <= {TARGET_SECONDS:.1f} s: {'met' if extra <= TARGET_SECONDS else 'MISSED'}")
        if args.profile or extra > TARGET_SECONDS:
            profile(root, cache)


if __name__ == "__main__":
    main()
