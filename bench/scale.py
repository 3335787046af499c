"""Start-up and no-op speed at 10,000 and 100,000 assets, each a ratio to `python -c pass` in the same run.

The project is one matrix of COUNT cells plus one image `hero`. Its lockfile, object store and a
published version are written directly (every cell's placeholder spec hash, one shared stored
image), which takes seconds instead of building 100,000 images; the plan then finds every asset
up to date, exactly as after a real build. Then, pair by pair with `python -c pass`:

- `build --offline`, a no-op, answered from the plan cache (targets: 4x at 10k, 20x at 100k);
- the same no-op with the plan cache emptied before each run (no target: the full path);
- `plan --offline`, from the plan cache (target 4x at 10k);
- a one-asset change: hero's prompt edited before each run, so each run builds one image and
  writes a new version, lockfile and manifest (target 10x at 10k);
- two floors under these figures, no target: importing the libraries every planning command needs
  (pydantic, httpx, jinja2, yaml), and COUNT hard links in a bare loop (what a version folder costs
  at the least);
- `starbuild --help` (target 1.5x);
- peak memory of a cold `plan` (cache emptied) of the project.

    python bench/scale.py [--assets 10000,100000] [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, run_measured, verdict  # noqa: E402

CONFIG = """\
version: 1
images:
  hero:
    prompt: "{hero}"
    size: "1:1"
    quality: low
  "cells/{{{{ a }}}}-{{{{ b }}}}":
    matrix:
      a: {rows}
      b: {cols}
    prompt: "Icon {{{{ a }}}} of set {{{{ b }}}}, flat vector"
    size: "1:1"
    quality: low
"""


def write_config(root: Path, count: int, hero: str) -> None:
    cols = 100
    rows = max(1, count // cols)
    (root / "starbuild.yaml").write_text(CONFIG.format(hero=hero, rows=list(range(rows)), cols=list(range(cols))))


def synthetic_build(root: Path, cache: Path) -> int:
    """Lockfile, store and version 1 as a build would leave them; returns the number of assets."""
    from starbuild.config.resolve import load_and_resolve
    from starbuild.emulator.render import render_placeholder
    from starbuild.plan.spec import sha256_hex
    from starbuild.store.lockfile import Lock, write_lock
    from starbuild.store.objects import AssetDir

    project, specs = load_and_resolve(root / "starbuild.yaml")
    data = render_placeholder("bench", "gpt-image-2", 1024, 1024, 0, "plain")
    sha = sha256_hex(data)
    obj = cache / "objects" / sha[:2] / sha
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    assets = {}
    for spec in specs:
        f = {"path": f"{spec.name}.png", "sha256": sha, "bytes": len(data), "width": 1024, "height": 1024,
             "format": "png"}
        assets[spec.name] = {"spec_hash": spec.spec_hash(True), "request": spec.request(), "task_id": None,
                             "files": [f], "credits": 0.0, "placeholder": True, "created": "2026-01-01T00:00:00Z"}
    out = AssetDir(root / "assets")
    out.publish(1, [(a["files"][0]["path"], obj) for a in assets.values()],
                {"asset_version": 1, "created": "2026-01-01T00:00:00Z", "assets": assets})
    write_lock(root / "starbuild.lock", Lock(asset_version=1, assets=assets))
    return len(assets)


def timed(cmd: list[str], env: dict, before=None) -> tuple[float, float]:
    if before:
        before()
    run = run_measured(cmd, env=env)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {run.returncode}: {run.stderr[-2000:]}")
    return run.wall, run.maxrss_mb


IMPORTS = ("from starbuild.cli.fastpath import _skip_httpx_cli, _no_pydantic_plugins\n"
           "_skip_httpx_cli(); _no_pydantic_plugins()\nimport pydantic, httpx, jinja2, yaml")


def ratio_line(label: str, cmd: list[str], env: dict, runs: int, target: float | None, before=None) -> float:
    bare = [sys.executable, "-c", "pass"]
    ratios, walls, bares = [], [], []
    for _ in range(runs):
        b = timed(bare, env)[0]
        w = timed(cmd, env, before)[0]
        bares.append(b)
        walls.append(w)
        ratios.append(w / b)
    r = median(ratios)
    goal = f"; target <= {target:g}x: {verdict(r <= target)}" if target else ""
    print(f"scale: {label}: {median(walls) * 1000:.0f} ms vs python -c pass {median(bares) * 1000:.0f} ms: "
          f"{r:.2f}x median of {runs} (min {min(ratios):.2f}, max {max(ratios):.2f}){goal}", flush=True)
    return r


def one_size(count: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "proj", Path(tmp) / "cache"
        root.mkdir()
        write_config(root, count, "hero 0")
        env = {**os.environ, "STARBUILD_CACHE_DIR": str(cache)}
        start = time.perf_counter()
        n = synthetic_build(root, cache)
        print(f"scale: setup of {n} assets (lockfile, store, version 1) in {time.perf_counter() - start:.1f} s",
              flush=True)
        base = [sys.executable, "-m", "starbuild", "-C", str(root)]
        noop, plan = base + ["build", "--offline"], base + ["plan", "--offline"]
        time.sleep(2.1)  # the plan cache distrusts files modified within the last two seconds
        for cmd in (noop, noop, plan, plan):  # the first run of each records its answer
            timed(cmd, env)
        big = count >= 100_000
        ratio_line(f"no-op build of {n} assets (plan cache)", noop, env, runs, 20 if big else 4)
        if not big:
            ratio_line(f"plan of {n} assets (plan cache)", plan, env, runs, 4)
        drop = lambda: shutil.rmtree(cache / "plan-cache", ignore_errors=True)  # noqa: E731
        ratio_line(f"no-op build of {n} assets, plan cache emptied", noop, env, max(1, runs // 2), None, drop)
        wall, rss = timed(plan, env, drop)
        print(f"scale: memory: peak RSS of a cold `plan` of {n} assets {rss:.0f} MiB ({wall:.2f} s)", flush=True)
        if not big:
            edits = iter(range(1, 1000))
            change = lambda: write_config(root, count, f"hero {next(edits)}")  # noqa: E731
            ratio_line(f"one-asset change in {n} assets (build, new version, lockfile, manifest)",
                       noop, env, runs, 10, change)
            link_floor(root, n)


def link_floor(root: Path, n: int) -> None:
    """What a new version's folder costs at the least: one hard link per file, in a bare loop."""
    src, dest = root / "link-floor-src", root / "link-floor-dest"
    src.mkdir()
    for i in range(n):
        (src / f"{i}.png").write_bytes(b"x")
    best = float("inf")
    for _ in range(3):
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        start = time.perf_counter()
        for i in range(n):
            os.link(f"{src}/{i}.png", f"{dest}/{i}.png")
        best = min(best, time.perf_counter() - start)
    print(f"scale: floor: {n} hard links for a version folder, bare loop: {best * 1000:.0f} ms (best of 3)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", default="10000,100000")
    parser.add_argument("--runs", type=int, default=None, help="pairs per figure (default 7; 3 with --quick)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 7)
    ratio_line("starbuild --help", [sys.executable, "-m", "starbuild", "--help"], dict(os.environ), runs * 2, 1.5)
    # The floor under every command that plans: the libraries it cannot do without, imported as the
    # command line imports them (no httpx CLI, no pydantic plugin scan), and the interpreter.
    ratio_line("imports of pydantic, httpx, jinja2 and yaml alone", [sys.executable, "-c", IMPORTS],
               dict(os.environ), runs * 2, None)
    for count in (int(c) for c in args.assets.split(",")):
        one_size(count, runs)


if __name__ == "__main__":
    main()
