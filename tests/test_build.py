"""End-to-end builds against the emulator: caching, versions, budget, frozen, failures, resume."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from conftest import KEY, api_build, ledger_prompts, matrix_config
from starbuild.emulator import Emulator, EmulatorConfig, Faults
from starbuild.engine.outcome import Outcome


def _current_files(proj) -> list[str]:
    cur = proj.root / "assets" / "current"
    return sorted(str(p.relative_to(cur)) for p in cur.rglob("*.png"))


def test_build_unchanged_project_makes_no_request_and_no_version(project, emulator):
    project.config(matrix_config(3))
    first = api_build(project, emulator)
    assert first.exit_code == 0 and first.version == 1
    requests = sum(v for k, v in emulator.counters.items() if not k.startswith("status_"))
    second = api_build(project, emulator)
    assert second.exit_code == 0 and second.version is None
    assert sum(v for k, v in emulator.counters.items() if not k.startswith("status_")) == requests
    assert sorted(p.name for p in (project.root / "assets").iterdir()) == ["current", "v0001"]
    assert second.count(Outcome.CACHED) == 3


def test_build_one_prompt_change_submits_one_and_publishes_all(project, emulator):
    project.config(matrix_config(12, prompt="icon {{ i }}{{ ' (gold)' if i == 7 else '' }}"))
    assert api_build(project, emulator).exit_code == 0
    assert len(emulator.ledger) == 12
    v1 = project.lock()
    project.config(matrix_config(12, prompt="icon {{ i }}{{ ' (silver)' if i == 7 else '' }}"))
    report = api_build(project, emulator)
    assert report.exit_code == 0 and report.version == 2
    assert len(emulator.ledger) == 13 and emulator.ledger[-1].request["prompt"] == "icon 7 (silver)"
    assert len(_current_files(project)) == 12
    v2 = project.lock()
    changed = [n for n in v1["assets"] if v1["assets"][n]["spec_hash"] != v2["assets"][n]["spec_hash"]]
    assert changed == ["icons/i7"]
    manifest = json.loads((project.root / "assets" / "v0002" / "manifest.json").read_text())
    assert len(manifest["assets"]) == 12 and manifest["asset_version"] == 2
    assert os.readlink(project.root / "assets" / "current") == "v0002"


def test_build_lockfile_fields_and_format(project, emulator):
    project.config(matrix_config(1))
    api_build(project, emulator)
    text = (project.root / "starbuild.lock").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert data["lockfile_version"] == 1 and data["asset_version"] == 1
    entry = data["assets"]["icons/i0"]
    assert set(entry) >= {"spec_hash", "request", "task_id", "files", "credits", "placeholder", "created"}
    assert entry["task_id"].startswith("task-unified-") and entry["placeholder"] is False
    f = entry["files"][0]
    assert f["path"] == "icons/i0.png" and f["width"] == 1024 and f["height"] == 1024 and f["format"] == "png"
    assert "http" not in text  # no expiring URL is written


def test_build_files_match_store_and_dimensions(project, emulator):
    from PIL import Image
    import hashlib

    project.config("version: 1\nimages:\n  wide: {prompt: x, size: '21:9', resolution: 2K, quality: low}\n"
                   "  tall: {prompt: y, size: '2:3', model: gpt-image-1.5, quality: low}\n"
                   "  many: {prompt: z, n: 3, size: '1:1', quality: low}\n")
    assert api_build(project, emulator).exit_code == 0
    cur = project.root / "assets" / "current"
    assert Image.open(cur / "wide.png").size == (3136, 1344)
    assert Image.open(cur / "tall.png").size == (1024, 1536)
    assert sorted(p.name for p in cur.glob("many-*.png")) == ["many-1.png", "many-2.png", "many-3.png"]
    for entry in project.lock()["assets"].values():
        for f in entry["files"]:
            data = (cur / f["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]


def test_build_budget_over_cap_refuses_with_zero_submissions(project, emulator):
    project.config(matrix_config(10, extra="  max_credits: 0.5\n"))
    report_error = None
    try:
        api_build(project, emulator)
    except Exception as exc:  # BudgetError
        report_error = exc
    assert type(report_error).__name__ == "BudgetError" and report_error.exit_code == 3
    assert "max_credits" in str(report_error)
    assert emulator.ledger == [] and sum(emulator.counters.values()) == 0
    assert not (project.root / "starbuild.lock").exists()


def test_build_budget_cli_flag_exit_3(project):
    project.config(matrix_config(10))
    res = project.run("build", "--offline", "--max-credits", "0.3")
    assert res.exit_code == 3 and "max_credits 0.3" in res.stderr
    assert not (project.root / "assets").exists()


def test_build_stops_submitting_when_reserved_credits_would_pass(project, emulator):
    # The lockfile says this kind of image cost 0.01 credits, so the plan's estimate fits the cap;
    # the API now reserves 0.11 each, so the runner must stop once the reserved credits would pass.
    project.config(matrix_config(1, concurrency=1))
    api_build(project, emulator)
    lock = project.lock()
    lock["assets"]["icons/i0"]["credits"] = 0.01
    (project.root / "starbuild.lock").write_text(json.dumps(lock))
    project.config(matrix_config(7, concurrency=1))
    plan = project.run("plan", "--json").json
    assert plan["summary"]["credits"] == pytest.approx(0.06)
    report = api_build(project, emulator, max_credits=0.35)
    # The first answer says 0.11: from then on each submission holds 0.11, so 3 fit and the 4th does not.
    assert len(emulator.ledger) == 1 + 3
    skipped = [r for r in report.results if r.outcome == Outcome.SKIPPED]
    assert len(skipped) == 3 and all("max_credits" in r.reason for r in skipped)
    assert report.credits_reserved == pytest.approx(0.33) and report.credits_reserved <= 0.35
    assert report.exit_code == 3 and "3 asset(s) not submitted" in report.stopped
    assert len(project.lock()["assets"]) == 4


def test_build_frozen_with_stale_assets_exit_3_zero_requests(project, emulator):
    project.config(matrix_config(2))
    with pytest.raises(Exception) as info:
        api_build(project, emulator, frozen=True)
    assert info.value.exit_code == 3 and "--frozen" in str(info.value)
    assert sum(emulator.counters.values()) == 0
    api_build(project, emulator)
    assert api_build(project, emulator, frozen=True).exit_code == 0


def test_build_failed_tasks_exit_1_with_codes_and_successes_recorded(project):
    em = Emulator(EmulatorConfig(render="plain", seed=3,
                                 faults=Faults(rate_task_failed=0.5, failure_codes=("content_policy_violation",))))
    project.config(matrix_config(10))
    report = api_build(project, em)
    failed = [r for r in report.results if r.outcome == Outcome.FAILED]
    built = [r for r in report.results if r.outcome == Outcome.BUILT]
    assert report.exit_code == 1 and failed and built
    assert all("content_policy_violation" in r.error for r in failed)
    assert sorted(project.lock()["assets"]) == sorted(r.name for r in built)
    assert len(em.ledger) == 10
    # The next build retries only what is missing; content policy failures are not retried twice here.
    again = api_build(project, em)
    assert len(em.ledger) == 10 + len(failed)
    assert again.count(Outcome.CACHED) == len(built)


def test_build_retry_failed_only_for_retryable_codes(project):
    em = Emulator(EmulatorConfig(render="plain", faults=Faults(rate_task_failed=1.0, failure_codes=("service_error",))))
    project.config(matrix_config(1))
    report = api_build(project, em, retry_failed=2)
    assert report.exit_code == 1 and len(em.ledger) == 3
    em2 = Emulator(EmulatorConfig(render="plain", faults=Faults(rate_task_failed=1.0,
                                                                failure_codes=("content_policy_violation",))))
    report = api_build(project, em2, retry_failed=2)
    assert report.exit_code == 1 and len(em2.ledger) == 1


def test_build_fail_fast_stops_submitting(project):
    em = Emulator(EmulatorConfig(render="plain", faults=Faults(rate_task_failed=1.0,
                                                               failure_codes=("invalid_parameters",))))
    project.config(matrix_config(6, concurrency=1))
    report = api_build(project, em, fail_fast=True)
    assert report.exit_code == 1
    assert len(em.ledger) == 1 and report.count(Outcome.SKIPPED) == 5


def test_build_offline_then_online_replaces_placeholders(project, emulator):
    project.config(matrix_config(2))
    res = project.run("build", "--offline")
    assert res.exit_code == 0, res.stderr
    lock = project.lock()
    assert all(e["placeholder"] for e in lock["assets"].values())
    plan = project.run("plan", "--json").json
    assert {a["status"] for a in plan["assets"]} == {"changed"}
    assert all("replace placeholder" in a["reason"] for a in plan["assets"])
    report = api_build(project, emulator)
    assert report.count(Outcome.BUILT) == 2 and len(emulator.ledger) == 2
    assert not any(e["placeholder"] for e in project.lock()["assets"].values())
    # An offline build afterwards keeps the real images.
    res = project.run("build", "--offline")
    assert res.exit_code == 0 and "no new version" in res.stdout
    assert not any(e["placeholder"] for e in project.lock()["assets"].values())


def test_build_force_regenerates_only_matching(project, emulator):
    project.config(matrix_config(4))
    api_build(project, emulator)
    report = api_build(project, emulator, force=("icons/i[12]",))
    assert report.count(Outcome.BUILT) == 2 and len(emulator.ledger) == 6
    assert Counter(ledger_prompts(emulator))["icon 1"] == 2


def test_build_named_assets_and_globs(project, emulator):
    project.config(matrix_config(4))
    report = api_build(project, emulator, select=("icons/i0", "icons/i3"))
    assert sorted(e.request["prompt"] for e in emulator.ledger) == ["icon 0", "icon 3"]
    assert sorted(project.lock()["assets"]) == ["icons/i0", "icons/i3"]
    assert report.count(Outcome.SKIPPED) == 2
    res = project.run("build", "--offline", "nomatch*")
    assert res.exit_code == 2 and "nomatch" in res.stderr


def test_build_removed_asset_dropped_from_lock_and_version(project, emulator):
    project.config(matrix_config(3))
    api_build(project, emulator)
    project.config(matrix_config(2))
    report = api_build(project, emulator)
    assert report.count(Outcome.REMOVED) == 1 and report.version == 2
    assert sorted(project.lock()["assets"]) == ["icons/i0", "icons/i1"]
    assert _current_files(project) == ["icons/i0.png", "icons/i1.png"]
    assert len(emulator.ledger) == 3


def test_build_rename_regenerates_nothing(project, emulator):
    project.config(matrix_config(3))
    api_build(project, emulator)
    project.config(matrix_config(3).replace("icons/i{{ i }}", "sprites/s{{ i }}"))
    report = api_build(project, emulator)
    assert len(emulator.ledger) == 3 and report.count(Outcome.CACHED) == 3
    assert _current_files(project) == ["sprites/s0.png", "sprites/s1.png", "sprites/s2.png"]


def test_build_missing_key_exit_3_names_variable(project):
    project.config("version: 1\nprovider:\n  api_key_env: MY_STAR_KEY\nimages:\n  a: {prompt: x}\n")
    res = project.run("build")
    assert res.exit_code == 3
    assert "MY_STAR_KEY" in res.stderr and "--offline" in res.stderr


def test_build_second_build_locked_exit_3(project, emulator):
    import filelock

    project.config(matrix_config(1))
    cache = project.root.parent / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "build.pid").write_text("4242\n")
    with filelock.FileLock(str(cache / "build.lock")):
        res = project.run("build", "--offline")
    assert res.exit_code == 3 and "4242" in res.stderr


def test_build_json_report(project):
    project.config(matrix_config(2))
    res = project.run("build", "--offline", "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert [a["status"] for a in data["assets"]] == ["built", "built"]
    assert data["summary"]["built"] == 2 and data["summary"]["version"] == 1
    assert data["assets"][0]["files"][0]["path"] == "icons/i0.png"


def test_build_versions_rollback_ls_gc(project):
    project.config(matrix_config(2))
    assert project.run("build", "--offline").exit_code == 0
    project.config(matrix_config(2, prompt="other {{ i }}"))
    assert project.run("build", "--offline").exit_code == 0
    res = project.run("versions")
    assert "v0001" in res.stdout and "* v0002" in res.stdout
    first_lock = json.loads((project.root / "assets" / "v0001" / "manifest.json").read_text())["assets"]
    res = project.run("rollback", "1")
    assert res.exit_code == 0
    assert os.readlink(project.root / "assets" / "current") == "v0001"
    assert project.lock()["assets"] == first_lock and project.lock()["asset_version"] == 1
    ls = project.run("ls", "--json").json
    assert [a["name"] for a in ls["assets"]] == ["icons/i0", "icons/i1"]
    assert project.run("rollback", "9").exit_code == 2
    res = project.run("gc")
    assert res.exit_code == 0 and "removed 0" in res.stdout


def test_build_prunes_beyond_keep(project):
    for i in range(4):
        project.config(matrix_config(1, prompt=f"v{i}", extra="").replace("images:", "output:\n  keep: 2\nimages:"))
        assert project.run("build", "--offline").exit_code == 0
    versions = sorted(p.name for p in (project.root / "assets").iterdir())
    assert versions == ["current", "v0003", "v0004"]
    res = project.run("gc")
    assert res.exit_code == 0 and "removed 2" in res.stdout


def test_build_canary_key_never_written(project):
    em = Emulator(EmulatorConfig(render="plain", api_key="the-right-key"))
    project.config(matrix_config(2))
    report = api_build(project, em)  # KEY is wrong for this emulator: 401, refused: exit 3
    assert report.exit_code == 3
    assert all("401" in (r.error or r.reason or "") for r in report.results)
    em_ok = Emulator(EmulatorConfig(render="plain", api_key=KEY))
    assert api_build(project, em_ok).exit_code == 0
    res = project.run("build", "--json", env={"STARMAGIC_API_KEY": KEY, "STARMAGIC_BASE_URL": "http://127.0.0.1:9"})
    blobs = [res.stdout, res.stderr, json.dumps(report.to_json())]
    for base in (project.root, project.root.parent / ".cache"):
        for path in base.rglob("*"):
            if path.is_file():
                blobs.append(path.read_bytes().decode("latin-1"))
    assert not any(KEY in b for b in blobs)
    assert not any(e.request.get("api_key") for e in em_ok.ledger)


def test_build_expired_result_link_fails_clearly_and_publishes_nothing(project):
    em = Emulator(EmulatorConfig(render="plain", ttl=0.0))  # links are dead as soon as they exist
    project.config(matrix_config(2))
    report = api_build(project, em)
    assert report.exit_code == 1 and report.version is None
    assert all("expired" in r.error for r in report.results)
    assert not (project.root / "starbuild.lock").exists() and not (project.root / "assets").exists()
    leftovers = [p for p in (project.root.parent / ".cache").rglob("*") if p.name.endswith(".part")]
    assert leftovers == []
    # The next build resumes the same tasks (no new payment) and says they are gone for good.
    again = api_build(project, em)
    assert len(em.ledger) == 2
    assert all("the next build submits it again" in r.error for r in again.results)


def test_readme_quick_start_word_for_word(tmp_path):
    """`starbuild build -C examples/game-icons --offline`, global flags after the command name,
    run from a folder holding a copy of the example, as the README and SPEC.md §1 write it."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from conftest import copy_example

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    command = re.search(r"pip install -e \. && (starbuild build [^\n`]+)", readme).group(1)
    assert command == "starbuild build -C examples/game-icons --offline"
    env = {k: v for k, v in os.environ.items() if k not in ("STARMAGIC_API_KEY", "STARBUILD_CACHE_DIR")}
    argv = [sys.executable, "-m", "starbuild", *command.split()[1:]]
    # The checkout as the README leaves it: command 1 has built the example in place (a `current`
    # symlink, a lockfile, a cache), then command 2 runs this test, which must not trip over that.
    checkout = tmp_path / "checkout"
    copy_example("game-icons", checkout / "examples" / "game-icons")
    built = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0 and (checkout / "examples/game-icons/assets/current").is_symlink(), built.stderr
    tmp_path = tmp_path / "fresh"
    copy_example("game-icons", tmp_path / "examples" / "game-icons", checkout / "examples")
    first = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    lock = json.loads((tmp_path / "examples" / "game-icons" / "starbuild.lock").read_text())
    assert lock["assets"] and all(e["placeholder"] for e in lock["assets"].values())
    # -f and -q after the command name too; a bad -C there is a usage error (exit 2).
    again = subprocess.run([sys.executable, "-m", "starbuild", "plan", "-C", "examples/game-icons",
                            "-f", "starbuild.yaml", "-q", "--json"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    planned = json.loads(again.stdout)["assets"]  # an online plan replaces every placeholder
    assert planned and all(a["status"] == "changed" and "placeholder" in a["reason"] for a in planned)
    bad = subprocess.run([sys.executable, "-m", "starbuild", "build", "-C", "missing"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "-C missing: no such directory" in bad.stderr
