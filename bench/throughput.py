"""Throughput: 500 tasks of 1 s each at concurrency 50, emulator over HTTP, the build in a subprocess.

Figures, medians of several runs:
- wall time of `starbuild build` against the ideal ceil(N/C) * L (target <= 1.10x);
- HTTP requests per image, counted by the emulator (target <= 4);
- client CPU per image: the build subprocess's user+system time / N (target <= 2 ms), measured
  with wait4 so that the emulator's CPU (in this process) is not counted.

    python bench/throughput.py [--quick] [--tasks N] [--concurrency C] [--latency L] [--runs R]
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

TARGET_RATIO = 1.10
TARGET_REQUESTS = 4.0
TARGET_CPU_MS = 2.0


def one_run(tasks: int, concurrency: int, latency: float) -> dict:
    from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        matrix_project(root, tasks, concurrency=concurrency)
        emulator = Emulator(EmulatorConfig(latency=latency, render="plain"))
        with serve_in_thread(emulator) as url:
            run = run_measured(starbuild_cmd(root, "build", "--json"), env=cli_env(url, Path(tmp) / "cache"))
        counters = dict(emulator.counters)
    if run.returncode != 0:
        raise SystemExit(f"the build failed ({run.returncode}): {run.stderr[-3000:]}")
    report = run.json()
    built = report["summary"]["built"]
    if built != tasks or len(emulator.ledger) != tasks:
        raise SystemExit(f"built {built} of {tasks}, {len(emulator.ledger)} submissions")
    return {"wall": run.wall, "elapsed": report["summary"]["elapsed"], "requests": requests_of(counters),
            "cpu": run.cpu, "counters": counters}


def baseline_cpu() -> float:
    """CPU of starting the CLI and loading a small project: the part of the CPU that is not per image."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        matrix_project(root, 1, concurrency=1)
        run = run_measured(starbuild_cmd(root, "plan"), env=cli_env(None, Path(tmp) / "cache"))
        return run.cpu


def placeholder_cpu(runs: int = 200) -> float:
    """CPU seconds of one image's placeholder (decode, average, WebP), measured in this process on the
    emulator's plain 1024x1024 image: the part of each image's cost that is the image's, not the
    client's (SPEC.md §8 asks a placeholder of every published image)."""
    import io
    import time

    from PIL import Image

    from starbuild.emulator.render import render_placeholder
    from starbuild.post.encode import placeholder_url

    data = render_placeholder("bench image 1", "gpt-image-2", 1024, 1024, mode="plain")
    placeholder_url(Image.open(io.BytesIO(data)))  # plugins imported, as in a build
    start = time.process_time()
    for _ in range(runs):
        with Image.open(io.BytesIO(data)) as img:
            placeholder_url(img)
    return (time.process_time() - start) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run instead of three")
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    n, c, lat = args.tasks, args.concurrency, args.latency
    ideal = math.ceil(n / c) * lat

    results = [one_run(n, c, lat) for _ in range(runs)]
    walls = [r["wall"] for r in results]
    ratios = [w / ideal for w in walls]
    inner = [r["elapsed"] / ideal for r in results]
    per_image = [r["requests"] / n for r in results]
    cpu_ms = [r["cpu"] / n * 1000 for r in results]
    start_cpu = baseline_cpu()
    cpu_ms_net = [(r["cpu"] - start_cpu) / n * 1000 for r in results]
    ph_ms = placeholder_cpu() * 1000
    last = results[-1]["counters"]
    mix = ", ".join(f"{k} {last[k]}" for k in ("submit", "task", "result") if k in last)

    ratio, req, cpu = median(ratios), median(per_image), median(cpu_ms)
    print(f"throughput: {n} tasks of {lat:g} s at concurrency {c}: wall {median(walls):.2f} s vs ideal {ideal:.1f} s: "
          f"ratio {ratio:.3f}x median of {runs} ({spread(ratios, '{:.3f}')}); build's own elapsed "
          f"{median(inner):.3f}x; target <= {TARGET_RATIO:.2f}x: {verdict(ratio <= TARGET_RATIO)}")
    print(f"throughput: {req:.2f} HTTP requests per image ({mix} in the last run); "
          f"target <= {TARGET_REQUESTS:g}: {verdict(req <= TARGET_REQUESTS)}")
    print(f"throughput: client CPU {cpu:.2f} ms per image ({median([r['cpu'] for r in results]):.2f} s for {n}; "
          f"{median(cpu_ms_net):.2f} ms per image without the {start_cpu:.2f} s of start-up and config loading); "
          f"target <= {TARGET_CPU_MS:g} ms: {verdict(cpu <= TARGET_CPU_MS)}")
    print(f"throughput: of which each image's placeholder (decode, average, WebP; measured apart) {ph_ms:.2f} ms; "
          f"the rest, beyond start-up: {median(cpu_ms_net) - ph_ms:.2f} ms per image")


if __name__ == "__main__":
    main()
