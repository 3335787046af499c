"""examples/ci/: the GitHub Actions workflow's own starbuild steps, run here against an example project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, Project, api_build
from starbuild.emulator import Emulator, EmulatorConfig

WORKFLOW = REPO / "examples" / "ci" / "starbuild.yml"
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def starbuild_step(job: str, name: str) -> dict:
    steps = workflow()["jobs"][job]["steps"]
    step = next(s for s in steps if s.get("name") == name)
    assert re.search(r"^\s*starbuild ", step["run"], re.M), f"{name}: no starbuild command"
    assert not EXPRESSION.search(step["run"]), "a starbuild step must run as written, outside GitHub"
    return step


def run_step(job: str, name: str, cwd: Path, env: dict) -> tuple[int, dict]:
    """Run a step's script as GitHub does (bash -e -o pipefail), with the workflow's and job's env."""
    wf = workflow()
    step = starbuild_step(job, name)
    outputs = cwd.parent / "github-output"
    outputs.write_text("")
    full = {**env, "GITHUB_OUTPUT": str(outputs)}
    for scope in (wf.get("env") or {}, wf["jobs"][job].get("env") or {}, step.get("env") or {}):
        full.update({k: EXPRESSION.sub("", str(v)) for k, v in scope.items()})  # secrets are empty here
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=cwd,
                          env=full, capture_output=True, text=True, timeout=120)
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, values


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A repository holding the game-icons example, and an environment with no network to the API."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "examples" / "game-icons", repo, ignore=shutil.ignore_patterns("assets", "*.lock"))
    cache = tmp_path / "cache"
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(cache))
    bin_dir = tmp_path / "bin"  # `starbuild` as installed from this checkout, whatever is on PATH
    bin_dir.mkdir()
    shim = bin_dir / "starbuild"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m starbuild \"$@\"\n")
    shim.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO)), "HOME": str(tmp_path),
           "STARBUILD_CACHE_DIR": str(cache), "CI": "true", "GITHUB_HEAD_REF": "art/icons",
           "STARMAGIC_BASE_URL": "http://127.0.0.1:9", "STARMAGIC_FILES_URL": "http://127.0.0.1:9"}
    return repo, env


def test_ci_workflow_runs_on_pull_requests_and_main():
    wf = workflow()
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) == {"pull_request", "push"} and triggers["push"]["branches"] == ["main"]
    plan = wf["jobs"]["plan"]
    assert plan["permissions"]["pull-requests"] == "write"
    comment = next(s for s in plan["steps"] if s.get("uses", "").startswith("actions/github-script"))
    script = comment["with"]["script"]
    # The comment step reads the file the plan step writes, keyed by the plan's first line.
    assert "starbuild-plan.md" in starbuild_step("plan", "Plan")["run"] and "'starbuild-plan.md'" in script
    assert "split('\\n')[0]" in script and "updateComment" in script and "createComment" in script
    assert "--frozen" in starbuild_step("build", "Build (frozen)")["run"]
    assert wf["jobs"]["build"]["env"]["STARBUILD_REMOTE_CACHE"] == "read-write"


def test_ci_pull_request_plan_step_writes_the_comment(checkout):
    repo, env = checkout
    plan = subprocess.run(["bash", "-c", "starbuild plan --json"], cwd=repo, env=env, capture_output=True, text=True)
    summary = json.loads(plan.stdout)["summary"]
    icons = [a for a in json.loads(plan.stdout)["assets"] if a["name"].startswith("icons/")]
    code, outputs = run_step("plan", "Plan", repo, env)
    assert code == 0 and outputs == {"exit": "0"}
    comment = (repo / "starbuild-plan.md").read_text()
    assert comment.startswith(f"<!-- starbuild-plan: repo -->\n### starbuild: {summary['total']} images to generate, "
                              f"about {summary['credits']:g} credits")
    assert f"| `icons/{{{{ item }}}}-{{{{ tier }}}}` | {len(icons)} | 0 | 0 | 0 | " in comment
    # Over the budget: the comment is still written (with the refusal) and the step reports exit 3.
    config = repo / "starbuild.yaml"
    limit = summary["credits"] / 2
    config.write_text(config.read_text() + f"\ncost:\n  max_credits_per_pr: {limit}\n")
    code, outputs = run_step("plan", "Plan", repo, env)
    assert code == 0 and outputs == {"exit": "3"}
    assert (f"❌ about {summary['credits']:g} credits is over `cost.max_credits_per_pr` ({limit:g})"
            in (repo / "starbuild-plan.md").read_text())


def test_ci_main_frozen_build_step_passes_when_built_and_refuses_stale(checkout):
    repo, env = checkout
    em = Emulator(EmulatorConfig(render="plain"))
    assert api_build(Project(repo), em).exit_code == 0  # the images were built (and the lock committed)
    paid = len(em.ledger)
    shutil.rmtree(repo / "assets")  # a fresh clone: only the lockfile and the cache
    code, _ = run_step("build", "Build (frozen)", repo, env)
    assert code == 0
    report = (repo / "starbuild-build.json").read_text()
    assert '"failed": 0' in report and len(em.ledger) == paid
    code, outputs = run_step("plan", "Plan", repo, env)
    assert outputs == {"exit": "0"} and "no image changes, 0 credits" in (repo / "starbuild-plan.md").read_text()
    config = repo / "starbuild.yaml"
    config.write_text(config.read_text().replace("quality: low", "quality: high"))
    code, _ = run_step("build", "Build (frozen)", repo, env)
    assert code == 3 and len(em.ledger) == paid
