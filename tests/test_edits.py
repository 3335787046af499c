"""Image-to-image: reference inputs, masks, uploads and @asset dependencies."""

from __future__ import annotations

from PIL import Image

from conftest import api_build
from starbuild.emulator import Emulator, EmulatorConfig
from starbuild.engine.outcome import Outcome

CHAIN = """\
version: 1
defaults:
  quality: low
images:
  rain:
    prompt: "The same scene in heavy rain{{ rain_extra }}"
    inputs: ["@night", textures/rain.png]
    size: "16:9"
  hero:
    prompt: "A cozy cabin in snowy mountains at dusk{{ hero_extra }}"
    size: "16:9"
  night:
    prompt: "The same scene at night under a starry sky"
    inputs: ["@hero"]
    mask: masks/sky.png
    size: "16:9"
vars:
  hero_extra: ""
  rain_extra: ""
"""


def _image(path, size, mode="RGBA"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (10, 20, 30, 0) if mode == "RGBA" else (10, 20, 30)).save(path)


def _chain(project, hero_extra="", rain_extra=""):
    _image(project.root / "masks" / "sky.png", (1360, 768))
    _image(project.root / "textures" / "rain.png", (512, 512), "RGB")
    project.config(CHAIN.replace('hero_extra: ""', f'hero_extra: "{hero_extra}"')
                   .replace('rain_extra: ""', f'rain_extra: "{rain_extra}"'))


def _order(emulator):
    return [e.request["prompt"].split()[1] for e in emulator.ledger]


def test_edits_chain_built_in_order_and_cascades(project, emulator):
    _chain(project)
    report = api_build(project, emulator)
    assert report.exit_code == 0, [r.error for r in report.results]
    assert _order(emulator) == ["cozy", "same", "same"]
    hero, night, rain = emulator.ledger
    assert "night" in night.request["prompt"] and "rain" in rain.request["prompt"]
    assert len(night.request["image_urls"]) == 1 and night.request.get("mask_url")
    assert len(rain.request["image_urls"]) == 2
    lock = project.lock()["assets"]
    assert lock["night"]["request"]["inputs"] == [{"asset": "hero", "sha256": lock["hero"]["files"][0]["sha256"]}]
    assert lock["rain"]["request"]["inputs"][1]["path"] == "textures/rain.png"

    _chain(project, hero_extra=", at dawn")
    plan = {a["name"]: a for a in project.run("plan", "--json").json["assets"]}
    assert plan["hero"]["reason"] == "prompt changed"
    assert plan["night"]["status"] == "changed" and "input @hero changed" in plan["night"]["reason"]
    assert plan["rain"]["status"] == "changed"
    report = api_build(project, emulator)
    assert report.exit_code == 0 and len(emulator.ledger) == 6
    assert report.count(Outcome.BUILT) == 3

    _chain(project, hero_extra=", at dawn", rain_extra=" and fog")
    report = api_build(project, emulator)
    assert len(emulator.ledger) == 7 and "fog" in emulator.ledger[-1].request["prompt"]
    assert report.count(Outcome.BUILT) == 1 and report.count(Outcome.CACHED) == 2


def test_edits_build_name_builds_what_it_needs(project, emulator):
    _chain(project)
    report = api_build(project, emulator, select=("night",))
    assert report.exit_code == 0
    assert sorted(project.lock()["assets"]) == ["hero", "night"]
    assert len(emulator.ledger) == 2


def test_edits_failed_parent_skips_dependents(project):
    from starbuild.emulator import Faults

    em = Emulator(EmulatorConfig(render="plain", faults=Faults(rate_task_failed=1.0,
                                                               failure_codes=("content_policy_violation",))))
    _chain(project)
    report = api_build(project, em)
    by = {r.name: r for r in report.results}
    assert by["hero"].outcome == Outcome.FAILED
    assert by["night"].outcome == Outcome.SKIPPED and "@hero" in by["night"].reason
    assert len(em.ledger) == 1


def test_edits_mask_without_alpha_exit_2_before_submission(project):
    _chain(project)
    _image(project.root / "masks" / "sky.png", (1360, 768), mode="RGB")
    res = project.run("build", "--offline")
    assert res.exit_code == 2 and "alpha" in res.stderr and "starbuild.yaml:15:" in res.stderr
    assert not (project.root / "assets").exists() and not (project.root / "starbuild.lock").exists()


def test_edits_mask_wrong_size_exit_2_before_submission(project):
    _chain(project)
    _image(project.root / "masks" / "sky.png", (1024, 1024))
    res = project.run("build", "--offline")
    assert res.exit_code == 2 and "1024x1024" in res.stderr and "1360x768" in res.stderr
    assert not (project.root / "assets").exists()


def test_edits_mask_checked_against_local_first_input(project):
    _image(project.root / "refs" / "base.png", (1024, 1024), "RGB")
    _image(project.root / "masks" / "m.png", (1024, 768))
    project.config("version: 1\nimages:\n  a:\n    prompt: x\n    inputs: [refs/base.png]\n    mask: masks/m.png\n")
    res = project.run("validate")
    assert res.exit_code == 2 and "1024x768" in res.stderr and "refs/base.png is 1024x1024" in res.stderr


def test_edits_local_reference_used_by_ten_assets_uploaded_once(project, emulator):
    _image(project.root / "refs" / "base.png", (256, 256), "RGB")
    project.config("""\
        version: 1
        images:
          "pose/{{ i }}":
            matrix: {i: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
            prompt: "The character in pose {{ i }}"
            inputs: [refs/base.png]
            quality: low
            size: "1:1"
        """)
    report = api_build(project, emulator)
    assert report.exit_code == 0 and report.count(Outcome.BUILT) == 10
    assert emulator.counters["upload"] == 1
    urls = {tuple(e.request["image_urls"]) for e in emulator.ledger}
    assert len(urls) == 1


def test_edits_input_content_change_moves_hash(project):
    _image(project.root / "refs" / "base.png", (256, 256), "RGB")
    project.config("version: 1\nimages:\n  a:\n    prompt: x\n    inputs: [refs/base.png]\n")
    before = project.hashes()["a"]
    Image.new("RGB", (256, 256), (200, 0, 0)).save(project.root / "refs" / "base.png")
    assert project.hashes()["a"] != before


def test_edits_reference_not_an_image_is_refused(project):
    project.write("refs/notes.png", "this is text")
    project.config("version: 1\nimages:\n  a:\n    prompt: x\n    inputs: [refs/notes.png]\n")
    res = project.run("validate")
    assert res.exit_code == 2 and "not a PNG, JPEG or WebP image" in res.stderr


def test_edits_upload_cache_reuses_until_near_expiry():
    from starbuild.engine.runner import UploadCache

    now = [1000.0]
    cache = UploadCache(clock=lambda: now[0])
    cache.put("abc", "https://files/x", expires_at=1000.0 + 72 * 3600)
    assert cache.get("abc") == "https://files/x"
    now[0] += 71 * 3600 + 1  # less than an hour of life left: upload again
    assert cache.get("abc") is None
