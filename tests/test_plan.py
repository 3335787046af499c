"""The planner: hashes, matrices, model rules, plan --json, schema and the examples."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import REPO, run
from starbuild.models import GPT2_RATIOS, RESOLUTIONS, check_request, dimensions, ratio_dimensions
from starbuild.plan.spec import GenerationSpec

BASE = """\
version: 1
defaults:
  model: gpt-image-2
  quality: medium
vars:
  style: flat vector
images:
  hero:
    prompt: "A cabin at dusk, {{ style }}"
    size: "16:9"
    resolution: 2K
  "icons/{{ item }}":
    matrix:
      item: [sword, shield]
    prompt: "An icon of a {{ item }}, {{ style }}"
"""


def test_plan_hash_ignores_rename_reorder_and_comments(project):
    project.config(BASE)
    before = project.hashes()
    project.config("""\
        # a comment
        version: 1
        vars:
          style: flat vector   # same value
        images:
          "pictures/{{ item }}":   # renamed
            prompt: "An icon of a {{ item }}, {{ style }}"
            matrix:
              item: [shield, sword]
          main-hero:
            resolution: 2K
            size: "16:9"
            prompt: "A cabin at dusk, {{ style }}"
        defaults:
          quality: medium
          model: gpt-image-2
        """)
    after = project.hashes()
    assert sorted(before.values()) == sorted(after.values())
    assert after["main-hero"] == before["hero"]
    assert after["pictures/sword"] == before["icons/sword"]


def test_plan_one_prompt_word_moves_exactly_one_hash(project):
    project.config(BASE)
    before = project.hashes()
    project.config(BASE.replace("A cabin at dusk", "A cabin at dawn"))
    after = project.hashes()
    moved = [n for n in before if before[n] != after[n]]
    assert moved == ["hero"]


def test_plan_default_values_written_out_do_not_move_hash(project):
    project.config("version: 1\nimages:\n  a: {prompt: x}\n")
    before = project.hashes()
    project.config("version: 1\nimages:\n  a: {prompt: x, quality: medium, size: auto, n: 1, take: 0, background: opaque}\n")
    assert project.hashes() == before


@pytest.mark.parametrize("field,value", [("quality", "high"), ("size", "'1:1'"), ("n", "2"), ("take", "1"),
                                         ("background", "transparent"), ("model", "gpt-image-1.5")])
def test_plan_each_hashed_field_moves_hash(project, field, value):
    project.config("version: 1\nimages:\n  a: {prompt: x, size: '1:1'}\n")
    before = project.hashes()["a"]
    project.config(f"version: 1\nimages:\n  a: {{prompt: x, size: '1:1', {field}: {value}}}\n".replace(
        "size: '1:1', size: '1:1'", "size: '1:1'"))
    if field == "size":  # same value: must not move
        assert project.hashes()["a"] == before
    else:
        assert project.hashes()["a"] != before


def test_spec_hash_golden():
    spec = GenerationSpec.effective(name="hero", model="gpt-image-2", prompt="A cozy cabin", size="16:9",
                                    resolution="2K", quality=None, n=None, background=None, take=None)
    # Pinned: if this changes, every user's lockfile goes stale. Bump HASH_FORMAT on purpose only.
    assert spec.spec_hash() == "7fa4aff0efea8ba5f484c984c8f8933d3784ad3ccfd994d4afc15229085d6a1a"
    canonical = ('{"background":"opaque","format":1,"inputs":[],"mask":null,"model":"gpt-image-2",'
                 '"n":1,"placeholder":false,"prompt":"A cozy cabin","quality":"medium","resolution":"2K",'
                 '"size":"16:9","take":0}')
    assert spec.spec_hash() == hashlib.sha256(canonical.encode()).hexdigest()
    assert spec.spec_hash(placeholder=True) != spec.spec_hash()


def test_matrix_include_exclude_github_semantics(project):
    project.config("""\
        version: 1
        images:
          "i/{{ fruit }}-{{ animal | default('any') }}{{ '-' ~ color if color is defined else '' }}{{ '-' ~ shape if shape is defined else '' }}":
            matrix:
              fruit: [apple, pear]
              animal: [cat, dog]
              exclude:
                - {fruit: pear, animal: dog}
              include:
                - {color: green}
                - {color: pink, animal: cat}
                - {fruit: apple, shape: circle}
                - {fruit: banana}
                - {fruit: banana, animal: cat}
            prompt: "{{ fruit }} {{ animal | default('animal') }}"
        """)
    res = project.run("plan", "--json")
    assert res.exit_code == 0, res.stderr
    names = [a["name"] for a in res.json["assets"]]
    # GitHub's documented example, minus the excluded cell: includes merge where they do not
    # overwrite an original value, else add a cell.
    assert names == ["i/apple-cat-pink-circle", "i/apple-dog-green-circle", "i/pear-cat-pink",
                     "i/banana-any", "i/banana-cat"]


def test_matrix_csv_json_yaml_axes(project):
    project.write("data/p.csv", "sku,title\nt1,tent\nb2,boots\n")
    project.write("data/c.json", json.dumps([{"id": "red"}, {"id": "blue"}]))
    project.write("data/s.yaml", "- small\n- large\n")
    project.config("""\
        version: 1
        images:
          "p/{{ p.sku }}":
            matrix: {p: {file: data/p.csv}}
            prompt: "photo of {{ p.title }}"
          "c/{{ c.id }}-{{ s }}":
            matrix:
              c: {file: data/c.json}
              s: {file: data/s.yaml}
            prompt: "{{ c.id }} {{ s }}"
        """)
    res = project.run("plan", "--json")
    assert res.exit_code == 0, res.stderr
    assets = {a["name"]: a for a in res.json["assets"]}
    assert list(assets) == ["p/t1", "p/b2", "c/red-small", "c/red-large", "c/blue-small", "c/blue-large"]
    assert assets["p/b2"]["request"]["prompt"] == "photo of boots"


def test_matrix_csv_change_moves_only_that_row(project):
    project.write("data/p.csv", "sku,title\nt1,tent\nb2,boots\n")
    project.config("version: 1\nimages:\n  'p/{{ p.sku }}':\n    matrix: {p: {file: data/p.csv}}\n    prompt: '{{ p.title }}'\n")
    before = project.hashes()
    project.write("data/p.csv", "sku,title\nt1,tent\nb2,hiking boots\n")
    after = project.hashes()
    assert before["p/t1"] == after["p/t1"] and before["p/b2"] != after["p/b2"]


def test_plan_json_shape_and_credits(project):
    project.config(BASE)
    res = project.run("plan", "--json")
    data = res.json
    assert set(data["assets"][0]) >= {"name", "status", "reason", "spec_hash", "model", "request", "credits",
                                     "files", "error"}
    assert [a["status"] for a in data["assets"]] == ["new"] * 3
    hero = data["assets"][0]
    assert hero["request"] == {"model": "gpt-image-2", "prompt": "A cabin at dusk, flat vector", "size": "16:9",
                               "resolution": "2K", "quality": "medium"}
    assert hero["credits"] == 2.5
    assert data["summary"]["total"] == 3
    assert data["summary"]["credits"] == pytest.approx(sum(a["credits"] for a in data["assets"]))


def test_plan_text_lists_assets(project):
    project.config(BASE)
    res = project.run("plan")
    assert res.exit_code == 0
    assert "new" in res.stdout and "icons/sword" in res.stdout and "estimated" in res.stdout


def test_plan_reports_reasons_after_build(project):
    project.config(BASE)
    assert project.run("build", "--offline").exit_code == 0
    project.config(BASE.replace('size: "16:9"', 'size: "1:1"').replace("[sword, shield]", "[sword]")
                   .replace("An icon of", "A drawing of"))
    data = project.run("plan", "--json", "--offline").json
    by = {a["name"]: a for a in data["assets"]}
    assert by["hero"]["status"] == "changed" and "size 16:9 → 1:1" in by["hero"]["reason"]
    assert by["icons/sword"]["reason"] == "prompt changed"
    assert by["icons/shield"]["status"] == "removed"


@pytest.mark.parametrize("ratio", GPT2_RATIOS)
@pytest.mark.parametrize("res", RESOLUTIONS)
def test_models_every_ratio_accepted_and_sized(ratio, res):
    assert check_request({"model": "gpt-image-2", "prompt": "x", "size": ratio, "resolution": res}) == {}
    w, h = ratio_dimensions(ratio, res)
    a, b = (int(x) for x in ratio.split(":"))
    assert w % 16 == 0 and h % 16 == 0 and max(w, h) <= 3840
    assert abs(w / h - a / b) < 0.03


TABLE = {"1:1": [(1024, 1024), (2048, 2048), (2880, 2880)], "2:1": [(1456, 720), (2896, 1456), (3840, 1920)],
         "3:1": [(1776, 592), (3552, 1184), (3840, 1280)], "3:2": [(1248, 832), (2512, 1680), (3520, 2352)],
         "4:3": [(1184, 880), (2368, 1776), (3312, 2480)], "5:4": [(1152, 912), (2288, 1824), (3216, 2576)],
         "16:9": [(1360, 768), (2736, 1536), (3840, 2160)], "21:9": [(1568, 672), (3136, 1344), (3840, 1632)]}


def test_models_ratio_table_matches_documentation():
    for ratio, cells in TABLE.items():
        for res, dims in zip(RESOLUTIONS, cells):
            assert ratio_dimensions(ratio, res) == dims
            a, b = ratio.split(":")
            if a != b:
                assert ratio_dimensions(f"{b}:{a}", res) == dims[::-1]


@pytest.mark.parametrize("body,field", [
    ({"model": "gpt-image-2", "prompt": "x", "size": "1024x1536"}, None),
    ({"model": "gpt-image-2", "prompt": "x", "size": "1024×1536"}, None),
    ({"model": "gpt-image-2", "prompt": "x", "size": "3840x1280"}, None),
    ({"model": "gpt-image-2", "prompt": "x", "size": "3856x1280"}, "size"),
    ({"model": "gpt-image-2", "prompt": "x", "size": "auto"}, None),
    ({"model": "gpt-image-2", "prompt": "x", "size": "auto", "resolution": "2K"}, "resolution"),
    ({"model": "gpt-image-2", "prompt": "x", "size": "1:1", "resolution": "2k"}, None),
    ({"model": "gpt-image-2", "prompt": "x" * 32000}, None),
    ({"model": "gpt-image-2", "prompt": "x" * 32001}, "prompt"),
    ({"model": "gpt-image-2", "prompt": "x", "n": 10}, None),
    ({"model": "gpt-image-2", "prompt": "x", "n": 11}, "n"),
    ({"model": "gpt-image-2", "prompt": "x", "image_urls": ["u"] * 16}, None),
    ({"model": "gpt-image-2", "prompt": "x", "image_urls": ["u"] * 17}, "image_urls"),
    ({"model": "gpt-image-2", "prompt": "x", "image_urls": ["u"], "mask_url": "m"}, None),
    ({"model": "gpt-image-2", "prompt": "x", "mask_url": "m"}, "mask_url"),
    ({"model": "gpt-image-2", "prompt": "x", "background": "transparent"}, None),
    ({"model": "gpt-image-2", "prompt": "x", "quality": "ultra"}, "quality"),
    ({"model": "gpt-image-1.5", "prompt": "x", "size": "1536x1024"}, None),
    ({"model": "gpt-image-1.5", "prompt": "x", "size": "2:3"}, None),
    ({"model": "gpt-image-1.5", "prompt": "x", "size": "16:9"}, "size"),
    ({"model": "gpt-image-1.5", "prompt": "x", "size": "auto"}, "size"),
    ({"model": "gpt-image-1.5", "prompt": "x", "n": 1}, None),
    ({"model": "gpt-image-1.5", "prompt": "x", "n": 2}, "n"),
    ({"model": "gpt-image-1.5", "prompt": "x", "background": "opaque"}, "background"),
    ({"model": "gpt-image-1.5", "prompt": "x", "image_urls": ["u"], "mask_url": "m"}, "mask_url"),
    ({"model": "gpt-image-1.5", "prompt": "x" * 8000}, None),
    ({"model": "gpt-image-1.5", "prompt": "x" * 8001}, "prompt"),
    ({"model": "gpt-image-3", "prompt": "x"}, "model"),
])
def test_models_rules_both_ways(body, field):
    errors = check_request(body)
    assert (set(errors) == {field}) if field else errors == {}, errors


def test_models_dimensions_defaults():
    assert dimensions("gpt-image-2", "auto") is None
    assert dimensions("gpt-image-2", "16:9") == (1360, 768)
    assert dimensions("gpt-image-1.5", None) == (1024, 1024)
    assert dimensions("gpt-image-1.5", "2:3") == (1024, 1536)


def test_schema_file_in_sync():
    res = run(["schema"])
    assert res.exit_code == 0
    on_disk = (REPO / "schemas" / "starbuild.schema.json").read_text()
    assert on_disk == res.stdout, "run `starbuild schema > schemas/starbuild.schema.json`"


@pytest.mark.parametrize("example", ["game-icons", "website"])
def test_schema_accepts_examples_and_rejects_typos(example):
    import jsonschema
    import yaml

    schema = json.loads((REPO / "schemas" / "starbuild.schema.json").read_text())
    data = yaml.safe_load((REPO / "examples" / example / "starbuild.yaml").read_text())
    jsonschema.validate(data, schema)
    data["images"][next(iter(data["images"]))]["promt"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_examples_plan_json(tmp_path, monkeypatch):
    from conftest import copy_example

    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path))
    examples = tmp_path / "examples"  # clean copies: the examples may have been built in place
    for name in ("game-icons", "website"):
        copy_example(name, examples / name)
    icons = run(["-C", str(examples / "game-icons"), "plan", "--json"]).json
    names = [a["name"] for a in icons["assets"]]
    assert names == ["icons/sword-common", "icons/sword-rare", "icons/shield-common", "icons/shield-rare",
                     "icons/potion-common", "icons/bow-common", "icons/bow-rare", "icons/crown-legendary",
                     "pixel/coin", "ui/background"]
    assert "silver border" in icons["assets"][1]["request"]["prompt"]
    assert all(a["spec_hash"] and a["credits"] > 0 and a["request"]["model"] for a in icons["assets"])
    site = run(["-C", str(examples / "website"), "plan", "--json"]).json
    by = {a["name"]: a for a in site["assets"]}
    assert set(by) == {"hero/desktop", "hero/tablet", "hero/mobile", "products/tent-2p", "products/pack-45",
                       "products/boot-m", "products/stove-mini", "og-card"}
    assert by["hero/mobile"]["request"]["size"] == "9:16"
    assert by["og-card"]["model"] == "gpt-image-1.5"
    assert "walnut brown leather hiking boots" in by["products/boot-m"]["request"]["prompt"]


def test_init_writes_a_valid_starter(project):
    res = run(["init", str(project.root)])
    assert res.exit_code == 0, res.stderr
    assert ".starbuild/" in (project.root / ".gitignore").read_text()
    assert project.run("validate").exit_code == 0
    again = run(["init", str(project.root)])
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_plan_large_matrix_prints_count(project):
    project.config("""\
        version: 1
        images:
          "a/{{ x }}-{{ y }}":
            matrix: {x: %s, y: %s}
            prompt: "{{ x }} {{ y }}"
        """ % (list(range(101)), list(range(100))))
    res = project.run("plan")
    assert res.exit_code == 0
    assert "10100 assets" in res.stdout
