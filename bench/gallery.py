"""The gallery at 1,000 assets: time to render the index page and to fetch one lazy thumbnail.

Target: the index renders in well under a second (thumbnails are lazy, made on first request and
cached), so a 1,000-asset project opens as fast as a small one. Compares 1,000 assets with 10.

    python bench/gallery.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx


def make_project(root: Path, count: int) -> None:
    from starbuild.engine.build import BuildOptions, build
    from starbuild.emulator import Emulator, EmulatorConfig
    from starbuild.config.resolve import load_and_resolve

    root.mkdir(parents=True)
    (root / "starbuild.yaml").write_text(
        "version: 1\nprovider:\n  concurrency: 64\nimages:\n  'a/i{{ i }}':\n"
        f"    matrix:\n      i: {json.dumps(list(range(count)))}\n"
        "    prompt: 'icon {{ i }}'\n    size: '1:1'\n    quality: low\n")
    project, specs = load_and_resolve(root / "starbuild.yaml")
    env = {**os.environ, "STARBUILD_CACHE_DIR": str(root / ".cache")}
    em = Emulator(EmulatorConfig(render="plain"))
    build(project, BuildOptions(offline=True, env=env, specs=specs, poll_base=0.01, poll_cap=0.05), emulator=em)


def timings(root: Path, runs: int = 7) -> tuple[float, float, float, int]:
    from starbuild.config.project import load_config
    from starbuild.ui.gallery import GalleryState, create_app

    os.environ["STARBUILD_CACHE_DIR"] = str(root / ".cache")
    app = create_app(GalleryState(load_config(root / "starbuild.yaml")))

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
            pages = []
            size = 0
            for _ in range(runs):
                t = time.perf_counter()
                r = await c.get("/")
                pages.append(time.perf_counter() - t)
                size = len(r.content)
            t = time.perf_counter()
            await c.get("/thumb/1/a/i0.png")
            cold = time.perf_counter() - t
            t = time.perf_counter()
            await c.get("/thumb/1/a/i0.png")
            warm = time.perf_counter() - t
            return statistics.median(pages), cold, warm, size

    return asyncio.run(go())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "small", Path(tmp) / "big"
        make_project(small, 10)
        make_project(big, 1000)
        s_page, _, _, s_size = timings(small)
        b_page, cold, warm, b_size = timings(big)
    print(f"gallery: index of 1000 assets {b_page * 1000:.0f} ms ({b_size / 1024:.0f} KiB) vs 10 assets "
          f"{s_page * 1000:.1f} ms; one thumbnail {cold * 1000:.0f} ms cold, {warm * 1000:.1f} ms cached; "
          f"target index < 1000 ms: {'met' if b_page < 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
