"""Deliverables for a game: the game-icons example built offline, its icons and atlas checked pixel by pixel,
and post edits that re-process only what they touch without a single API request."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from PIL import Image, ImageChops

from conftest import REPO, Project

from starbuild.post.encode import read_provenance


def _copy_example(project: Project, name: str) -> Path:
    shutil.copytree(REPO / "examples" / name, project.root)
    return project.root


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    a, b = a.convert("RGBA"), b.convert("RGBA")
    return a.size == b.size and ImageChops.difference(a, b).getbbox() is None


def _check_frames(cur: Path, atlas: str) -> dict:
    """Every frame of the TexturePacker file shows, on its page, exactly the delivered image's pixels."""
    frames = {}
    page = 0
    while (cur / "atlases" / (f"{atlas}.json" if page == 0 else f"{atlas}-{page}.json")).exists():
        meta = json.loads((cur / "atlases" / (f"{atlas}.json" if page == 0 else f"{atlas}-{page}.json")).read_text())
        sheet = Image.open(cur / "atlases" / meta["meta"]["image"])
        assert sheet.size == (meta["meta"]["size"]["w"], meta["meta"]["size"]["h"])
        for name, f in meta["frames"].items():
            r, s = f["frame"], f["spriteSourceSize"]
            packed = sheet.crop((r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"]))
            source = Image.open(cur / f"{name}.png")
            assert source.size == (f["sourceSize"]["w"], f["sourceSize"]["h"])
            original = source.convert("RGBA").crop((s["x"], s["y"], s["x"] + s["w"], s["y"] + s["h"]))
            assert _same_pixels(packed, original), name
            frames[name] = (page, r)
        page += 1
    return frames


def test_game_example_icons_are_keyed_trimmed_resized_and_packed(project):
    root = _copy_example(project, "game-icons")
    res = project.run("build", "--offline")
    assert res.exit_code == 0, res.stderr + res.stdout
    cur = root / "assets" / "current"
    lock = project.lock()
    icons = [n for n in lock["assets"] if n.startswith("icons/")]
    assert len(icons) == 8
    for name in icons:
        entry = lock["assets"][name]
        # The generated source stays in the lock (and the object store); the version holds the delivered file.
        assert entry["files"][0]["width"] == 1024 and entry["post"]
        [out] = entry["outputs"]
        img = Image.open(cur / out["path"])
        assert out["path"] == f"{name}.png" and img.format == "PNG" and img.mode == "RGBA"
        assert img.size == (256, 256) and (out["width"], out["height"]) == img.size
        alpha = img.getchannel("A")
        assert alpha.getextrema() == (0, 255)              # real transparency: keyed ground, opaque subject
        assert img.getpixel((0, 0))[3] == 0 and img.getpixel((128, 128))[3] > 240
        # trim + contain: the subject touches two opposite sides of the 256 px box
        left, top, right, bottom = alpha.getbbox()
        assert (left, right) == (0, 256) or (top, bottom) == (0, 256)
        prov = read_provenance(cur / out["path"])
        assert prov["spec_hash"] == entry["spec_hash"] and prov["model"] == "gpt-image-2" and prov["take"] == "0"
    coin = Image.open(cur / "pixel" / "coin.png")
    assert _is_pow2(coin.width) and _is_pow2(coin.height) and max(coin.size) == 32
    assert {v for _, v in coin.getchannel("A").getcolors()} <= {0, 255}     # binary alpha
    assert len(coin.convert("RGB").getcolors(256)) <= 9         # 8 colours (+ the keyed pixels' colour)
    background = Image.open(cur / "ui" / "background.webp")
    assert background.format == "WEBP" and background.width == 1920
    assert not (cur / "ui" / "background.png").exists() and not (cur / "icons" / "sword-common.webp").exists()

    frames = _check_frames(cur, "icons")
    assert set(frames) == {*icons, "pixel/coin"}
    rects = [(p, r["x"], r["y"], r["w"], r["h"]) for p, r in frames.values()]
    for i, a in enumerate(rects):                                  # no two frames overlap (padding 2)
        for b in rects[i + 1:]:
            assert a[0] != b[0] or a[1] + a[3] + 2 <= b[1] or b[1] + b[3] + 2 <= a[1] or \
                a[2] + a[4] + 2 <= b[2] or b[2] + b[4] + 2 <= a[2]
    phaser = json.loads((cur / "atlases" / "icons.phaser3.json").read_text())
    assert {(t["image"], f["filename"], f["frame"]["x"], f["frame"]["y"]) for t in phaser["textures"]
            for f in t["frames"]} == {("icons.png" if p == 0 else f"icons-{p}.png", n, r["x"], r["y"])
                                      for n, (p, r) in frames.items()}
    tres = (cur / "atlases" / "icons.tres").read_text()
    assert tres.startswith('[gd_resource type="SpriteFrames"') and 'path="icons.png"' in tres
    regions = re.findall(r"region = Rect2\((\d+), (\d+), (\d+), (\d+)\)", tres)
    assert sorted(tuple(map(int, g)) for g in regions) == sorted((r["x"], r["y"], r["w"], r["h"])
                                                                 for _, r in frames.values())
    assert '&"icons/sword-common"' in tres
    # output.export: a plain mirror, no symlinks, with its record of what it wrote
    exported = root / "build" / "Generated"
    assert (exported / "atlases" / "icons.png").read_bytes() == (cur / "atlases" / "icons.png").read_bytes()
    assert not any(p.is_symlink() for p in exported.rglob("*"))
    record = json.loads((exported / ".starbuild-export.json").read_text())["files"]
    assert "icons/sword-common.png" in record and "images.json" in record


def test_atlas_makes_more_pages_when_full(project):
    project.config("""\
        version: 1
        defaults: {size: "1:1", quality: low, post: [chroma_key, trim, {resize: {width: 100, height: 100}}]}
        images:
          "s/{{ i }}": {matrix: {i: [0, 1, 2, 3, 4]}, prompt: "sprite {{ i }}"}
        atlases:
          sheet: {include: ["s/*"], max_size: 210, padding: 4, trim: false, exports: [texturepacker, godot]}
        """)
    res = project.run("build", "--offline")
    assert res.exit_code == 0, res.stderr
    cur = project.root / "assets" / "current"
    pages = sorted(p.name for p in (cur / "atlases").glob("*.png"))
    assert pages == ["sheet-1.png", "sheet.png"]      # 4 frames of 100 px fit a 210 px page, then a second
    frames = _check_frames(cur, "sheet")
    assert sorted(frames) == [f"s/{i}" for i in range(5)]
    assert max(Image.open(cur / "atlases" / p).width for p in pages) <= 210
    assert 'path="sheet-1.png"' in (cur / "atlases" / "sheet.tres").read_text()
    # Packing is deterministic: a second project with the same images packs the same pages.
    first = {p: (cur / "atlases" / p).read_bytes() for p in pages}
    assert project.run("build", "--offline", "--force", "*").exit_code == 0
    assert {p: (project.root / "assets" / "current" / "atlases" / p).read_bytes() for p in pages} == first


def test_a_post_edit_reprocesses_only_its_assets_with_no_api_request(tmp_path, monkeypatch):
    from starbuild.config.resolve import load_and_resolve
    from starbuild.emulator import Emulator, EmulatorConfig
    from starbuild.engine.build import BuildOptions, build
    from starbuild.store.objects import ObjectStore

    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    proj = Project(tmp_path / "p")
    body = """\
        version: 1
        defaults: {{size: "1:1", quality: low}}
        images:
          "icons/{{{{ i }}}}":
            matrix: {{i: [a, b, c]}}
            prompt: "icon {{{{ i }}}}"
            post: [chroma_key, trim, {{resize: {{width: 128, height: 128}}}}, {{pad: {{to: pow2}}}}]
          hero:
            prompt: "a hero"
            post: [{{resize: {{width: {width}}}}}, {{format: {{type: webp}}}}]
            variants: {{widths: [64, 256], formats: [avif, webp]}}
        atlases:
          icons: {{include: ["icons/*"], exports: [phaser3]}}
        """
    proj.config(body.format(width=512))
    emulator = Emulator(EmulatorConfig())

    def run():
        project, specs = load_and_resolve(proj.root / "starbuild.yaml")
        return build(project, BuildOptions(offline=True, specs=specs), emulator=emulator)

    first = run()
    assert first.exit_code == 0 and len(emulator.ledger) == 4
    lock1 = proj.lock()
    store = ObjectStore(tmp_path / "cache")
    before = store.listing()
    hero = Image.open(proj.root / "assets" / "current" / "hero.webp")
    assert hero.size == (512, 512)

    res = proj.run("plan", "--offline")
    assert res.exit_code == 0 and "post changed" not in res.stdout
    proj.config(body.format(width=384))
    res = proj.run("plan", "--offline", "--json")
    post = res.json["summary"]["post"]
    assert post["assets"] == ["hero"] and post["atlases"] == [] and res.json["summary"]["credits"] == 0
    assert "post changed: 5 files of 1 asset(s), 0 credits" in proj.run("plan", "--offline").stdout

    second = run()
    assert second.exit_code == 0 and second.requests == 0 and len(emulator.ledger) == 4   # not one request
    # the delivered file and its 4 variants (made from it), nothing else
    assert second.version == 2 and "post: processed 5 file(s), 0 credits" in second.notes
    lock2 = proj.lock()
    for name in ("icons/a", "icons/b", "icons/c"):
        assert lock2["assets"][name] == lock1["assets"][name]
    assert lock2["assets"]["hero"]["spec_hash"] == lock1["assets"]["hero"]["spec_hash"]
    assert lock2["assets"]["hero"]["files"] == lock1["assets"]["hero"]["files"]
    new_objects = store.listing() - before
    assert new_objects == {o["sha256"] for o in lock2["assets"]["hero"]["outputs"]}
    assert len(new_objects) == 5
    assert Image.open(proj.root / "assets" / "current" / "hero.webp").size == (384, 384)
    assert lock2.get("atlases") == lock1.get("atlases")            # the icons did not change

    # Back to the first recipe: every derived file is a cache hit, nothing is processed at all.
    proj.config(body.format(width=512))
    third = run()
    assert third.requests == 0 and not [n for n in third.notes if n.startswith("post:")]
    assert proj.lock()["assets"] == lock1["assets"]


def test_an_atlas_edit_repacks_only_the_atlas(project):
    config = """\
        version: 1
        defaults: {{size: "1:1", quality: low, post: [chroma_key, trim, {{resize: {{width: 64, height: 64}}}}]}}
        images:
          "s/{{{{ i }}}}": {{matrix: {{i: [0, 1, 2]}}, prompt: "sprite {{{{ i }}}}"}}
        atlases:
          sheet: {{include: ["s/*"], padding: {padding}, exports: [texturepacker, phaser3, godot]}}
        """
    project.config(config.format(padding=2))
    assert project.run("build", "--offline").exit_code == 0
    before = project.lock()
    project.config(config.format(padding=8))
    plan = project.run("plan", "--offline", "--json").json["summary"]
    assert plan["post"] == {"assets": [], "files": 0, "atlases": ["sheet"], "credits": 0.0} and plan["credits"] == 0
    res = project.run("build", "--offline")
    assert res.exit_code == 0 and "post: processed 4 file(s), 0 credits" in res.stdout   # a page and 3 exports
    after = project.lock()
    assert after["assets"] == before["assets"] and after["atlases"]["sheet"]["config"]["padding"] == 8
    frames = _check_frames(project.root / "assets" / "current", "sheet")
    rects = sorted((r["x"], r["y"]) for _, r in frames.values())
    assert all(b[0] - a[0] >= 64 + 8 or b[1] != a[1] for a, b in zip(rects, rects[1:]))
    project.config(config.format(padding=8).split("atlases:")[0])
    assert "atlas sheet repacked" in project.run("plan", "--offline").stdout        # removing it is a change too
    assert project.run("build", "--offline").exit_code == 0
    assert "atlases" not in project.lock() and not (project.root / "assets" / "current" / "atlases").exists()
