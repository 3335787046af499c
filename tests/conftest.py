"""Shared helpers: a project in tmp_path and the CLI run in-process."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from starbuild.cli.main import main

REPO = Path(__file__).resolve().parent.parent

# What the environment of a CI runner or a developer's shell says about the remote cache and the
# branch: each test starts without it (a test that needs one sets it), so the suite means the
# same on a laptop and in CI (where CI=true makes `mode: auto` read-only off main).
_AMBIENT = ("CI", "GITHUB_HEAD_REF", "GITHUB_REF_NAME", "GITHUB_ACTIONS", "STARBUILD_REMOTE_CACHE",
            "STARBUILD_CACHE_NAMESPACE", "STARMAGIC_BASE_URL", "STARMAGIC_FILES_URL", "STARMAGIC_API_KEY",
            "STARBUILD_CACHE_DIR", "STARBUILD_NO_PLAN_CACHE", "AWS_PROFILE", "AWS_ENDPOINT_URL")


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch):
    for name in _AMBIENT:
        monkeypatch.delenv(name, raising=False)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout)


def run(args: list[str], env: dict | None = None) -> Result:
    """Run the CLI in-process, as a user would from a shell."""
    runner = CliRunner()
    res = runner.invoke(main, args, env=env, catch_exceptions=False)
    return Result(res.exit_code, res.stdout, res.stderr)


class Project:
    """A starbuild project folder in tmp_path."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def config(self, text: str) -> Path:
        return self.write("starbuild.yaml", text)

    def run(self, *args: str, env: dict | None = None) -> Result:
        return run(["-C", str(self.root), *args], env=env)

    def lock(self) -> dict:
        return json.loads((self.root / "starbuild.lock").read_text())

    def hashes(self) -> dict[str, str]:
        res = self.run("plan", "--json")
        assert res.exit_code == 0, res.stderr
        return {a["name"]: a["spec_hash"] for a in res.json["assets"]}


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Project:
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.delenv("STARMAGIC_API_KEY", raising=False)
    return Project(tmp_path / "proj")


KEY = "sk-test-canary-5f1d2c9e7b"


def api_build(proj: Project, emulator, *, key: str | None = KEY, transport=None, base_url: str | None = None,
              **opts):
    """Build a project against an emulator, as an online build (key required).

    In-process through ASGITransport by default; over real HTTP when base_url is given.
    """
    import os

    import httpx

    from starbuild.api.client import RetryPolicy
    from starbuild.engine.build import BuildOptions, build
    from starbuild.config.resolve import load_and_resolve

    project, specs = load_and_resolve(proj.root / "starbuild.yaml")
    env = dict(os.environ)
    if key is not None:
        env["STARMAGIC_API_KEY"] = key
    if base_url is not None:
        env["STARMAGIC_BASE_URL"] = base_url
        env["STARMAGIC_FILES_URL"] = emulator.config.files_url  # the file service's own host
    opts.setdefault("poll_base", 0.01)
    opts.setdefault("poll_cap", 0.05)
    opts.setdefault("retry", RetryPolicy(attempts=8, base=0.01, cap=0.05, max_advised=0.05))
    options = BuildOptions(env=env, specs=specs, **opts)
    if base_url is None and transport is None:
        transport = httpx.ASGITransport(app=emulator)
        # In-process the scheme is never on a wire; https keeps the key rules of a real build.
        env["STARMAGIC_BASE_URL"] = emulator.config.public_url.replace("http://", "https://", 1)
        env["STARMAGIC_FILES_URL"] = emulator.config.files_url.replace("http://", "https://", 1)
    return build(project, options, transport=transport)


def cancel_after_first_submission(proj: Project, emulator, answer_after: float) -> None:
    """Start a build whose submissions are answered ``answer_after`` seconds after the emulator took
    them, and cancel it, as Ctrl-C does, as soon as the emulator has accepted one."""
    import asyncio
    import os

    import httpx

    from starbuild.config.resolve import load_and_resolve
    from starbuild.engine.build import BuildOptions, abuild

    async def late_answers(scope, receive, send):
        if scope.get("path") == "/v1/images/generations":
            async def late_send(message):
                await asyncio.sleep(answer_after)
                await send(message)
            return await emulator(scope, receive, late_send)
        return await emulator(scope, receive, send)

    async def stopped():
        project, specs = load_and_resolve(proj.root / "starbuild.yaml")
        env = {**os.environ, "STARMAGIC_API_KEY": KEY}
        build = asyncio.create_task(abuild(project, BuildOptions(env=env, specs=specs),
                                           transport=httpx.ASGITransport(app=late_answers)))
        while not emulator.ledger:
            await asyncio.sleep(0.01)
        build.cancel()
        with pytest.raises(asyncio.CancelledError):
            await build

    asyncio.run(stopped())


def matrix_config(count: int, prompt: str = "icon {{ i }}", extra: str = "", concurrency: int = 8) -> str:
    return (f"version: 1\nprovider:\n  concurrency: {concurrency}\n{extra}images:\n  'icons/i{{{{ i }}}}':\n"
            f"    matrix:\n      i: {list(range(count))}\n    prompt: \"{prompt}\"\n    size: '1:1'\n"
            f"    quality: low\n")


# What a build leaves in a project folder (the README's first command builds examples/ in place).
BUILD_OUTPUTS = ("assets", "starbuild.lock", ".starbuild")


def copy_example(name: str, dest: Path, examples: Path = REPO / "examples") -> Path:
    """A clean copy of an example project, without what an earlier build of it left there."""
    import shutil

    shutil.copytree(examples / name, dest, symlinks=True, ignore=shutil.ignore_patterns(*BUILD_OUTPUTS))
    return dest


@pytest.fixture
def emulator():
    from starbuild.emulator import Emulator, EmulatorConfig

    return Emulator(EmulatorConfig(render="plain"))


def ledger_prompts(emulator) -> list[str]:
    return [e.request["prompt"] for e in emulator.ledger]
