"""Review end to end: takes and picks, rerolls, accepts, tiers and promotions (SPEC.md §9)."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from conftest import KEY, api_build, matrix_config
from starbuild.config.resolve import load_and_resolve
from starbuild.emulator import Emulator, EmulatorConfig

HERO = """\
version: 1
images:
  hero:
    prompt: "A cozy cabin in snowy mountains at dusk"
    size: '1:1'
    quality: low
{extra}"""


@pytest.fixture
def sampler():
    """An emulator that, like the real API, draws a different image for every submission."""
    return Emulator(EmulatorConfig(render="plain", fresh_samples=True))


def review_options(proj, **opts):
    """Build options like api_build's, for the review commands run as library calls."""
    import os

    from starbuild.api.client import RetryPolicy
    from starbuild.engine.build import BuildOptions

    from starbuild.emulator.config import DEFAULT_FILES_URL, DEFAULT_PUBLIC_URL

    # In-process, as api_build does: the file service on its own host, https for the key rules.
    env = {**os.environ, "STARMAGIC_API_KEY": KEY,
           "STARMAGIC_BASE_URL": DEFAULT_PUBLIC_URL.replace("http://", "https://", 1),
           "STARMAGIC_FILES_URL": DEFAULT_FILES_URL.replace("http://", "https://", 1)}
    return BuildOptions(env=env, poll_base=0.01, poll_cap=0.05,
                        retry=RetryPolicy(attempts=8, base=0.01, cap=0.05, max_advised=0.05), **opts)


def published(proj, name: str, ext: str = "png") -> bytes:
    return (proj.root / "assets" / "current" / f"{name}.{ext}").read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_of(proj) -> dict:
    res = proj.run("plan", "--json")
    assert res.exit_code == 0, res.stderr
    return {a["name"]: a for a in res.json["assets"]}


def test_takes_make_candidates_and_pick_publishes_the_chosen_one(project, sampler, monkeypatch):
    project.config(HERO.format(extra="    takes: 3\n"))
    report = api_build(project, sampler)
    assert report.exit_code == 0 and len(sampler.ledger) == 3
    entry = project.lock()["assets"]["hero"]
    takes = {c["take"]: c for c in entry["candidates"]}
    assert sorted(takes) == [1, 2, 3] and len({c["sha256"] for c in takes.values()}) == 3
    assert len({c["spec_hash"] for c in takes.values()}) == 3  # the take number is in each hash
    assert sha(published(project, "hero")) == takes[1]["sha256"]  # no pick yet: the first is published
    assert "pick" not in entry
    hero = plan_of(project)["hero"]
    assert hero["status"] == "unchanged" and "no pick" in hero["reason"]
    monkeypatch.setenv("STARMAGIC_API_KEY", KEY)
    frozen = project.run("build", "--frozen")
    assert frozen.exit_code == 3 and "no pick" in frozen.stderr and "hero" in frozen.stderr

    res = project.run("pick", "hero", "2")
    assert res.exit_code == 0, res.stderr
    entry = project.lock()["assets"]["hero"]
    assert entry["pick"]["take"] == 2 and entry["pick"]["sha256"] == takes[2]["sha256"]
    assert entry["pick"]["by"] and entry["pick"]["at"].endswith("Z")
    assert sha(published(project, "hero")) == takes[2]["sha256"]  # take 2's bytes at hero.png
    assert entry["files"][0]["path"] == "hero.png"
    assert plan_of(project)["hero"]["status"] == "unchanged"
    assert project.run("build", "--frozen").exit_code == 0
    assert len(sampler.ledger) == 3  # a pick costs nothing
    assert project.run("pick", "hero", "7").exit_code == 2


def test_raising_takes_makes_only_the_new_candidates(project, sampler):
    project.config(HERO.format(extra=""))
    single = plan_of(project)["hero"]["credits"]
    project.config(HERO.format(extra="    takes: 2\n"))
    assert plan_of(project)["hero"]["credits"] == pytest.approx(2 * single)  # the estimate counts each take
    assert api_build(project, sampler).exit_code == 0
    project.config(HERO.format(extra="    takes: 3\n"))
    hero = plan_of(project)["hero"]
    assert hero["status"] == "changed" and "takes 3 not made yet" in hero["reason"]
    assert api_build(project, sampler).exit_code == 0
    assert len(sampler.ledger) == 3
    assert [c["take"] for c in project.lock()["assets"]["hero"]["candidates"]] == [1, 2, 3]
    assert api_build(project, sampler, force=("hero",)).exit_code == 0
    assert len(sampler.ledger) == 6  # --force makes every take again


def test_reroll_one_cell_of_a_matrix_submits_exactly_once(project, sampler):
    from starbuild.review.decisions import reroll

    project.config(matrix_config(6))
    assert api_build(project, sampler).exit_code == 0
    assert len(sampler.ledger) == 6
    before = project.lock()["assets"]
    project_obj, specs = load_and_resolve(project.root / "starbuild.yaml")
    report = reroll(project_obj, ["icons/i3"], review_options(project, specs=specs),
                    transport=httpx.ASGITransport(app=sampler))
    assert report.exit_code == 0
    assert len(sampler.ledger) == 7  # exactly one submission
    after = project.lock()["assets"]
    assert {k: v for k, v in after.items() if k != "icons/i3"} == \
        {k: v for k, v in before.items() if k != "icons/i3"}
    cell = after["icons/i3"]
    assert [c["take"] for c in cell["candidates"]] == [0, 1] and cell["pick"]["take"] == 1
    assert sha(published(project, "icons/i3")) == cell["candidates"][1]["sha256"] != before["icons/i3"]["files"][0]["sha256"]
    assert cell["spec_hash"] == before["icons/i3"]["spec_hash"]  # the YAML did not change
    assert all(a["status"] == "unchanged" for a in plan_of(project).values())
    assert project.run("pick", "icons/i3", "0").exit_code == 0  # the first image is still there
    assert sha(published(project, "icons/i3")) == before["icons/i3"]["files"][0]["sha256"]
    res = project.run("reroll", "icons/i3", "--offline")  # a placeholder never stands in for a paid image
    assert res.exit_code == 2 and "real image" in res.stderr


def test_accept_a_prompt_typo_fix_keeps_the_image_without_paying(project, sampler):
    project.config(HERO.replace("cabin", "cabni").format(extra=""))
    assert api_build(project, sampler).exit_code == 0
    image = published(project, "hero")
    project.config(HERO.format(extra=""))
    hero = plan_of(project)["hero"]
    assert hero["status"] == "changed" and "prompt changed" in hero["reason"]
    res = project.run("accept", "hero")
    assert res.exit_code == 0, res.stderr
    assert "prompt: A cozy cabni in snowy mountains at dusk → A cozy cabin in snowy mountains at dusk" in res.stdout
    assert plan_of(project)["hero"]["status"] == "unchanged"
    entry = project.lock()["assets"]["hero"]
    (record,) = entry["accepted"]
    assert record["fields"] == ["prompt"] and record["to_spec"] == entry["spec_hash"] != record["from_spec"]
    assert record["by"] and record["at"].endswith("Z")
    assert api_build(project, sampler).exit_code == 0
    assert len(sampler.ledger) == 1 and published(project, "hero") == image  # 0 submissions after the fix


def test_accept_refuses_a_new_size_or_a_missing_image(project, sampler):
    project.config(HERO.format(extra=""))
    assert api_build(project, sampler).exit_code == 0
    project.config(HERO.replace("'1:1'", "'3:2'").format(extra=""))
    res = project.run("accept", "hero")
    assert res.exit_code == 3 and "size changed" in res.stderr
    assert "accepted" not in project.lock()["assets"]["hero"]
    assert project.run("accept", "hero", "--force").exit_code == 0
    assert plan_of(project)["hero"]["status"] == "unchanged"
    project.config(HERO.format(extra="  other:\n    prompt: a new one\n    size: '1:1'\n"))
    res = project.run("accept", "other")
    assert res.exit_code == 3 and "no image to keep" in res.stderr


TIERS = """\
version: 1
tiers:
  draft: {quality: low}
  final: {quality: high}
defaults: {tier: final}
images:
  hero:
    prompt: "A lighthouse on a cliff at dawn"
    size: '1:1'
"""


def test_promote_draft_to_final_is_one_edit_of_the_draft(project, sampler):
    from starbuild.review.decisions import promote

    project.config(TIERS)
    assert api_build(project, sampler, tier="draft").exit_code == 0
    assert [e.request["quality"] for e in sampler.ledger] == ["low"]
    draft = project.lock()["assets"]["hero"]
    assert draft["tier"] == "draft"
    hero = plan_of(project)["hero"]
    assert hero["status"] == "changed" and "quality low → high" in hero["reason"]
    project_obj, _ = load_and_resolve(project.root / "starbuild.yaml")
    report = promote(project_obj, ["hero"], options=review_options(project),
                     transport=httpx.ASGITransport(app=sampler))
    assert report.exit_code == 0
    assert len(sampler.ledger) == 2
    request = sampler.ledger[-1].request
    assert request["quality"] == "high" and len(request["image_urls"]) == 1

    async def fetch(url):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sampler)) as client:
            return (await client.get(url)).content

    reference = asyncio.run(fetch(request["image_urls"][0]))
    assert sha(reference) == draft["files"][0]["sha256"]  # the draft is the reference input
    entry = project.lock()["assets"]["hero"]
    assert entry["promoted_from"]["sha256"] == draft["files"][0]["sha256"] and entry["tier"] == "final"
    assert entry["promoted_from"]["tier"] == "draft" and entry["promoted_from"]["by"]
    assert plan_of(project)["hero"]["status"] == "unchanged"
    assert sha(published(project, "hero")) == entry["files"][0]["sha256"] != draft["files"][0]["sha256"]


def test_tier_flags_and_errors(project, sampler):
    project.config(TIERS)
    res = project.run("plan", "--tier", "draft", "--json")
    assert res.exit_code == 0 and res.json["assets"][0]["request"]["quality"] == "low"
    assert project.run("plan", "--tier", "nope").exit_code == 2
    project.config(TIERS.replace("defaults: {tier: final}", "defaults: {tier: best}"))
    res = project.run("validate")
    assert res.exit_code == 2 and "'best' is not a tier" in res.stderr and "starbuild.yaml:5" in res.stderr


def test_watch_builds_the_draft_tier_when_there_is_one(project):
    from starbuild.engine.build import BuildOptions
    from starbuild.ui.watch import Watcher

    project.config(TIERS)
    watcher = Watcher(project.root / "starbuild.yaml", BuildOptions(offline=True), say=lambda line: None)
    report = watcher.build_once()
    assert report.exit_code == 0
    entry = project.lock()["assets"]["hero"]
    assert entry["tier"] == "draft" and entry["request"]["quality"] == "low"
    watcher = Watcher(project.root / "starbuild.yaml", BuildOptions(offline=True, tier="final"), say=lambda l: None)
    assert watcher.build_once().exit_code == 0
    assert project.lock()["assets"]["hero"]["request"]["quality"] == "high"


def test_cli_reroll_of_an_asset_with_takes_adds_a_candidate_without_picking_it(project):
    project.config(HERO.format(extra="    takes: 2\n"))
    assert project.run("build", "--offline").exit_code == 0
    published_before = published(project, "hero")
    res = project.run("reroll", "hero", "--offline")
    assert res.exit_code == 0, res.stderr
    entry = project.lock()["assets"]["hero"]
    assert [c["take"] for c in entry["candidates"]] == [1, 2, 3] and "pick" not in entry
    assert published(project, "hero") == published_before
    assert "no pick (3 candidates)" in project.run("plan", "--offline").stdout
    assert project.run("pick", "hero", "3").exit_code == 0
    assert sha(published(project, "hero")) == entry["candidates"][2]["sha256"]
    assert project.run("reroll", "nothing-like-this").exit_code == 2


def test_cli_promote_offline_records_where_the_image_came_from(project):
    project.config(TIERS)
    assert project.run("build", "--offline", "--tier", "draft").exit_code == 0
    res = project.run("reroll", "hero", "--offline", "--tier", "draft")  # another draft, picked at once
    assert res.exit_code == 0, res.stderr
    draft = project.lock()["assets"]["hero"]
    assert draft["request"]["quality"] == "low" and draft["pick"]["take"] == 1
    res = project.run("promote", "hero", "--offline")
    assert res.exit_code == 0, res.stderr
    entry = project.lock()["assets"]["hero"]
    assert entry["promoted_from"]["sha256"] == draft["files"][0]["sha256"] and entry["promoted_from"]["edit"]
    assert entry["request"]["inputs"][0]["sha256"] == draft["files"][0]["sha256"]
    res = project.run("plan", "--offline", "--json")
    assert res.json["assets"][0]["status"] == "unchanged"
    assert project.run("promote", "hero", "--offline", "--to", "nope").exit_code == 2


def test_gallery_flags_assets_changed_since_the_last_commit(project):
    import subprocess

    from starbuild.config.project import load_config
    from starbuild.ui.gallery import GalleryState, create_app
    from test_gallery import TOKEN, Client

    project.config(matrix_config(2))
    assert project.run("build", "--offline").exit_code == 0
    git = ["git", "-c", "user.name=Ana", "-c", "user.email=ana@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=project.root, check=True)
    subprocess.run(git + ["add", "starbuild.lock"], cwd=project.root, check=True)
    subprocess.run(git + ["commit", "-qm", "assets"], cwd=project.root, check=True)
    project.config(matrix_config(2, prompt="icon {{ i }}{{ ' in gold' if i == 1 else '' }}"))
    assert project.run("build", "--offline").exit_code == 0
    page = Client(create_app(GalleryState(load_config(project.root / "starbuild.yaml")), token=TOKEN)).get("/").text
    cards = {chunk.split('"', 1)[0]: chunk for chunk in page.split('data-asset="')[1:]}
    assert "data-changed" in cards["icons/i1"].split(">", 1)[0]
    assert "data-changed" not in cards["icons/i0"].split(">", 1)[0]


def test_gc_keeps_every_candidate_so_a_later_pick_still_works(project):
    project.config(HERO.format(extra="    takes: 3\n"))
    assert project.run("build", "--offline").exit_code == 0
    assert project.run("pick", "hero", "3").exit_code == 0
    assert project.run("gc").exit_code == 0
    res = project.run("pick", "hero", "2")  # take 2 was never published, only kept as a candidate
    assert res.exit_code == 0, res.stderr
    second = project.lock()["assets"]["hero"]["candidates"][1]
    assert sha(published(project, "hero")) == second["sha256"]


def test_adding_takes_to_a_built_asset_keeps_its_image_as_take_0(project, sampler):
    project.config(HERO.format(extra=""))
    assert api_build(project, sampler).exit_code == 0
    image = published(project, "hero")
    project.config(HERO.format(extra="    takes: 2\n"))
    assert api_build(project, sampler).exit_code == 0
    assert len(sampler.ledger) == 3
    entry = project.lock()["assets"]["hero"]
    assert [c["take"] for c in entry["candidates"]] == [0, 1, 2]
    assert published(project, "hero") == image  # nothing changes under the user's feet until a pick
    assert "no pick (3 candidates)" in plan_of(project)["hero"]["reason"]


def test_pick_and_accept_carry_the_export_along(project, sampler):
    """output.export mirrors current after every publish, not only a build's (SPEC.md §8)."""
    extra = "    takes: 2\noutput: {export: engine}\n"
    project.config(HERO.replace("cabin", "cabni").format(extra=extra))
    assert api_build(project, sampler).exit_code == 0
    mirror = project.root / "engine"
    takes = {c["take"]: c["sha256"] for c in project.lock()["assets"]["hero"]["candidates"]}
    assert sha((mirror / "hero.png").read_bytes()) == takes[1]
    res = project.run("pick", "hero", "2")
    assert res.exit_code == 0, res.stderr
    assert sha((mirror / "hero.png").read_bytes()) == takes[2] == sha(published(project, "hero"))
    project.config(HERO.format(extra=extra))
    res = project.run("accept", "hero")
    assert res.exit_code == 0, res.stderr
    import json

    exported = json.loads((mirror / "manifest.json").read_text())
    assert exported["asset_version"] == project.lock()["asset_version"] == 3
    assert exported["assets"]["hero"]["accepted"]
