"""Everyday flows: what plan says about the cache, the output's wording, finding the config,
selecting, versions and rollback, file modes, and the failures users meet on a normal day."""

from __future__ import annotations

import os
import re
import stat
import time

from conftest import KEY, api_build, matrix_config, run
from starbuild.emulator import Emulator, EmulatorConfig, Faults, serve_in_thread

ONE = "version: 1\nimages:\n  {name}:\n    prompt: \"{prompt}\"\n    size: '1:1'\n    quality: {quality}\n"


def one(name: str = "hero", prompt: str = "a red fox", quality: str = "medium") -> str:
    return ONE.format(name=name, prompt=prompt, quality=quality)


def plan(project, *args: str) -> dict:
    res = project.run("plan", "--json", *args)
    assert res.exit_code == 0, res.stderr
    return res.json


# --- plan knows the cache ----------------------------------------------------------------------

def test_plan_after_a_revert_says_restore_from_cache_for_0_credits(project, emulator):
    project.config(one(prompt="a red fox"))
    assert api_build(project, emulator).exit_code == 0
    project.config(one(prompt="a blue fox"))
    assert api_build(project, emulator).exit_code == 0
    project.config(one(prompt="a red fox"))  # back to the first image, paid for already
    [asset] = plan(project)["assets"]
    assert asset["status"] == "changed" and asset["credits"] == 0 and asset["from_cache"]
    assert asset["reason"].startswith("restore from cache")
    text = project.run("plan").stdout
    assert "restore from cache" in text and "0 credits" in text and "estimated 0 credits" in text
    report = api_build(project, emulator)
    assert report.exit_code == 0 and len(emulator.ledger) == 2  # the build agrees: nothing paid


def test_plan_of_a_rename_says_renamed_from_for_0_credits(project, emulator):
    project.config(one(name="hero"))
    assert api_build(project, emulator).exit_code == 0
    project.config(one(name="banner"))
    by = {a["name"]: a for a in plan(project)["assets"]}
    assert by["banner"]["status"] == "new" and by["banner"]["reason"] == "renamed from hero"
    assert by["banner"]["credits"] == 0
    assert by["hero"]["status"] == "removed" and by["hero"]["reason"] == "renamed to banner"
    assert api_build(project, emulator).exit_code == 0 and len(emulator.ledger) == 1


def test_plan_shows_placeholders_as_their_own_group_after_real_changes(project):
    project.config(matrix_config(4))
    assert project.run("build", "--offline").exit_code == 0
    project.config(matrix_config(4) + "  hero:\n    prompt: a new hero\n    size: '1:1'\n")
    lines = project.run("plan").stdout.splitlines()
    assert lines[0].startswith("new") and "hero" in lines[0]  # the one real edit comes first
    assert lines[1] == "placeholders to replace with real images (4):"
    assert all(line.strip().startswith("changed") and "replace placeholder" in line for line in lines[2:6])
    data = plan(project)
    assert data["summary"]["placeholders"] == 4
    assert [a["replaces_placeholder"] for a in data["assets"]] == [True] * 4 + [False]


def test_offline_builds_do_not_wait_for_rate_limit(project):
    project.config(matrix_config(4, extra="  rate_limit: 1/min\n"))
    assert "rate_limit: 1/min" in (project.root / "starbuild.yaml").read_text()
    started = time.monotonic()
    res = project.run("build", "--offline")
    assert res.exit_code == 0, res.stderr
    assert time.monotonic() - started < 30  # 4 submissions at 1/min would wait 3 minutes


# --- wording ------------------------------------------------------------------------------------

def test_one_credit_is_singular(project):
    project.config(one(quality="medium"))  # gpt-image-2, 1K, medium: 1 credit
    out = project.run("plan").stdout
    assert "1 credit" in out and "1 credits" not in out and "estimated 1 credit\n" in out


def test_offline_builds_say_placeholders_are_free(project):
    project.config(matrix_config(2))
    res = project.run("build", "--offline")
    assert res.exit_code == 0
    assert "placeholders (free)" in res.stdout
    assert "credits reserved" not in res.stdout + res.stderr
    assert "placeholders (free)" in project.run("plan", "--offline").stdout


def test_each_failure_is_printed_once_with_the_retry_failed_hint(project):
    project.config(matrix_config(2))
    em = Emulator(EmulatorConfig(render="plain", faults=Faults(rate_task_failed=1.0, failure_codes=("service_error",))))
    with serve_in_thread(em) as url:
        res = project.run("build", env={"STARMAGIC_API_KEY": KEY, "STARMAGIC_BASE_URL": url,
                                        "STARMAGIC_FILES_URL": em.config.files_url})
    assert res.exit_code == 1
    output = res.stdout + res.stderr
    for name in ("icons/i0", "icons/i1"):
        assert len(re.findall(rf"{re.escape(name)}\b.*service_error", output)) == 1, output
    assert output.count("--retry-failed") == 1
    assert "2 of these failed with such a code" in output


# --- finding and selecting ----------------------------------------------------------------------

def test_the_config_is_found_from_a_subfolder_like_git(project, monkeypatch):
    project.config(one())
    deep = project.root / "art" / "sketches"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    res = run(["plan", "--json"])
    assert res.exit_code == 0, res.stderr
    assert [a["name"] for a in res.json["assets"]] == ["hero"]
    assert run(["build", "--offline"]).exit_code == 0
    assert (project.root / "starbuild.lock").is_file() and not (deep / "starbuild.lock").exists()


def test_no_config_anywhere_up_is_still_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run(["plan"])
    assert res.exit_code == 2 and "starbuild.yaml" in res.stderr


def test_plan_takes_names_and_globs(project):
    project.config(matrix_config(3) + "  hero:\n    prompt: a hero\n    size: '1:1'\n    quality: low\n")
    data = plan(project, "icons/*")
    assert [a["name"] for a in data["assets"]] == ["icons/i0", "icons/i1", "icons/i2"]
    assert data["summary"]["total"] == 3
    assert [a["name"] for a in plan(project, "hero")["assets"]] == ["hero"]
    res = project.run("plan", "nothing-*")
    assert res.exit_code == 2 and "no asset matches" in res.stderr


def test_versions_json_and_rollback_by_the_printed_name(project):
    project.config(matrix_config(1))
    assert project.run("build", "--offline").exit_code == 0
    project.config(matrix_config(1, prompt="other {{ i }}"))
    assert project.run("build", "--offline").exit_code == 0
    data = project.run("versions", "--json").json
    assert [v["version"] for v in data["versions"]] == [1, 2] and data["current"] == 2
    assert data["versions"][1]["current"] and data["versions"][0]["assets"] == 1
    assert project.run("rollback", "v0001").exit_code == 0
    assert os.readlink(project.root / "assets" / "current") == "v0001"
    assert project.run("rollback", "2").exit_code == 0
    assert os.readlink(project.root / "assets" / "current") == "v0002"
    bad = project.run("rollback", "latest")
    assert bad.exit_code == 2 and "v0003" in bad.stderr
    missing = project.run("rollback", "v9")
    assert missing.exit_code == 2 and "v0009" in missing.stderr and "v0001, v0002" in missing.stderr


# --- files follow the umask -----------------------------------------------------------------------

def test_lockfile_and_manifests_follow_the_umask(project):
    project.config(matrix_config(1))
    old = os.umask(0o022)
    try:
        assert project.run("build", "--offline").exit_code == 0
    finally:
        os.umask(old)
    for path in (project.root / "starbuild.lock", project.root / "assets" / "v0001" / "manifest.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# --- the API's own host for files, and plan over a journaled task --------------------------------

def test_a_build_uploads_inputs_to_the_file_service_host(project):
    import io

    from PIL import Image

    project.config("version: 1\nimages:\n  edit:\n    prompt: x\n    inputs: [in.png]\n    size: '1:1'\n")
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(out, "PNG")
    (project.root / "in.png").write_bytes(out.getvalue())
    em = Emulator(EmulatorConfig(render="plain"))
    with serve_in_thread(em) as url:
        report = api_build(project, em, base_url=url)
    assert report.exit_code == 0, [r.error for r in report.results]
    assert em.counters["upload"] == 1
    assert em.ledger[0].request["image_urls"][0].startswith(em.config.files_url + "/")


def test_plan_json_reports_cache_counts(project, emulator):
    project.config(one())
    assert api_build(project, emulator).exit_code == 0
    project.config(one(name="renamed"))
    summary = plan(project)["summary"]
    assert summary["from_cache"] == 1 and summary["credits"] == 0


