"""Hostile input gets a located error, exit 2, quickly: YAML bombs, deep nesting, control
characters, runaway templates, FIFOs, odd sizes and rates, names that collide on disk, and
malformed lockfiles, manifests and journals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import api_build

HEAD = "version: 1\nimages:\n"


def _refused(res, *words: str, line: int | None = None) -> None:
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    assert res.stderr.startswith("error: "), res.stderr
    for word in words:
        assert word in res.stderr, (word, res.stderr)
    if line is not None:
        assert f"starbuild.yaml:{line}:" in res.stderr, res.stderr


def _cli(root: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """The CLI in a child process, so a hang fails the test instead of stalling the suite."""
    env = {**os.environ, "STARBUILD_CACHE_DIR": str(root.parent / ".cache")}
    return subprocess.run([sys.executable, "-m", "starbuild", "-C", str(root), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _bomb(levels: int = 9, anchor: str = "a") -> str:
    lines = [f"  {anchor}0: &{anchor}0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"  {anchor}{i}: &{anchor}{i} [" + ", ".join([f"*{anchor}{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


# --- YAML ---------------------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_quickly(project):
    project.config("version: 1\nvars:\n" + _bomb() + "images:\n  a: {prompt: '{{ a9 }}'}\n")
    started = time.monotonic()
    for command in ("validate", "plan"):
        _refused(project.run(command), "alias", line=None)
    assert time.monotonic() - started < 5


def test_yaml_alias_bomb_in_an_axis_file_is_refused(project):
    project.write("data/axis.yaml", "anchors:\n" + _bomb() + "list: *a9\n")
    project.write("data/axis.yaml", "- &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"- &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10)))
    project.config(HEAD + "  'a{{ v | length }}':\n    matrix:\n      v: {file: data/axis.yaml}\n    prompt: x\n")
    started = time.monotonic()
    res = project.run("validate")
    _refused(res, "data/axis.yaml", "alias", line=5)
    assert time.monotonic() - started < 5


def test_an_axis_shared_through_an_alias_is_not_a_bomb(project):
    items = "[" + ", ".join(f"item{i}" for i in range(2000)) + "]"
    project.config("version: 1\nvars:\n  items: &items " + items + "\nimages:\n" + "".join(
        f"  'g{j}/{{{{ it }}}}':\n    prompt: '{{{{ it }}}}'\n    matrix: {{it: *items}}\n" for j in range(50)))
    res = project.run("validate")
    assert res.exit_code == 0, res.stderr[:500]
    assert "(100000 assets)" in res.stdout


@pytest.mark.parametrize("text", ["  a: &a [*a]\n", "  a: &a\n    b: *a\n"], ids=["sequence", "mapping"])
def test_yaml_recursive_alias_is_refused(project, text):
    project.config("version: 1\nvars:\n" + text + "images:\n  x: {prompt: y}\n")
    _refused(project.run("validate"), "recursive alias", line=3)


@pytest.mark.parametrize("style", ["flow", "block"])
def test_yaml_deep_nesting_is_refused(project, style):
    if style == "flow":
        deep = "[" * 5000 + "]" * 5000
    else:
        deep = "\n" + "".join("  " * (i + 3) + f"k{i}:\n" for i in range(200)) + "  " * 203 + "v"
    project.config(f"version: 1\nvars:\n  deep: {deep}\nimages:\n  x: {{prompt: y}}\n")
    _refused(project.run("validate"), "nesting deeper than")


def test_json_axis_file_nested_deeply_is_refused(project):
    project.write("data/axis.json", "[" * 100_000 + "]" * 100_000)
    project.config(HEAD + "  'a{{ v }}':\n    matrix:\n      v: {file: data/axis.json}\n    prompt: x\n")
    _refused(project.run("validate"), "data/axis.json", "nested too deeply", line=5)


def test_yaml_control_character_is_located(project):
    project.root.mkdir(parents=True)
    (project.root / "starbuild.yaml").write_text(HEAD + "  a:\n    prompt: \"x\x01y\"\n")
    _refused(project.run("validate"), "U+0001", line=4)


def test_control_characters_in_a_prompt_are_refused(project):
    project.config(HEAD + '  a:\n    prompt: "clear \\e[2J the screen"\n')
    _refused(project.run("validate"), "images.a.prompt", "U+001B", line=4)
    project.config(HEAD + '  a:\n    prompt: "{{ v }}"\n    vars: {v: "bell \\a"}\n')
    _refused(project.run("build", "--offline"), "U+0007")
    assert not (project.root / "starbuild.lock").exists()


def test_error_messages_never_print_control_characters(project):
    project.root.mkdir(parents=True)
    (project.root / "starbuild.yaml").write_text(HEAD + '  "a\\e]0;owned\\a":\n    prompt: x\n')
    res = project.run("validate")
    _refused(res, "not a valid asset name")
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr
    assert "\\e]0;owned" in res.stderr


# --- templates --------------------------------------------------------------------------------


@pytest.mark.parametrize("template,words", [
    ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "loop steps"),
    ("{% set xs = range(100000) | list %}{% for a in xs %}{% for b in xs %}x{% endfor %}{% endfor %}",
     "loop steps"),
    ("{{ 'x' * 100000000 }}", "would build 100,000,000"),
    ("{{ 9 ** 999999999 }}", "too large"),
    ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nested too deeply"),
], ids=["nested-range", "nested-list", "repeat", "power", "deep-expression"])
def test_runaway_template_ends_with_a_located_error(project, template, words):
    project.write("prompts/p.j2", template)
    project.config(HEAD + "  a:\n    prompt_file: prompts/p.j2\n")
    started = time.monotonic()
    res = _cli(project.root, "validate")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "starbuild.yaml:4:" in res.stderr, res.stderr
    assert words in res.stderr, res.stderr
    assert time.monotonic() - started < 15


# --- inputs must be regular files ---------------------------------------------------------------


FIFO_CASES = {
    "prompt_file": ("prompts/p.j2", HEAD + "  a:\n    prompt_file: prompts/p.j2\n"),
    "input": ("refs/in.png", HEAD + "  a:\n    prompt: x\n    inputs: [refs/in.png]\n"),
    "axis file": ("data/axis.csv", HEAD + "  'a{{ p.k }}':\n    matrix:\n      p: {file: data/axis.csv}\n"
                                          "    prompt: x\n"),
    "included template": ("prompts/inc.j2", HEAD + "  a:\n    prompt: \"{% include 'prompts/inc.j2' %}\"\n"),
}


@pytest.mark.parametrize("case", list(FIFO_CASES))
def test_fifo_inputs_are_refused_not_waited_on(project, case):
    rel, config = FIFO_CASES[case]
    project.config(config)
    (project.root / rel).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(project.root / rel)
    res = _cli(project.root, "validate", timeout=30)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "FIFO" in res.stderr, res.stderr


def test_config_that_is_a_fifo_is_refused(project):
    project.root.mkdir(parents=True)
    os.mkfifo(project.root / "starbuild.yaml")
    res = _cli(project.root, "validate", timeout=30)
    assert res.returncode == 2 and "FIFO" in res.stderr, res.stderr


# --- sizes and rates ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [" 1024x1024", "1024x1024 ", "1024 x 1024", "01024x1024", "1024x01024",
                                  "\uff11\uff10\uff12\uff14x1024", "\u0661\u0660\u0662\u0664x1024"])
def test_sizes_with_spaces_zeros_or_foreign_digits_are_refused(project, size):
    project.config(HEAD + f"  a:\n    prompt: x\n    size: {json.dumps(size)}\n")
    for command in ("validate", "plan"):
        _refused(project.run(command), "images.a.size", line=5)
    assert not (project.root / "starbuild.lock").exists()


def test_templated_size_is_checked_after_rendering(project, emulator):
    project.config(HEAD + "  'a{{ s }}':\n    matrix: {s: ['0640', '1024']}\n    prompt: x\n"
                          "    size: '{{ s }}x1024'\n")
    _refused(project.run("build", "--offline"), "'0640x1024'")
    assert not (project.root / "starbuild.lock").exists()


@pytest.mark.parametrize("rate,words", [("0/min", "no submission"), ("0.0/s", "no submission"),
                                        ("0.001/min", "1/hour"),
                                        ("\u0663/min", "N/min"), ("\uff13/min", "N/min")])
def test_rate_limits_that_never_or_hardly_submit_are_refused(project, rate, words):
    project.config(f"version: 1\nprovider:\n  rate_limit: {json.dumps(rate)}\nimages:\n  a: {{prompt: x}}\n")
    _refused(project.run("validate"), "provider.rate_limit", words, line=3)


def test_slowest_allowed_rate_is_accepted(project):
    project.config("version: 1\nprovider:\n  rate_limit: 1/hour\nimages:\n  a: {prompt: x}\n")
    assert project.run("validate").exit_code == 0


# --- names that collide on disk -----------------------------------------------------------------


COLLISIONS = {
    "n beside NAME-1": (HEAD + "  x:\n    prompt: a\n    n: 2\n  x-1:\n    prompt: b\n", ["'x-1'", "'x'"]),
    "NAME-1 before n": (HEAD + "  x-2:\n    prompt: b\n  x:\n    prompt: a\n    n: 2\n", ["'x'", "'x-2'"]),
    "a.png beside a.png/b": (HEAD + "  a.png:\n    prompt: a\n  a.png/b:\n    prompt: b\n", ["'a.png'", "folder"]),
    "a beside a.png/b": (HEAD + "  a:\n    prompt: a\n  a.png/b:\n    prompt: b\n", ["a.png", "folder"]),
    "case only": (HEAD + "  Hero:\n    prompt: a\n  hero:\n    prompt: b\n", ["'hero'", "'Hero'", "case"]),
    "matrix cells": (HEAD + "  'i/{{ k }}':\n    matrix: {k: [Sword, sword]}\n    prompt: a\n    n: 2\n",
                     ["i/sword-1", "'i/Sword'"]),
    "manifest folder": (HEAD + "  manifest.json/x:\n    prompt: a\n", ["manifest.json"]),
    "long component": (HEAD + f"  {'a' * 252}:\n    prompt: a\n", ["255 bytes"]),
    "long folder": (HEAD + f"  {'d' * 256}/x:\n    prompt: a\n", ["255 bytes"]),
}


@pytest.mark.parametrize("case", list(COLLISIONS))
def test_names_that_collide_on_disk_are_config_errors(project, case):
    text, words = COLLISIONS[case]
    project.config(text)
    for command in ("validate", "plan", "build"):
        _refused(project.run(command, *(["--offline"] if command == "build" else [])), *words)
    assert not (project.root / "starbuild.lock").exists() and not (project.root / "assets").exists()


def test_names_that_only_look_alike_are_accepted(project):
    project.config(HEAD + "  icons:\n    prompt: a\n  icons/sword:\n    prompt: b\n  x:\n    prompt: c\n"
                          "    n: 2\n  x-3:\n    prompt: d\n  " + "a" * 250 + ":\n    prompt: e\n")
    res = project.run("build", "--offline")
    assert res.exit_code == 0, res.stderr
    assert (project.root / "assets/current/x-1.png").is_file() and (project.root / "assets/current/x-3.png").is_file()


# --- malformed lockfiles, manifests and journals -------------------------------------------------


def _built(project) -> dict:
    project.config(HEAD + "  hero:\n    prompt: a lighthouse\n    size: '1:1'\n  b:\n    prompt: x\n    size: '1:1'\n")
    res = project.run("build", "--offline")
    assert res.exit_code == 0, res.stderr
    return project.lock()


LOCK_MUTATIONS = {
    "sha256 traversal": (("assets", "hero", "files", 0, "sha256"), "../../proc/self/environ"),
    "path traversal": (("assets", "hero", "files", 0, "path"), "../../outside.png"),
    "absolute path": (("assets", "hero", "files", 0, "path"), "/tmp/x.png"),
    "files not a list": (("assets", "hero", "files"), "hero.png"),
    "file not a mapping": (("assets", "hero", "files", 0), 7),
    "width is text": (("assets", "hero", "files", 0, "width"), "wide"),
    "credits NaN": (("assets", "hero", "credits"), float("nan")),
    "credits text": (("assets", "hero", "credits"), "lots"),
    "placeholder text": (("assets", "hero", "placeholder"), "yes"),
    "spec_hash number": (("assets", "hero", "spec_hash"), 12),
    "entry not a mapping": (("assets", "hero"), [1, 2]),
    "asset_version text": (("asset_version",), "two"),
    "asset name traversal": (("assets", "../../evil"), {"files": []}),
}


def _mutate(data: dict, path: tuple, value) -> None:
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


@pytest.mark.parametrize("case", list(LOCK_MUTATIONS))
def test_malformed_lockfile_values_are_located_in_every_command(project, case):
    lock = _built(project)
    path, value = LOCK_MUTATIONS[case]
    _mutate(lock, path, value)
    (project.root / "starbuild.lock").write_text(json.dumps(lock, indent=2, sort_keys=True))
    field = ".".join(str(p) for p in path)
    before = sorted(p.name for p in (project.root / "assets").iterdir())
    for command in (["build", "--offline"], ["plan"], ["plan", "--json"], ["ls"], ["ls", "--json"], ["gc"]):
        res = project.run(*command)
        _refused(res, "starbuild.lock:", field)
        assert res.stdout == "", (command, res.stdout)
    assert sorted(p.name for p in (project.root / "assets").iterdir()) == before
    assert not (project.root.parent / "outside.png").exists()


def test_lockfile_errors_name_the_line(project):
    lock = _built(project)
    lock["assets"]["hero"]["files"][0]["sha256"] = "../../proc/self/environ"
    text = json.dumps(lock, indent=2, sort_keys=True)
    (project.root / "starbuild.lock").write_text(text)
    line = text[:text.index("../../proc")].count("\n") + 1
    res = project.run("plan")
    _refused(res, f"starbuild.lock:{line}: assets.hero.files.0.sha256")


def test_crafted_lockfile_never_publishes_a_private_file(project, tmp_path):
    lock = _built(project)
    secret = tmp_path / "secret.txt"
    secret.write_text("PRIVATE-CONTENT")
    rel = os.path.relpath(secret, tmp_path / ".cache" / "objects" / "ab")
    lock["assets"]["hero"]["files"][0]["sha256"] = rel
    (project.root / "starbuild.lock").write_text(json.dumps(lock, indent=2, sort_keys=True))
    project.write("starbuild.yaml", HEAD + "  hero:\n    prompt: a lighthouse\n    size: '1:1'\n  b:\n"
                                          "    prompt: y\n    size: '1:1'\n")
    res = project.run("build", "--offline")
    _refused(res, "sha256")
    for path in (project.root / "assets").rglob("*"):
        if path.is_file():
            assert b"PRIVATE-CONTENT" not in path.read_bytes()


def test_store_and_publish_refuse_crafted_values_where_they_are_used(tmp_path):
    from starbuild.errors import StoreError
    from starbuild.store.objects import AssetDir, ObjectStore

    store = ObjectStore(tmp_path / "cache")
    with pytest.raises(StoreError):
        store.path("../../proc/self/environ")
    src = tmp_path / "src.png"
    src.write_bytes(b"x")
    with pytest.raises(StoreError):
        AssetDir(tmp_path / "assets").publish(1, [("../escaped.png", src)], {"assets": {}})
    assert not (tmp_path / "escaped.png").exists()


MANIFEST_MUTATIONS = {
    "not JSON": "{broken",
    "NaN credits": lambda m: m["assets"]["hero"].__setitem__("credits", float("nan")),
    "sha256 traversal": lambda m: m["assets"]["hero"]["files"][0].__setitem__("sha256", "../../etc/passwd"),
    "assets a list": lambda m: m.__setitem__("assets", [1]),
    "not a mapping": "[1, 2]",
}


@pytest.mark.parametrize("case", list(MANIFEST_MUTATIONS))
def test_malformed_manifest_is_located_in_versions_rollback_and_gc(project, case):
    _built(project)
    project.config(HEAD + "  hero:\n    prompt: a lighthouse at night\n    size: '1:1'\n")
    assert project.run("build", "--offline").exit_code == 0
    manifest = project.root / "assets" / "v0001" / "manifest.json"
    mutation = MANIFEST_MUTATIONS[case]
    if isinstance(mutation, str):
        text = mutation
    else:
        data = json.loads(manifest.read_text())
        mutation(data)
        text = json.dumps(data, indent=2, sort_keys=True)
    os.chmod(manifest, 0o644)
    manifest.write_text(text)
    for command in (["versions"], ["rollback", "1"], ["gc"]):
        _refused(project.run(*command), "assets/v0001/manifest.json")
    assert os.readlink(project.root / "assets" / "current") == "v0002"


def test_gallery_shows_a_malformed_lockfile_as_an_error(project):
    import asyncio

    import httpx

    from starbuild.config.project import load_config
    from starbuild.ui.gallery import GalleryState, create_app

    lock = _built(project)
    lock["assets"]["hero"]["credits"] = "lots"
    (project.root / "starbuild.lock").write_text(json.dumps(lock))
    manifest = project.root / "assets" / "v0001" / "manifest.json"
    os.chmod(manifest, 0o644)
    manifest.write_text('{"assets": {"hero": {"files": "x"}}}')
    app = create_app(GalleryState(load_config(project.root / "starbuild.yaml")), project.root.parent / ".cache")

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            return await c.get(path)

    index, page = asyncio.run(get("/")), asyncio.run(get("/asset/hero"))
    assert index.status_code == 200 and "starbuild.lock" in index.text and "assets.hero.credits" in index.text
    assert page.status_code == 200 and "manifest.json" in page.text and "assets.hero.files" in page.text


def test_garbage_journal_is_set_aside_with_a_warning(project, tmp_path):
    _built(project)
    journal = tmp_path / ".cache" / "journal"
    for part in ("inflight", "stored"):
        db = journal / part / "cache.db"
        assert db.is_file()
        db.write_bytes(b"this is not a database" * 100)
    project.config(HEAD + "  hero:\n    prompt: a lighthouse in fog\n    size: '1:1'\n")
    res = _cli(project.root, "build", "--offline")
    assert res.returncode == 0, res.stderr
    assert "set aside" in res.stderr and "Traceback" not in res.stderr
    assert len(list(journal.glob("inflight.corrupt-*"))) == 1


def test_journal_path_that_is_a_file_is_set_aside(project, tmp_path):
    project.config(HEAD + "  hero:\n    prompt: a lighthouse\n    size: '1:1'\n")
    (tmp_path / ".cache").mkdir(parents=True)
    (tmp_path / ".cache" / "journal").write_text("garbage")
    res = _cli(project.root, "build", "--offline")
    assert res.returncode == 0, res.stderr
    assert "set aside" in res.stderr


def test_build_against_emulator_reads_back_its_own_lockfile(project, emulator):
    """The checks accept everything starbuild itself writes, including n > 1 and inputs."""
    project.write("refs/in.png", "")
    from PIL import Image

    Image.new("RGB", (64, 64), (1, 2, 3)).save(project.root / "refs" / "in.png")
    project.config(HEAD + "  multi:\n    prompt: x\n    n: 3\n    size: '1:1'\n    quality: low\n"
                          "  edit:\n    prompt: y\n    inputs: [refs/in.png, '@multi']\n    size: '1:1'\n"
                          "    quality: low\n")
    report = api_build(project, emulator)
    assert report.exit_code == 0
    for command in (["plan"], ["ls"], ["versions"], ["gc"]):
        res = project.run(*command)
        assert res.exit_code == 0, (command, res.stderr)
    assert project.run("plan", "--json").json["summary"]["unchanged"] == 2
