"""The shared remote cache against a real S3-compatible server (moto over HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KEY, Project, api_build, ledger_prompts, matrix_config
from remote_fixtures import bucket, moto_endpoint  # noqa: F401  (fixtures)
from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread
from starbuild.engine.outcome import Outcome


def _emulator(**config) -> Emulator:
    return Emulator(EmulatorConfig(render="plain", **config))


def _clone(src: Project, dest: Path) -> Project:
    """A fresh clone: only what is committed (the config and the lockfile)."""
    dest.mkdir(parents=True)
    for name in ("starbuild.yaml", "starbuild.lock"):
        shutil.copy(src.root / name, dest / name)
    return Project(dest)


def _published(proj: Project) -> dict[str, bytes]:
    current = proj.root / "assets" / "current"
    return {str(p.relative_to(current)): p.read_bytes() for p in sorted(current.rglob("*.png"))}


def _own_bucket(host: str, port: int):
    """A fresh bucket on a server of the test's own (moto's servers in one process share their buckets)."""
    import uuid

    from remote_fixtures import Bucket

    remote = Bucket(f"http://{host}:{port}", f"outage-{uuid.uuid4().hex[:12]}")
    remote.client().create_bucket(Bucket=remote.name)
    return remote


def _built(tmp_path: Path, bucket, monkeypatch, count: int = 4, extra: str = "") -> tuple[Project, Emulator]:
    """A project with the remote configured, built once (paid) with cache A."""
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-a"))
    proj = Project(tmp_path / "a")
    proj.config(matrix_config(count, extra=bucket.config(extra)))
    em = _emulator()
    report = api_build(proj, em)
    assert report.exit_code == 0 and report.count(Outcome.BUILT) == count
    return proj, em


def test_remote_fresh_clone_builds_with_zero_submissions_byte_identical(tmp_path, bucket, monkeypatch):
    first, em = _built(tmp_path, bucket, monkeypatch)
    assert len(em.ledger) == 4
    assert len([k for k in bucket.keys() if "/cas/" in k]) == 4 and len([k for k in bucket.keys() if "/ac/" in k]) == 4
    assert not [k for k in bucket.keys() if "/lease/" in k]  # released once the results are published
    for key in bucket.keys():  # neither the key nor a result link is ever pushed
        data = bucket.get(key)
        assert KEY.encode() not in data and b"starmagic.emulator" not in data and b"http" not in data, key

    clone = _clone(first, tmp_path / "b")
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-b"))
    plan = clone.run("plan", "--json")
    assert plan.exit_code == 0, plan.stderr
    assert {a["reason"] for a in plan.json["assets"]} == {"in the remote cache"}
    assert plan.json["summary"]["credits"] == 0

    fresh = _emulator()
    report = api_build(clone, fresh, key=None)  # no key needed: nothing is paid for
    assert report.exit_code == 0
    assert [r.outcome for r in report.results] == [Outcome.PULLED] * 4
    assert fresh.ledger == [] and report.requests == 0
    assert _published(clone) == _published(first)
    assert clone.lock()["assets"] == first.lock()["assets"]
    assert any(n.startswith("remote cache: 4 hits, 0 uploads, 0 waits, 0 errors; mode read-write, namespace main")
               for n in report.notes)


def test_remote_result_of_a_teammate_is_pulled_for_a_changed_spec(tmp_path, bucket, monkeypatch):
    """Not lock-pinned: a teammate built the new spec first; this clone finds it by spec hash."""
    first, _ = _built(tmp_path, bucket, monkeypatch, count=3)
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-b"))
    other = Project(tmp_path / "b")
    other.config(matrix_config(3, extra=bucket.config()))  # same specs, no lockfile at all
    fresh = _emulator()
    report = api_build(other, fresh)
    assert fresh.ledger == [] and report.count(Outcome.PULLED) == 3
    assert {n: e["files"] for n, e in other.lock()["assets"].items()} == \
        {n: e["files"] for n, e in first.lock()["assets"].items()}
    assert all(e["credits"] is None for e in other.lock()["assets"].values())  # a hit never teaches a price


def test_remote_two_processes_pay_once_per_spec(tmp_path, bucket):
    """Two machines (separate caches) build the same 12 assets at once against one remote and one API."""
    em = _emulator(latency=0.6)
    config = matrix_config(12, concurrency=4, extra=bucket.config("    lease_wait: 60\n"))
    projects = []
    for name in ("a", "b"):
        p = Project(tmp_path / name)
        p.config(config)
        projects.append(p)
    with serve_in_thread(em) as url:
        procs = []
        for p in projects:
            env = {**os.environ, "STARMAGIC_API_KEY": KEY, "STARMAGIC_BASE_URL": url, "STARMAGIC_FILES_URL": url,
                   "STARBUILD_CACHE_DIR": str(p.root.parent / f"cache-{p.root.name}")}
            procs.append(subprocess.Popen([sys.executable, "-m", "starbuild", "-C", str(p.root), "build", "--json"],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        outs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err.decode()
    prompts = ledger_prompts(em)
    assert len(prompts) == 12 and len(set(prompts)) == 12, sorted(prompts)
    reports = [json.loads(out) for out, _ in outs]
    statuses = [a["status"] for r in reports for a in r["assets"]]
    assert statuses.count("built") == 12 and statuses.count("pulled") == 12
    locks = [{n: e["files"] for n, e in p.lock()["assets"].items()} for p in projects]
    assert locks[0] == locks[1] and len(locks[0]) == 12
    assert sum(r["summary"]["credits"] for r in reports) == pytest.approx(sum(e.credits for e in em.ledger))


def test_remote_corrupt_object_is_detected_and_never_published(tmp_path, bucket, monkeypatch):
    first, _ = _built(tmp_path, bucket, monkeypatch, count=2)
    victim = first.lock()["assets"]["icons/i0"]["files"][0]["sha256"]
    key = f"team/v1/cas/sha256/{victim[:2]}/{victim}"
    bucket.put(key, b"\x89PNG not really the image")

    clone = _clone(first, tmp_path / "b")
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-b"))
    fresh = _emulator()
    report = api_build(clone, fresh)
    assert report.exit_code == 0
    by_name = {r.name: r.outcome for r in report.results}
    assert by_name == {"icons/i0": Outcome.BUILT, "icons/i1": Outcome.PULLED}  # rebuilt, not published corrupt
    assert ledger_prompts(fresh) == ["icon 0"]
    assert any("corrupt" in n and victim in n for n in report.notes)
    published = (clone.root / "assets" / "current" / "icons" / "i0.png").read_bytes()
    assert b"not really" not in published and published.startswith(b"\x89PNG")
    import hashlib

    assert hashlib.sha256(bucket.get(key)).hexdigest() == victim  # the good copy replaced the corrupt one


def _on_own_server(tmp_path: Path, monkeypatch, count: int):
    """A project whose remote lives on a moto server of the test's own, which it may stop."""
    from moto.server import ThreadedMotoServer

    from remote_fixtures import AWS

    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    remote = _own_bucket(*server.get_host_and_port())
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    proj = Project(tmp_path / "p")
    proj.config(matrix_config(count, concurrency=2, extra=remote.config()))
    return server, remote, proj


def test_remote_stopped_mid_build_completes_locally(tmp_path, monkeypatch):
    from starbuild.config.resolve import load_and_resolve
    from starbuild.engine.build import BuildOptions, build

    server, remote, proj = _on_own_server(tmp_path, monkeypatch, 6)
    stopped = []

    def emit(kind, name, info):
        if kind == "built" and not stopped:
            stopped.append(name)
            server.stop()  # the remote goes away after the first image

    project, specs = load_and_resolve(proj.root / "starbuild.yaml")
    import httpx

    em = _emulator()
    options = BuildOptions(env={**os.environ, "STARMAGIC_API_KEY": KEY}, specs=specs, poll_base=0.01, poll_cap=0.05)
    report = build(project, options, transport=httpx.ASGITransport(app=em), emit=emit)
    assert stopped and report.exit_code == 0
    assert report.count(Outcome.BUILT) == 6 and len(proj.lock()["assets"]) == 6
    summary = report.notes[-1]
    assert summary.startswith("remote cache:") and "the remote failed" in summary, report.notes
    assert len(list((proj.root / "assets" / "current" / "icons").iterdir())) == 6


def test_remote_read_only_in_ci_on_a_branch_writes_nothing(tmp_path, bucket, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("GITHUB_HEAD_REF", "feature/new-icons")
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    proj = Project(tmp_path / "p")
    proj.config(matrix_config(3, extra=bucket.config()))
    em = _emulator()
    report = api_build(proj, em)
    assert report.exit_code == 0 and report.count(Outcome.BUILT) == 3
    assert bucket.keys() == []
    assert any("mode read-only" in n for n in report.notes)
    push = proj.run("cache", "push")
    assert push.exit_code == 3 and "read-only" in push.stderr and bucket.keys() == []


def test_remote_offline_build_pushes_nothing(tmp_path, bucket, monkeypatch):
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    proj = Project(tmp_path / "p")
    proj.config(matrix_config(3, extra=bucket.config()))
    res = proj.run("build", "--offline")
    assert res.exit_code == 0, res.stderr
    assert "mode read-only" in res.stdout
    assert bucket.keys() == []
    push = proj.run("cache", "push")  # placeholders are never pushed, even when asked
    assert push.exit_code == 0, push.stderr
    assert bucket.keys() == []


def test_remote_frozen_pulls_lock_pinned_and_fails_only_when_missing_everywhere(tmp_path, bucket, monkeypatch):
    first, _ = _built(tmp_path, bucket, monkeypatch, count=2)
    clone = _clone(first, tmp_path / "b")
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-b"))
    res = clone.run("build", "--frozen", "--json")
    assert res.exit_code == 0, res.stderr
    assert [a["status"] for a in res.json["assets"]] == ["pulled", "pulled"]
    assert clone.lock() == first.lock()  # --frozen never changes the lockfile

    gone = first.lock()["assets"]["icons/i1"]["files"][0]["sha256"]
    bucket.client().delete_object(Bucket=bucket.name, Key=f"team/v1/cas/sha256/{gone[:2]}/{gone}")
    third = _clone(first, tmp_path / "c")
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-c"))
    res = third.run("build", "--frozen")
    error = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 3 and len(error) == 1 and "icons/i1" in error[0] and "icons/i0" not in error[0]


def test_remote_cache_push_then_pull_restores_a_fresh_clone(tmp_path, bucket, monkeypatch):
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-a"))
    proj = Project(tmp_path / "a")
    proj.config(matrix_config(3))  # built before the team had a remote
    assert api_build(proj, _emulator()).exit_code == 0
    proj.config(matrix_config(3, extra=bucket.config()))
    status = proj.run("cache", "status", "--json")
    assert status.exit_code == 0 and status.json["summary"]["local"] == 3
    push = proj.run("cache", "push")
    assert push.exit_code == 0, push.stderr
    assert "pushed 3 results (3 images uploaded)" in push.stdout
    again = proj.run("cache", "push")
    assert "pushed 0 results (0 images uploaded); 3 already there" in again.stdout

    clone = _clone(proj, tmp_path / "b")
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-b"))
    status = clone.run("cache", "status", "icons/i1")
    assert status.exit_code == 0 and "pull  icons/i1" in status.stdout and "1 to pull" in status.stdout
    pull = clone.run("cache", "pull")
    assert pull.exit_code == 0, pull.stderr
    assert "3 pulled" in pull.stdout and _published(clone) == _published(proj)
    assert clone.lock() == proj.lock()


def test_remote_require_remote_refuses_before_paying_when_unreachable(tmp_path, monkeypatch):
    from remote_fixtures import AWS

    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    proj = Project(tmp_path / "p")
    proj.config(matrix_config(2, extra="cache:\n  remote:\n    url: s3://team/x\n    endpoint: http://127.0.0.1:9\n"))
    em = _emulator()
    from starbuild.errors import RemoteCacheError

    try:
        api_build(proj, em, require_remote=True)
        raised = None
    except RemoteCacheError as exc:
        raised = exc
    assert raised is not None and "127.0.0.1:9" in str(raised)
    assert em.ledger == []
    report = api_build(proj, em)  # without the flag the build goes on locally
    assert report.exit_code == 0 and len(em.ledger) == 2
    assert "the remote failed" in report.notes[-1]


def test_remote_race_that_paid_twice_keeps_both_images(tmp_path, bucket, monkeypatch):
    first, _ = _built(tmp_path, bucket, monkeypatch, count=2)
    lock = first.lock()["assets"]
    spec, other = lock["icons/i0"]["spec_hash"], lock["icons/i1"]["files"]
    key = f"team/v1/ac/main/{spec}.json"
    record = json.loads(bucket.get(key))
    bucket.put(key, json.dumps({**record, "files": [{k: other[0][k] for k in
                                                    ("sha256", "width", "height", "format", "bytes")}]}).encode())
    report = api_build(first, _emulator(), force=("icons/i0",))  # pays again for the same spec
    assert report.count(Outcome.BUILT) == 1
    mine = first.lock()["assets"]["icons/i0"]["files"][0]["sha256"]
    assert f"team/v1/alt/main/{spec}/{mine}.json" in bucket.keys()
    assert sum("paid for twice by a race" in n for n in report.notes) == 1


CHAIN = """\
version: 1
defaults:
  quality: low
images:
  hero:
    prompt: "A cozy cabin in snowy mountains at dusk"
    size: "1:1"
  night:
    prompt: "The same scene at night under a starry sky"
    inputs: ["@hero"]
    size: "1:1"
"""


def test_remote_fresh_clone_with_asset_inputs_pulls_the_whole_chain(tmp_path, bucket, monkeypatch):
    """A dependent's hash names its parent's image: once the parent is pulled, the dependent is pinned too."""
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-a"))
    first = Project(tmp_path / "a")
    first.config(CHAIN.replace("images:", bucket.config() + "images:"))
    assert api_build(first, _emulator()).exit_code == 0
    clone = _clone(first, tmp_path / "b")
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-b"))
    res = clone.run("build", "--frozen", "--json")
    assert res.exit_code == 0, res.stderr
    assert [a["status"] for a in res.json["assets"]] == ["pulled", "pulled"]
    assert clone.lock() == first.lock() and _published(clone) == _published(first)


def test_plan_and_cache_status_count_a_chain_the_remote_holds_as_free(tmp_path, bucket, monkeypatch):
    """A teammate built hero and night (which takes @hero). Here, without a lockfile, night's hash
    is only known once hero's image is: plan and `cache status` work it out from the remote, as
    the build does, instead of counting night as paid. A changed dependent is still paid for."""
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-a"))
    first = Project(tmp_path / "a")
    first.config(CHAIN.replace("images:", bucket.config() + "images:"))
    assert api_build(first, _emulator()).exit_code == 0
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-b"))
    other = Project(tmp_path / "b")
    other.config(CHAIN.replace("images:", bucket.config() + "images:"))  # no lockfile
    monkeypatch.setenv("STARMAGIC_API_KEY", KEY)
    plan = other.run("plan", "--json")
    assert plan.exit_code == 0, plan.stderr
    assert [(a["name"], a["from_cache"], a["credits"]) for a in plan.json["assets"]] == \
        [("hero", True, 0.0), ("night", True, 0.0)]
    assert plan.json["summary"]["credits"] == 0
    status = other.run("cache", "status", "--json")
    assert status.exit_code == 0, status.stderr
    rows = {r["name"]: r for r in status.json["assets"]}
    assert [rows[n]["action"] for n in ("hero", "night")] == ["pull", "pull"]
    assert rows["night"]["spec_hash"] == first.lock()["assets"]["night"]["spec_hash"]
    fresh = _emulator()
    assert api_build(other, fresh).exit_code == 0 and fresh.ledger == []  # what the plan said: nothing paid
    third = Project(tmp_path / "c")
    third.config(CHAIN.replace("images:", bucket.config() + "images:").replace("starry sky", "full moon"))
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-c"))
    plan = third.run("plan", "--json")
    assert [(a["name"], a["from_cache"]) for a in plan.json["assets"]] == [("hero", True), ("night", False)]
    assert plan.json["summary"]["credits"] > 0


def test_remote_result_whose_bytes_are_missing_is_a_miss(tmp_path, bucket, monkeypatch):
    first, _ = _built(tmp_path, bucket, monkeypatch, count=2)
    gone = first.lock()["assets"]["icons/i1"]["files"][0]["sha256"]
    bucket.client().delete_object(Bucket=bucket.name, Key=f"team/v1/cas/sha256/{gone[:2]}/{gone}")
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-b"))
    other = Project(tmp_path / "b")
    other.config(matrix_config(2, extra=bucket.config()))  # no lockfile: found by spec hash only
    fresh = _emulator()
    report = api_build(other, fresh)
    assert {r.name: r.outcome for r in report.results} == {"icons/i0": Outcome.PULLED, "icons/i1": Outcome.BUILT}
    assert ledger_prompts(fresh) == ["icon 1"]


def test_remote_stopped_mid_build_cli_exits_0_and_says_so(tmp_path, monkeypatch):
    """The same outage seen from the command line: the process itself exits 0."""
    import time

    from moto.server import ThreadedMotoServer

    from remote_fixtures import AWS

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    remote = _own_bucket(host, port)
    proj = Project(tmp_path / "p")
    proj.config(matrix_config(8, concurrency=2, extra=remote.config()))
    em = _emulator(latency=0.3)
    log = tmp_path / "build.log"
    with serve_in_thread(em) as url, log.open("w") as out:
        env = {**os.environ, **AWS, "STARMAGIC_API_KEY": KEY, "STARMAGIC_BASE_URL": url, "STARMAGIC_FILES_URL": url,
               "STARBUILD_CACHE_DIR": str(tmp_path / "cache")}
        proc = subprocess.Popen([sys.executable, "-m", "starbuild", "-C", str(proj.root), "build"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "built " not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        server.stop()
        assert proc.wait(timeout=120) == 0, log.read_text()
    text = log.read_text()
    assert len(em.ledger) == 8 and len(proj.lock()["assets"]) == 8
    summary = [line for line in text.splitlines() if line.startswith("note: remote cache:")]
    assert len(summary) == 1 and "the remote failed" in summary[0], text
    assert "Traceback" not in text


def test_remote_result_naming_lost_images_is_replaced_not_paid_for_forever(tmp_path, bucket, monkeypatch):
    """A result whose image is gone would make every build pay again: the next good result replaces it."""
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    proj = Project(tmp_path / "p")
    proj.config(matrix_config(1, extra=bucket.config()))
    spec = proj.hashes()["icons/i0"]
    lost = "0" * 63 + "1"
    bucket.put(f"team/v1/ac/main/{spec}.json", json.dumps({
        "spec_hash": spec, "files": [{"sha256": lost, "width": 1024, "height": 1024, "format": "png", "bytes": 9}],
        "model": "gpt-image-2", "credits": 0.11}).encode())
    em = _emulator()
    report = api_build(proj, em)
    assert report.count(Outcome.BUILT) == 1 and len(em.ledger) == 1
    record = json.loads(bucket.get(f"team/v1/ac/main/{spec}.json"))
    assert record["files"][0]["sha256"] == proj.lock()["assets"]["icons/i0"]["files"][0]["sha256"] != lost
    assert not [k for k in bucket.keys() if "/alt/" in k]
    assert any("missing or corrupt; replaced" in n for n in report.notes)
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-2"))
    clone = _clone(proj, tmp_path / "clone")
    again = api_build(clone, em)
    assert again.count(Outcome.PULLED) == 1 and len(em.ledger) == 1


def test_remote_require_remote_makes_an_outage_mid_build_fatal(tmp_path, monkeypatch):
    """With --require-remote nothing is paid for without a claim, and the build exits 1."""
    server, remote, proj = _on_own_server(tmp_path, monkeypatch, 6)
    proj.config(matrix_config(6, concurrency=1, extra=remote.config()))
    from starbuild.config.resolve import load_and_resolve
    from starbuild.engine.build import BuildOptions, build
    import httpx

    stopped = []

    def emit(kind, name, info):
        if kind == "built" and not stopped:
            stopped.append(name)
            server.stop()

    project, specs = load_and_resolve(proj.root / "starbuild.yaml")
    em = _emulator()
    options = BuildOptions(env={**os.environ, "STARMAGIC_API_KEY": KEY}, specs=specs, poll_base=0.01, poll_cap=0.05,
                           require_remote=True)
    report = build(project, options, transport=httpx.ASGITransport(app=em), emit=emit)
    assert stopped and int(report.exit_code) == 1
    built = report.count(Outcome.BUILT)
    assert len(em.ledger) == built < 6  # what could not be claimed was not paid for
    assert all((r.error or "").startswith(f"remote cache {remote.url}: ") for r in report.results
               if r.outcome == Outcome.FAILED)
    assert "the remote failed" in report.notes[-1]


def test_remote_holds_the_ledger_of_each_cache_so_a_team_can_total_it(tmp_path, bucket, monkeypatch):
    import asyncio

    from starbuild.spend.ledger import LEDGER_NAME, parse_lines
    from starbuild.spend.remote import team_events
    from starbuild.store.remote import open_remote

    first, em = _built(tmp_path, bucket, monkeypatch, count=2)
    ledgers = [k for k in bucket.keys() if "/v1/files/ledger/" in f"/{k}" and k.endswith(".jsonl")]
    assert len(ledgers) == 1, bucket.keys()
    local = list(parse_lines((tmp_path / "cache-a" / LEDGER_NAME).read_bytes().splitlines()))
    settled = [e for e in local if e.get("event") == "settle"]
    assert len(settled) == 2 == len(em.ledger)

    from starbuild.config.project import load_config

    async def team() -> list[dict]:
        remote = open_remote(load_config(first.root / "starbuild.yaml"), dict(os.environ))
        try:
            return await team_events(remote)
        finally:
            await remote.close()

    assert sorted(map(json.dumps, asyncio.run(team()))) == sorted(map(json.dumps, local))


def test_remote_pulls_are_cache_hits_on_the_ledger(tmp_path, bucket, monkeypatch):
    from starbuild.spend.ledger import LEDGER_NAME, parse_lines

    first, em = _built(tmp_path, bucket, monkeypatch, count=3)
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-b"))
    clone = _clone(first, tmp_path / "b")
    report = api_build(clone, em)
    assert report.count(Outcome.PULLED) == 3 and len(em.ledger) == 3  # nothing paid again
    events = list(parse_lines((tmp_path / "cache-b" / LEDGER_NAME).read_bytes().splitlines()))
    hits = [e for e in events if e["event"] == "cache_hit"]
    assert len(hits) == 3 == len(events) and all(e["outcome"] == "pulled" for e in hits)
    assert sum(e["credits_saved"] for e in hits) > 0
    res = clone.run("spend", "--json")
    assert res.exit_code == 0 and res.json["cache_hits"] == 3 and res.json["credits_reserved"] == 0
