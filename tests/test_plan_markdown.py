"""`starbuild plan --format markdown`: the pull-request comment, its budget line and its exit code."""

from __future__ import annotations

import os

import pytest

from conftest import REPO, api_build
from starbuild.emulator import Emulator, EmulatorConfig

GOLDEN = REPO / "tests" / "golden" / "plan-comment.md"

HEAD = "version: 1\n{cost}defaults:\n  model: gpt-image-2\n  size: '1:1'\n  quality: low\nimages:\n"


def _config(project, images: str, cost: str = "") -> None:
    project.config(HEAD.format(cost=cost) + images)


@pytest.fixture
def reviewed(project):
    """A project built twice online, then edited: new, changed, removed and cached assets."""
    em = Emulator(EmulatorConfig(render="plain"))
    base = ("  hero: {prompt: 'a cabin at dusk', size: '16:9', resolution: 2K, quality: medium}\n"
            "  'icons/{{ i }}':\n    matrix: {i: [sword, shield]}\n    prompt: 'icon of a {{ i }}'\n"
            "  old-banner: {prompt: 'a banner'}\n")
    _config(project, base + "  logo: {prompt: 'first logo'}\n")
    assert api_build(project, em).exit_code == 0
    _config(project, base + "  logo: {prompt: 'second logo'}\n")
    assert api_build(project, em).exit_code == 0
    edited = ("  hero: {prompt: 'a cabin at night', size: '16:9', resolution: 2K, quality: medium}\n"
              "  'icons/{{ i }}':\n    matrix: {i: [shield, potion, bow]}\n    prompt: 'icon of a {{ i }}'\n"
              "  logo: {prompt: 'first logo'}\n")
    return em, edited


def test_plan_markdown_matches_the_golden_comment(reviewed, project):
    _, edited = reviewed
    _config(project, edited, cost="cost:\n  max_credits_per_pr: 10\n")
    res = project.run("plan", "--format", "markdown")
    assert res.exit_code == 0, res.stderr
    if os.environ.get("STARBUILD_UPDATE_GOLDEN"):
        GOLDEN.write_text(res.stdout)
    assert res.stdout == GOLDEN.read_text()


def test_plan_markdown_counts_and_budget(reviewed, project):
    _, edited = reviewed
    _config(project, edited, cost="cost:\n  max_credits_per_pr: 10\n")
    text = project.run("plan", "--format", "markdown").stdout
    assert text.startswith("<!-- starbuild-plan: proj -->\n")
    row = next(line for line in text.splitlines() if line.startswith("| `icons/{{ i }}`"))
    assert row.split("|")[2:7] == [" 2 ", " 0 ", " 1 ", " 0 ", " 0.22 "]  # potion, bow new; sword removed
    assert "| `logo` | changed, from cache | restore from cache (prompt changed) | 0 |" in text
    assert "| `old-banner` | removed |" in text and "✅ about 2.72 of 10 credits" in text
    json_plan = project.run("plan", "--json")
    assert json_plan.exit_code == 0 and {a["status"] for a in json_plan.json["assets"]} >= {"new", "removed"}


def test_plan_over_the_pr_budget_prints_the_comment_and_exits_3(reviewed, project):
    _, edited = reviewed
    _config(project, edited, cost="cost:\n  max_credits_per_pr: 1\n")
    res = project.run("plan", "--format", "markdown")
    assert res.exit_code == 3
    assert "❌ about 2.72 credits is over `cost.max_credits_per_pr` (1)" in res.stdout
    assert "cost.max_credits_per_pr 1" in res.stderr and "Traceback" not in res.stderr
    assert project.run("plan").exit_code == 3 and project.run("plan", "--json").exit_code == 3
    assert project.run("plan", "--offline").exit_code == 0  # placeholders cost nothing


def test_plan_markdown_without_changes_and_without_budget(reviewed, project):
    em, edited = reviewed
    _config(project, edited)
    assert api_build(project, em).exit_code == 0
    text = project.run("plan", "--format", "markdown").stdout
    assert "### starbuild: no image changes, 0 credits" in text and "| image group |" not in text
    assert "no `cost.max_credits_per_pr` is set" in text


def test_plan_format_usage_and_cost_config_errors(project):
    _config(project, "  a: {prompt: x}\n")
    res = project.run("plan", "--json", "--format", "markdown")
    assert res.exit_code == 2 and "--json" in res.stderr
    assert project.run("plan", "--format", "html").exit_code == 2
    _config(project, "  a: {prompt: x}\n", cost="cost:\n  max_credits_per_pr: -1\n")
    res = project.run("plan")
    assert res.exit_code == 2 and "starbuild.yaml:3" in res.stderr and "cost.max_credits_per_pr" in res.stderr
    _config(project, "  a: {prompt: x}\n", cost="cost:\n  max_credit_per_pr: 5\n")
    res = project.run("plan")
    assert res.exit_code == 2 and "did you mean 'max_credits_per_pr'" in res.stderr


def test_plan_markdown_escapes_table_breaking_text(project):
    _config(project, "  'a-{{ x | lower }}':\n    matrix: {x: [A]}\n    prompt: x\n")
    text = project.run("plan", "--format", "markdown").stdout
    assert "| `a-{{ x \\| lower }}` |" in text
