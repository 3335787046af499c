"""The plan cache (cli/fastpath.py): a replayed answer only while nothing the plan read has changed."""

from __future__ import annotations

import io
import marshal
import os
import sys
import time

import pytest
from PIL import Image

from conftest import run
from starbuild.cli import fastpath

CONFIG = """\
version: 1
images:
  "cards/{{ row.name }}":
    matrix:
      row: {file: data/cards.csv}
    prompt_file: prompts/card.j2
    inputs: [refs/base.png]
    size: "1:1"
    quality: low
"""


def _png(path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)


@pytest.fixture
def cached(project, monkeypatch, capsys):
    """A built project whose `plan` answer is cached; yields a runner of the real entry point."""
    project.config(CONFIG)
    project.write("data/cards.csv", "name,colour\nace,red\nking,blue\n")
    project.write("prompts/card.j2", "{% include 'prompts/style.j2' %} card {{ row.name }} in {{ row.colour }}")
    project.write("prompts/style.j2", "flat vector")
    _png(project.root / "refs/base.png", (10, 20, 30))
    assert project.run("build", "--offline").exit_code == 0
    monkeypatch.setattr(fastpath, "DISTRUST", 0.0)  # the time rule has its own test below
    monkeypatch.chdir(project.root)
    argv = ["-C", str(project.root), "plan", "--offline"]

    def entry() -> tuple[int, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["starbuild", *argv])
        with pytest.raises(SystemExit) as done:
            fastpath.entry()
        return done.value.code or 0, capsys.readouterr().out

    def mark() -> None:
        """Make the cached answer recognisable: a replay prints REPLAYED."""
        cache = fastpath.PlanCache(argv, str(project.root), None)
        entry_ = cache.load()
        assert entry_ is not None and entry_["fingerprint"] is not None
        entry_["stdout"] = "REPLAYED\n"
        with open(cache.path, "wb") as fh:
            marshal.dump(entry_, fh)

    code, out = entry()  # records the answer
    assert code == 0 and "2 unchanged" in out, out
    mark()
    code, out = entry()
    assert out == "REPLAYED\n"  # served from the cache while nothing changed
    return project, entry, mark


def _edit_config(p):
    p.config(CONFIG.replace("quality: low", "quality: high"))


def _edit_prompt(p):
    p.write("prompts/card.j2", "a card {{ row.name }}")


def _edit_included_template(p):
    p.write("prompts/style.j2", "watercolour")


def _edit_axis(p):
    p.write("data/cards.csv", "name,colour\nace,red\nking,green\n")


def _edit_input(p):
    _png(p.root / "refs/base.png", (99, 20, 30))


def _edit_lockfile(p):
    path = p.root / "starbuild.lock"
    path.write_text(path.read_text().replace('"cards/king"', '"cards/queen"'))


def _edit_store(p):
    objects = p.root.parent / ".cache" / "objects"
    victim = next(f for d in objects.iterdir() if d.is_dir() for f in d.iterdir())
    victim.unlink()


def _new_unrelated_file(p):
    p.write("notes.txt", "anything in the project may be read by a template")


@pytest.mark.parametrize("change", [_edit_config, _edit_prompt, _edit_included_template, _edit_axis, _edit_input,
                                    _edit_lockfile, _edit_store, _new_unrelated_file])
def test_any_change_replans(cached, change):
    project, entry, mark = cached
    change(project)
    code, out = entry()
    assert out != "REPLAYED\n" and code == 0
    assert "unchanged" in out


def test_a_change_shows_in_the_fresh_plan(cached):
    project, entry, mark = cached
    _edit_axis(project)
    code, out = entry()
    assert "changed" in out and "1 unchanged" in out, out


def test_a_fresh_answer_is_cached_again_after_a_change(cached):
    project, entry, mark = cached
    _edit_prompt(project)
    entry()
    mark()
    assert entry()[1] == "REPLAYED\n"


def test_files_modified_within_the_last_seconds_are_distrusted(project, monkeypatch, capsys):
    project.config(CONFIG.replace("prompt_file: prompts/card.j2", "prompt: x {{ row.name }}")
                   .replace("    inputs: [refs/base.png]\n", ""))
    project.write("data/cards.csv", "name,colour\nace,red\n")
    assert project.run("build", "--offline").exit_code == 0
    argv = ["-C", str(project.root), "plan"]
    cache = fastpath.PlanCache(argv, str(project.root), None)
    found = fastpath.fingerprint(cache.root, cache.cache, "assets")
    assert found is not None and time.time() - found[1] < fastpath.DISTRUST  # just written
    entry = {"format": fastpath.FORMAT, "fingerprint": found[0], "output": "assets", "stdout": "REPLAYED\n",
             "stderr": "", "code": 0}
    os.makedirs(os.path.dirname(cache.path), exist_ok=True)
    with open(cache.path, "wb") as fh:
        marshal.dump(entry, fh)
    assert cache.replay() is None  # same fingerprint, but too recent to trust
    monkeypatch.setattr(fastpath, "DISTRUST", 0.0)
    assert cache.replay() == 0 and capsys.readouterr().out == "REPLAYED\n"


def test_only_plain_plan_and_build_command_lines_are_cached():
    assert fastpath._shape(["-C", "d", "plan", "--json"]) == ("plan", "d", None)
    assert fastpath._shape(["build", "--offline", "-q"]) == ("build", None, None)
    assert fastpath._shape(["build", "--frozen"]) == ("build", None, None)  # CI's check, a no-op when it passes
    for argv in (["build", "--json"], ["build", "--force", "x"], ["build", "hero"], ["-v", "plan"], ["ls"],
                 ["plan", "--frozen"], ["plan", "--offline", "extra"], ["build", "--max-credits", "3"]):
        assert fastpath._shape(argv) is None, argv


def test_help_text_is_clicks():
    from click.testing import CliRunner

    from starbuild.cli.helptext import HELP
    from starbuild.cli.main import main

    res = CliRunner().invoke(main, ["--help"], prog_name="starbuild")
    assert res.exit_code == 0 and res.output == HELP.format(prog="starbuild"), \
        "regenerate starbuild/cli/helptext.py from `starbuild --help`"


def test_the_plan_cache_replays_a_noop_build_but_not_a_build_that_did_work(cached, monkeypatch, capsys):
    project, entry, mark = cached
    argv = ["-C", str(project.root), "build", "--offline"]

    def build() -> str:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["starbuild", *argv])
        with pytest.raises(SystemExit):
            fastpath.entry()
        return capsys.readouterr().out

    _edit_prompt(project)
    assert "2 built" in build()  # did work: nothing kept
    assert fastpath.PlanCache(argv, str(project.root), None).load() is None
    assert "2 cached" in build()  # a no-op: kept
    assert fastpath.PlanCache(argv, str(project.root), None).load()["fingerprint"] is not None


def test_the_plan_cache_can_be_turned_off(cached, monkeypatch):
    project, entry, mark = cached
    monkeypatch.setenv("STARBUILD_NO_PLAN_CACHE", "1")
    code, out = entry()
    assert code == 0 and out != "REPLAYED\n" and "2 unchanged" in out


def test_the_command_line_loads_neither_httpx_cli_nor_pydantic_plugins(project):
    """Two imports nothing in starbuild uses cost a quarter of a plan's start: httpx's own command
    line and pydantic's plugin discovery (importlib.metadata and a scan of every installed package)."""
    import subprocess

    project.config("version: 1\nimages:\n  hero:\n    prompt: a hero\n")
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print(sorted(m for m in ('importlib.metadata', 'click.testing', 'rich')"
             " if m in sys.modules), getattr(sys.modules.get('pydantic.plugin._loader'), '__file__', None),"
             " file=sys.stderr))\n"
             "sys.argv = ['starbuild', '-C', sys.argv[1], 'plan', '--offline']\n"
             "from starbuild.cli.fastpath import entry\nentry()\n")
    env = {**os.environ, "STARBUILD_NO_PLAN_CACHE": "1", "STARBUILD_CACHE_DIR": str(project.root / ".c")}
    res = subprocess.run([sys.executable, "-c", probe, str(project.root)], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "[] None"
