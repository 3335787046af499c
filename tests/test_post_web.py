"""Deliverables for a website: the website example built offline, its AVIF/WebP variants and images.json."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

from PIL import Image

from conftest import REPO

from starbuild.post.encode import read_provenance


def _build_example(project):
    shutil.copytree(REPO / "examples" / "website", project.root)
    cfg = project.root / "starbuild.yaml"
    # The rate limit only paces submissions; this test is about what is delivered.
    cfg.write_text(re.sub(r"\n  rate_limit: .*", "", cfg.read_text()))
    res = project.run("build", "--offline")
    assert res.exit_code == 0, res.stderr + res.stdout
    return project.root / "assets" / "current"


def test_website_example_delivers_variants_and_images_json(project):
    cur = _build_example(project)
    manifest = json.loads((cur / "images.json").read_text())
    images = manifest["images"]
    assert set(images) == {"hero/desktop", "hero/tablet", "hero/mobile", "og-card",
                           "products/tent-2p", "products/pack-45", "products/boot-m", "products/stove-mini"}
    desktop = images["hero/desktop"]
    assert desktop["src"] == "hero/desktop.webp" and desktop["type"] == "image/webp"
    hero = Image.open(cur / "hero" / "desktop.webp")
    assert hero.format == "WEBP" and hero.size == (desktop["width"], desktop["height"])
    assert desktop["srcset"] == {
        "avif": "hero/desktop-640.avif 640w, hero/desktop-1280.avif 1280w, hero/desktop-1920.avif 1920w",
        "webp": "hero/desktop-640.webp 640w, hero/desktop-1280.webp 1280w, hero/desktop-1920.webp 1920w"}
    for fmt, entries in desktop["srcset"].items():
        for item in entries.split(", "):
            path, width = item.split(" ")
            img = Image.open(cur / path)
            assert img.format == fmt.upper() and f"{img.width}w" == width
            assert abs(img.height - round(hero.height * img.width / hero.width)) <= 1   # aspect kept
            assert read_provenance(cur / path) == {}                                    # variants strip metadata
    assert read_provenance(cur / "hero" / "desktop.webp")["model"] == "gpt-image-2"      # XMP in the WebP
    # never upscaled: the mobile hero is 1K tall and narrow, so only the widths it has are made
    mobile = images["hero/mobile"]
    widths = [int(w.split(" ")[1][:-1]) for w in mobile["srcset"]["avif"].split(", ")]
    assert widths and all(w <= mobile["width"] for w in widths) and 1920 not in widths
    assert not (cur / "hero" / "mobile-1920.avif").exists()
    for name, row in images.items():
        assert row["sha256"] == _sha(cur / row["src"])
        head, data = row["placeholder"].split(",", 1)
        assert head == "data:image/webp;base64" and len(data) < 600
        tiny = Image.open(io.BytesIO(base64.b64decode(data)))
        assert tiny.width == 16 and abs(tiny.height - round(16 * row["height"] / row["width"])) <= 1
    product = Image.open(cur / images["products/boot-m"]["src"])
    assert images["products/boot-m"]["src"] == "products/boot-m.jpg" and product.format == "JPEG"
    assert product.size == (800, 800) and product.mode == "RGB"
    og = Image.open(cur / "og-card.jpg")
    assert og.size == (1200, 630) and images["og-card"]["srcset"] == {}
    lock = project.lock()
    entry = lock["assets"]["hero/desktop"]
    assert entry["files"][0]["path"] == "hero/desktop.png"          # the generated source, kept in the lock
    assert not (cur / "hero" / "desktop.png").exists()              # ... and in the store, not the version
    assert sorted(o["path"] for o in entry["outputs"])[0] == "hero/desktop-1280.avif"


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_placeholder_of_a_large_image_keeps_its_colours(tmp_path):
    """The placeholder samples a large image instead of averaging every pixel: it must still show
    where the colours are, and the decoded size stays the image's own."""
    from starbuild.post.work import Job, run_job

    img = Image.new("RGB", (2048, 1024), (200, 30, 30))
    img.paste((20, 40, 220), (1024, 0, 2048, 1024))            # right half blue
    for x in range(0, 1024, 2):                                # left half: a fine stripe pattern
        img.paste((255, 255, 255), (x, 0, x + 1, 1024))
    src = tmp_path / "big.png"
    img.save(src)
    result = run_job(Job(source=str(src), placeholder=True, tmp_dir=str(tmp_path)))
    assert result.error is None and (result.width, result.height) == (2048, 1024)
    tiny = Image.open(io.BytesIO(base64.b64decode(result.placeholder.split(",", 1)[1]))).convert("RGB")
    assert tiny.size == (16, 8)
    left, right = tiny.getpixel((2, 4)), tiny.getpixel((13, 4))
    assert abs(right[2] - 220) < 25 and right[0] < 50                      # blue stays blue
    assert 190 < left[0] and 100 < left[1] < 190                           # stripes blend to pink, not one of them


def test_placeholder_only_work_of_small_files_runs_inline(tmp_path):
    """Only a placeholder to make for small (flat) files: a pool's start-up would cost more."""
    from starbuild.post.work import Job, workers_for

    flat = [Job(source="x", placeholder=True, pixels=4 * 700) for _ in range(500)]
    assert workers_for(flat, cores=2) == 0
    photos = [Job(source="x", placeholder=True, pixels=1024 * 1024) for _ in range(40)]
    assert workers_for(photos, cores=2) == 2


def test_a_derived_cache_that_cannot_be_written_is_a_one_line_error_and_the_next_build_publishes(project, tmp_path):
    """A file where the processing cache's folder should be (or a full disk) ends the build with a
    located error, not a traceback; the images are kept, and a build after the fix publishes them."""
    from conftest import matrix_config, run

    project.config(matrix_config(2))
    blocked = tmp_path / ".cache" / "derived"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a folder")
    res = run(["-C", str(project.root), "build", "--offline"])
    assert res.exit_code != 0
    assert "cannot write" in res.stderr and "derived" in res.stderr and "Traceback" not in res.stderr
    blocked.unlink()
    again = run(["-C", str(project.root), "build", "--offline"])
    assert again.exit_code == 0, again.stderr
    assert len(project.lock()["assets"]) == 2


def test_placeholders_of_unprocessed_images_are_made_while_the_build_runs(project, monkeypatch):
    """An image published as it is gets its placeholder as soon as it is stored; the publish step
    is left only the processed ones, and the images.json rows are what it would have made."""
    import starbuild.post.deliver as deliver
    from starbuild.post.encode import placeholder_url

    left: list = []
    real = deliver.run_jobs

    def recording(jobs, workers=None):
        left.extend(jobs)
        return real(jobs, workers)

    monkeypatch.setattr(deliver, "run_jobs", recording)
    project.config("version: 1\nimages:\n  'plain/p{{ i }}':\n    matrix:\n      i: [0, 1, 2]\n"
                   "    prompt: plain {{ i }}\n"
                   "  card:\n    prompt: a card\n    post:\n      - resize: {width: 64, height: 64}\n")
    res = project.run("build", "--offline")
    assert res.exit_code == 0, res.stderr + res.stdout
    assert [Path(j.source).name for j in left] != [] and all(j.steps for j in left)  # only the card's
    cur = project.root / "assets" / "current"
    rows = json.loads((cur / "images.json").read_text())["images"]
    for name, row in rows.items():
        with Image.open(cur / row["src"]) as img:
            assert row["placeholder"] == placeholder_url(img), name
    assert rows["card"]["width"] == 64


def test_an_interrupted_build_drops_the_placeholders_not_yet_started(project):
    """close() (the build's way out on Ctrl-C or an error) cancels the queue; nothing starts after it."""
    import asyncio

    from starbuild.config.project import load_config
    from starbuild.engine.build import cache_dir
    from starbuild.post.early import EarlyPlaceholders
    from starbuild.store.objects import ObjectStore

    project.config("version: 1\nimages:\n  hero:\n    prompt: a hero\n")
    assert project.run("build", "--offline").exit_code == 0
    files = project.lock()["assets"]["hero"]["files"]
    loaded = load_config(project.root / "starbuild.yaml")
    early = EarlyPlaceholders(loaded, ObjectStore(cache_dir(loaded)), {"hero": "hero"})

    async def interrupted():
        for _ in range(50):
            early.stored("hero", files)
        queued = list(early._pending)  # noqa: SLF001
        early.close()
        early.stored("hero", files)  # after close: nothing more
        await asyncio.gather(*queued, return_exceptions=True)
        return queued

    queued = asyncio.run(interrupted())
    assert len(queued) == 50 and len(early._pending) == 50  # noqa: SLF001
    assert sum(f.cancelled() for f in queued) >= 45  # at most the one or few already started ran
