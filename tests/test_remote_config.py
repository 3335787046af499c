"""The `cache` section, the mode and namespace from the environment, and small files for other features."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import Project, api_build, matrix_config
from remote_fixtures import bucket, moto_endpoint  # noqa: F401  (fixtures)
from starbuild.emulator import Emulator, EmulatorConfig
from starbuild.engine.outcome import Outcome
from starbuild.store.remote.settings import resolve_mode


@pytest.mark.parametrize("remote, field, words", [
    ("url: s3://AKIAXXXX:secret@team/x", "cache.remote.url", "credentials do not belong in the config"),
    ("url: https://team/x", "cache.remote.url", "use s3://BUCKET/PREFIX or file:///PATH"),
    ("url: file://relative/path", "cache.remote.url", "absolute path"),
    ("url: s3://team/x\n    endpoint: http://s3.example.com", "cache.remote.endpoint", "use https"),
    ("url: s3://team/x\n    namespace: 'a b'", "cache.remote.namespace", "string should match pattern"),
    ("url: s3://team/x\n    read_namespaces: [main, '../x']", "cache.remote.read_namespaces", "is not a namespace"),
    ("url: s3://team/x\n    mode: sometimes", "cache.remote.mode", "input should be"),
    ("url: s3://team/x\n    secret_access_key: abc", "cache.remote.secret_access_key", "unknown field"),
])
def test_cache_config_errors_are_located(project, remote, field, words):
    project.config(matrix_config(1, extra=f"cache:\n  remote:\n    {remote}\n"))
    res = project.run("validate")
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    line = next(x for x in res.stderr.splitlines() if field in x)
    assert re.match(r"error: \S*starbuild\.yaml:\d+:\d+: ", line) and words.lower() in line.lower(), res.stderr
    assert "secret" not in res.stderr.replace("secret_access_key", "")  # a credential is never echoed


def test_cache_bad_environment_values_are_usage_errors(project, tmp_path):
    project.config(matrix_config(1, extra=f"cache:\n  remote:\n    url: file://{tmp_path / 'shared'}\n"))
    res = project.run("build", "--offline", env={"STARBUILD_REMOTE_CACHE": "always"})
    assert res.exit_code == 2 and "STARBUILD_REMOTE_CACHE='always' is not a mode" in res.stderr
    res = project.run("build", "--offline", env={"STARBUILD_CACHE_NAMESPACE": "../main"})
    assert res.exit_code == 2 and "STARBUILD_CACHE_NAMESPACE" in res.stderr
    assert not (project.root / "starbuild.lock").exists()


def test_cache_require_remote_without_a_remote_is_a_usage_error(project):
    project.config(matrix_config(1))
    res = project.run("build", "--offline", "--require-remote")
    assert res.exit_code == 2 and "--require-remote: no remote cache is configured" in res.stderr
    res = project.run("cache", "status")
    assert res.exit_code == 2 and "no remote cache" in res.stderr


@pytest.mark.parametrize("env, mode", [
    ({}, "read-write"),
    ({"CI": "true", "GITHUB_REF_NAME": "main"}, "read-write"),
    ({"CI": "1", "CI_COMMIT_BRANCH": "master"}, "read-write"),
    ({"CI": "true", "GITHUB_HEAD_REF": "fix/typo", "GITHUB_REF_NAME": "42/merge"}, "read-only"),
    ({"CI": "true", "BUILDKITE_BRANCH": "feature"}, "read-only"),
    ({"CI": "false", "GITHUB_HEAD_REF": "feature"}, "read-write"),
    ({"CI": "true", "GITHUB_HEAD_REF": "feature", "STARBUILD_REMOTE_CACHE": "read-write"}, "read-write"),
    ({"STARBUILD_REMOTE_CACHE": "off"}, "off"),
])
def test_cache_mode_auto_is_read_only_in_ci_off_main(env, mode, tmp_path):
    assert resolve_mode("auto", env, tmp_path)[0] == mode


def test_cache_mode_auto_in_ci_with_an_unknown_branch_is_read_only(tmp_path):
    assert resolve_mode("auto", {"CI": "true"}, tmp_path / "not-a-repo") == ("read-only",
                                                                             "auto: CI on an unknown branch")


def test_cache_mode_off_never_touches_the_remote(tmp_path, bucket, monkeypatch):
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STARBUILD_REMOTE_CACHE", "off")
    proj = Project(tmp_path / "p")
    proj.config(matrix_config(2, extra=bucket.config()))
    report = api_build(proj, Emulator(EmulatorConfig(render="plain")))
    assert report.exit_code == 0 and report.notes == [] and bucket.keys() == []


def test_cache_namespaces_keep_pull_requests_apart_from_main(tmp_path, bucket, monkeypatch):
    em = Emulator(EmulatorConfig(render="plain"))
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-main"))
    main = Project(tmp_path / "main")
    main.config(matrix_config(2, extra=bucket.config()))
    assert api_build(main, em).exit_code == 0

    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-pr"))
    monkeypatch.setenv("STARBUILD_CACHE_NAMESPACE", "pr-7")
    pr = Project(tmp_path / "pr")
    pr.config(matrix_config(3, extra=bucket.config("    read_namespaces: [main]\n")))
    report = api_build(pr, em)
    assert [r.outcome for r in report.results] == [Outcome.PULLED, Outcome.PULLED, Outcome.BUILT]
    assert len(em.ledger) == 3
    pr_keys = [k for k in bucket.keys() if "/ac/pr-7/" in k]
    assert len(pr_keys) == 1 and pr.lock()["assets"]["icons/i2"]["spec_hash"] in pr_keys[0]
    assert len([k for k in bucket.keys() if "/ac/main/" in k]) == 2
    assert "namespace pr-7" in report.notes[-1]


def test_cache_push_file_keeps_a_small_file_for_other_features(tmp_path, bucket, monkeypatch):
    from starbuild.config.project import load_config
    from starbuild.store.remote import fetch_file, push_file

    proj = Project(tmp_path / "p")
    proj.config(matrix_config(1, extra=bucket.config()))
    project = load_config(proj.root / "starbuild.yaml")
    assert push_file(project, "ledger/ana.jsonl", b'{"credits": 1}\n') is True
    assert bucket.get("team/v1/files/ledger/ana.jsonl") == b'{"credits": 1}\n'
    assert fetch_file(project, "ledger/ana.jsonl") == b'{"credits": 1}\n'
    assert fetch_file(project, "ledger/nobody.jsonl") is None
    with pytest.raises(ValueError):
        push_file(project, "../escape", b"x")
    monkeypatch.setenv("STARBUILD_REMOTE_CACHE", "read-only")
    assert push_file(project, "ledger/ben.jsonl", b"x") is False
    assert "team/v1/files/ledger/ben.jsonl" not in bucket.keys()


def test_cache_profile_credentials_go_through_the_standard_chain(tmp_path, bucket, monkeypatch):
    """Only AWS_PROFILE and ~/.aws files name the credentials; the config holds none."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("[team]\naws_access_key_id = test-access-key\n"
                                               "aws_secret_access_key = test-secret-key\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_PROFILE", "team")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    proj = Project(tmp_path / "p")
    proj.config(matrix_config(1, extra=bucket.config()))
    report = api_build(proj, Emulator(EmulatorConfig(render="plain")))
    assert report.exit_code == 0 and "0 errors" in report.notes[-1]
    assert len([k for k in bucket.keys() if "/ac/" in k]) == 1
    text = Path(proj.root / "starbuild.lock").read_text() + "".join(report.notes)
    assert "test-secret-key" not in text


def test_cache_unreachable_remote_never_crashes_the_process(tmp_path):
    """A plan against a remote that refuses connections warns, shows no remote hits and exits 0, every time."""
    import os
    import subprocess
    import sys

    from remote_fixtures import AWS

    proj = Project(tmp_path / "p")
    proj.config(matrix_config(3, extra="cache:\n  remote:\n    url: s3://team/x\n    endpoint: http://127.0.0.1:9\n"))
    env = {**os.environ, **AWS, "STARBUILD_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "starbuild", "-C", str(proj.root), "plan"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert "remote cache:" in err.decode() and "in the remote cache" not in out.decode()
