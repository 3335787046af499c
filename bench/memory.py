"""Peak memory of a build of 200 large images against one of 20 (target: within 30 MB).

Images are 4K 16:9 (3840x2160). The emulator is served over HTTP from this process; each build
runs in a subprocess whose own peak RSS is read with wait4 (ru_maxrss of that child only), so
the emulator's memory is not counted. Downloads are streamed to disk, verified without decoding
the pixels and stored by hash, so the peak should not grow with the number of images.

    python bench/memory.py [--quick] [--small N] [--large N] [--render plain|full] [--runs R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cli_env, matrix_project, median, run_measured, spread, starbuild_cmd, verdict  # noqa: E402

TARGET_MB = 30.0


def one_build(count: int, render: str, concurrency: int) -> tuple[float, float, int]:
    """(peak RSS MiB, wall seconds, bytes downloaded) of one build of ``count`` 4K images."""
    from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        matrix_project(root, count, concurrency=concurrency, size="16:9", resolution="4K", quality="low")
        emulator = Emulator(EmulatorConfig(latency=0.2, render=render))
        with serve_in_thread(emulator) as url:
            run = run_measured(starbuild_cmd(root, "build", "--json"), env=cli_env(url, Path(tmp) / "cache"))
        if run.returncode != 0:
            raise SystemExit(f"the build of {count} failed ({run.returncode}): {run.stderr[-3000:]}")
        files = [f for a in run.json()["assets"] for f in a["files"]]
        if len(files) != count or any((f["width"], f["height"]) != (3840, 2160) for f in files):
            raise SystemExit(f"expected {count} files of 3840x2160, got {len(files)}")
        return run.maxrss_mb, run.wall, sum(f["bytes"] for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one pair of builds instead of three")
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--large", type=int, default=200)
    parser.add_argument("--render", choices=["plain", "full"], default="plain",
                        help="emulator placeholders: plain (small files) or full (MB-sized files, slow)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)

    smalls, larges, diffs = [], [], []
    for _ in range(runs):  # pair by pair, so that a noisy moment hits both sides alike
        small, _, small_bytes = one_build(args.small, args.render, args.concurrency)
        large, wall, large_bytes = one_build(args.large, args.render, args.concurrency)
        smalls.append(small)
        larges.append(large)
        diffs.append(large - small)
    diff = median(diffs)
    print(f"memory: peak RSS of a build of {args.large} 3840x2160 images ({args.render}, "
          f"{large_bytes / 2**20:.1f} MiB downloaded) {median(larges):.1f} MiB vs {args.small} images "
          f"{median(smalls):.1f} MiB: +{diff:.1f} MiB median of {runs} ({spread(diffs, '{:.1f}')}); "
          f"target <= {TARGET_MB:g} MiB: {verdict(abs(diff) <= TARGET_MB)}")


if __name__ == "__main__":
    main()
