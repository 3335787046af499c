"""Leases of the remote cache: create-only claims, waiting on a teammate, taking over, giving up.

The primitives run on both backends (moto's S3 server and a shared folder); the builds use a
shared folder (``file://``), which behaves the same and keeps these tests quick.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import Project, api_build, ledger_prompts, matrix_config
from remote_fixtures import bucket, moto_endpoint  # noqa: F401  (fixtures)
from starbuild.emulator import Emulator, EmulatorConfig, Faults
from starbuild.engine.outcome import Outcome
from starbuild.store.remote.backend import FileBackend
from starbuild.store.remote.cache import RemoteCache
from starbuild.store.remote.settings import RemoteSettings

H = "ab" * 32


def _settings(url: str, mode: str = "read-write", lease_wait: float = 5.0) -> RemoteSettings:
    return RemoteSettings(url=url, endpoint=None, mode=mode, why="test", namespace="main", read_namespaces=(),
                          lease_wait=lease_wait)


@pytest.fixture(params=["file", "s3"])
def backend(request, tmp_path):
    if request.param == "file":
        return FileBackend(tmp_path / "shared", f"file://{tmp_path / 'shared'}")
    b = request.getfixturevalue("bucket")
    from starbuild.store.remote.s3 import S3Backend

    return S3Backend(b.url, b.endpoint, {})


def test_lease_is_create_only_with_holder_expiry_and_task_id(backend):
    async def go():
        ana = RemoteCache(backend, _settings(backend.url), holder="ana@laptop")
        ben = RemoteCache(backend, _settings(backend.url), holder="ben@ci")
        assert await ana.take_lease(H, ttl=60) is True
        assert await ben.take_lease(H, ttl=60) is False  # one claim per spec
        lease = await ben.find_lease(H)
        assert lease.holder == "ana@laptop" and lease.run == ana.run and lease.live(time.time())
        assert 55 < lease.expires - time.time() <= 60 and lease.task_id is None
        await ana.note_task(H, 60, "task-unified-1-abc")
        assert (await ben.find_lease(H)).task_id == "task-unified-1-abc"
        await ana.renew(H, 600)  # a long queue: the claim is kept alive, with its task id
        renewed = await ben.find_lease(H)
        assert renewed.expires - time.time() > 590 and renewed.task_id == "task-unified-1-abc"
        await ben.drop_lease(H)  # not ben's: stays
        assert (await ana.find_lease(H)) is not None
        await ana.drop_lease(H)
        assert await ben.find_lease(H) is None
        await ana.close()

    asyncio.run(go())


def test_lease_expired_is_taken_over_by_one_machine_only(backend):
    async def go():
        old = RemoteCache(backend, _settings(backend.url), holder="gone@host")
        assert await old.take_lease(H, ttl=-1)  # already expired
        ana = RemoteCache(backend, _settings(backend.url), holder="ana")
        ben = RemoteCache(backend, _settings(backend.url), holder="ben")
        seen_by_ana, seen_by_ben = await ana.find_lease(H), await ben.find_lease(H)
        assert not seen_by_ana.live(time.time())
        assert await ana.take_over(H, seen_by_ana, 60) is True
        assert await ben.take_over(H, seen_by_ben, 60) is False  # the claim changed under ben
        assert (await ben.find_lease(H)).holder == "ana"

    asyncio.run(go())


def test_read_only_cache_takes_no_lease_and_writes_nothing(backend):
    async def go():
        ro = RemoteCache(backend, _settings(backend.url, mode="read-only"))
        assert await ro.take_lease(H, 60) is None
        assert await ro.put_file("ledger/x.jsonl", b"{}\n") is False
        assert await ro.push_result(H, {"files": []}) == "skipped"
        assert await backend.list("v1") == []

    asyncio.run(go())


# -- builds against a shared folder ------------------------------------------------------------


def _remote_config(path: Path, extra: str = "") -> str:
    return f"cache:\n  remote:\n    url: file://{path}\n{extra}"


def _prepared(tmp_path: Path, monkeypatch) -> tuple[Path, Project]:
    """A teammate's remote holding one image (built elsewhere), and a new project of the same spec."""
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-teammate"))
    teammate = Project(tmp_path / "teammate")
    done = tmp_path / "their-remote"
    teammate.config(matrix_config(1, extra=_remote_config(done)))
    assert api_build(teammate, Emulator(EmulatorConfig(render="plain"))).exit_code == 0
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache-me"))
    return done, teammate


def _plant_lease(shared: Path, spec_hash: str, expires: float, holder: str = "ana@laptop") -> Path:
    path = shared / "v1" / "lease" / "main" / f"{spec_hash}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"holder": holder, "run": "r1", "expires": expires, "task_id": "task-x"}))
    return path


def _build(proj: Project, em: Emulator):
    events: list[tuple[str, str, dict]] = []
    from starbuild.config.resolve import load_and_resolve
    from starbuild.engine.build import BuildOptions, build
    import os

    import httpx

    from conftest import KEY

    project, specs = load_and_resolve(proj.root / "starbuild.yaml")
    options = BuildOptions(env={**os.environ, "STARMAGIC_API_KEY": KEY}, specs=specs, poll_base=0.01, poll_cap=0.05)
    report = build(project, options, transport=httpx.ASGITransport(app=em), emit=lambda *e: events.append(e))
    return report, events


def test_build_waits_for_a_live_lease_and_publishes_the_result(tmp_path, monkeypatch):
    done, teammate = _prepared(tmp_path, monkeypatch)
    shared = tmp_path / "shared"
    spec = teammate.lock()["assets"]["icons/i0"]["spec_hash"]
    _plant_lease(shared, spec, time.time() + 60)
    me = Project(tmp_path / "me")
    me.config(matrix_config(1, extra=_remote_config(shared, "    lease_wait: 30\n")))

    def teammate_finishes():
        time.sleep(0.6)
        shutil.copytree(done / "v1" / "cas", shared / "v1" / "cas")
        shutil.copytree(done / "v1" / "ac", shared / "v1" / "ac")

    thread = threading.Thread(target=teammate_finishes)
    thread.start()
    em = Emulator(EmulatorConfig(render="plain"))
    started = time.monotonic()
    report, events = _build(me, em)
    thread.join()
    assert time.monotonic() - started >= 0.5
    assert [r.outcome for r in report.results] == [Outcome.PULLED] and em.ledger == []
    waiting = [e for e in events if e[0] == "waiting"]
    assert len(waiting) == 1 and waiting[0][1] == "icons/i0" and waiting[0][2]["holder"] == "ana@laptop"
    assert me.lock()["assets"]["icons/i0"]["files"] == teammate.lock()["assets"]["icons/i0"]["files"]
    assert "1 hits, 0 uploads, 1 waits, 0 errors" in report.notes[-1]


def test_cache_status_shows_what_would_be_pulled_waited_for_or_paid(tmp_path, monkeypatch):
    done, teammate = _prepared(tmp_path, monkeypatch)
    shared = tmp_path / "shared"
    me = Project(tmp_path / "me")
    me.config(matrix_config(3, extra=_remote_config(shared)))
    hashes = me.hashes()
    shutil.copytree(done / "v1", shared / "v1")  # icons/i0 is in the remote
    _plant_lease(shared, hashes["icons/i1"], time.time() + 120)  # icons/i1 is being made
    res = me.run("cache", "status", "--json")
    assert res.exit_code == 0, res.stderr
    actions = {a["name"]: a["action"] for a in res.json["assets"]}
    assert actions == {"icons/i0": "pull", "icons/i1": "wait", "icons/i2": "pay"}
    assert res.json["summary"] == {"local": 0, "pull": 1, "wait": 1, "pay": 1, "credits": 0.11}
    text = me.run("cache", "status").stdout
    assert "wait  icons/i1  (being made by ana@laptop" in text


def test_build_takes_over_an_expired_lease_and_pays_once(tmp_path, monkeypatch):
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    shared = tmp_path / "shared"
    me = Project(tmp_path / "me")
    me.config(matrix_config(1, extra=_remote_config(shared)))
    spec = me.hashes()["icons/i0"]
    lease = _plant_lease(shared, spec, time.time() - 5, holder="crashed@ci")
    em = Emulator(EmulatorConfig(render="plain"))
    report, events = _build(me, em)
    assert [r.outcome for r in report.results] == [Outcome.BUILT] and ledger_prompts(em) == ["icon 0"]
    assert not [e for e in events if e[0] == "waiting"]
    assert not lease.exists()  # taken over, then released once the result was published
    assert (shared / "v1" / "ac" / "main" / f"{spec}.json").is_file()


def test_build_gives_up_waiting_after_lease_wait_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    shared = tmp_path / "shared"
    me = Project(tmp_path / "me")
    me.config(matrix_config(1, extra=_remote_config(shared, "    lease_wait: 0.3\n")))
    _plant_lease(shared, me.hashes()["icons/i0"], time.time() + 600)
    em = Emulator(EmulatorConfig(render="plain"))
    report, events = _build(me, em)
    assert [r.outcome for r in report.results] == [Outcome.BUILT] and len(em.ledger) == 1
    assert any("waited 0.3 s for ana@laptop's image of icons/i0; paid for it instead" in n for n in report.notes)


def test_build_releases_its_lease_when_the_task_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    shared = tmp_path / "shared"
    me = Project(tmp_path / "me")
    me.config(matrix_config(2, extra=_remote_config(shared)))
    em = Emulator(EmulatorConfig(render="plain", faults=Faults(rate_task_failed=1.0)))
    report, _ = _build(me, em)
    assert report.count(Outcome.FAILED) == 2
    assert list((shared / "v1" / "lease" / "main").iterdir()) == []  # a teammate may try at once
    assert not (shared / "v1" / "ac").exists()


def test_shared_folder_two_clones_pay_once(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    em = Emulator(EmulatorConfig(render="plain"))
    for name in ("a", "b"):
        monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / f"cache-{name}"))
        proj = Project(tmp_path / name)
        proj.config(matrix_config(3, extra=_remote_config(shared)))
        report = api_build(proj, em)
        assert report.exit_code == 0
    assert len(em.ledger) == 3 and report.count(Outcome.PULLED) == 3


def test_build_claims_only_what_it_is_about_to_pay_for(tmp_path, monkeypatch):
    """Claims are bounded by concurrency, so a second machine shares a big build instead of waiting on it."""
    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / "cache"))
    shared = tmp_path / "shared"
    me = Project(tmp_path / "me")
    me.config(matrix_config(8, concurrency=2, extra=_remote_config(shared)))
    leases = shared / "v1" / "lease" / "main"
    seen: list[int] = []
    from starbuild.config.resolve import load_and_resolve
    from starbuild.engine.build import BuildOptions, build
    import os

    import httpx

    from conftest import KEY

    def emit(kind, name, info):
        if kind == "submitted" and not seen:
            seen.append(len(list(leases.iterdir())))

    project, specs = load_and_resolve(me.root / "starbuild.yaml")
    em = Emulator(EmulatorConfig(render="plain"))
    options = BuildOptions(env={**os.environ, "STARMAGIC_API_KEY": KEY}, specs=specs, poll_base=0.01, poll_cap=0.05)
    report = build(project, options, transport=httpx.ASGITransport(app=em), emit=emit)
    assert report.count(Outcome.BUILT) == 8 and len(em.ledger) == 8
    assert seen and 1 <= seen[0] <= 2, seen
    assert list(leases.iterdir()) == []


def test_held_claims_are_renewed_until_released(tmp_path):
    """A claim waiting in a long queue stays live: the build renews it every third of its life."""
    from starbuild.engine.remote import BuildRemote
    from starbuild.plan.planner import PlannedAsset, Status
    from starbuild.store.objects import ObjectStore

    async def go():
        backend = FileBackend(tmp_path / "shared", "file://shared")
        cache = RemoteCache(backend, _settings(backend.url), holder="ana")
        remote = BuildRemote(cache, ObjectStore(tmp_path / "cache"), placeholder=False, frozen=False, lease_ttl=0.6,
                             emit=lambda *a: None, claims=1)
        asset = PlannedAsset("hero", Status.NEW, "not built yet", None, H, 0.1)
        assert await remote.before_paying(asset, H, None, {"name": "hero"}) is None  # claimed: pay
        await asyncio.sleep(1.5)  # more than twice the claim's life
        other = RemoteCache(backend, _settings(backend.url), holder="ben")
        lease = await other.find_lease(H)
        assert lease.holder == "ana" and lease.live(time.time())
        assert await other.take_lease(H, 60) is False
        await remote.close()  # releases it
        assert await other.find_lease(H) is None

    asyncio.run(go())


def test_text_read_from_the_remote_is_escaped(tmp_path):
    """A holder name is shown to teammates: control characters from a shared place never reach a terminal."""
    shared = tmp_path / "shared"
    _plant_lease(shared, H, time.time() + 60, holder="ana\x1b[2J\x07")

    async def go():
        cache = RemoteCache(FileBackend(shared, "file://shared"), _settings("file://shared"))
        return await cache.find_lease(H)

    lease = asyncio.run(go())
    assert "\x1b" not in lease.holder and "\x07" not in lease.holder and lease.holder.startswith("ana")


def test_answers_that_depend_on_the_remote_are_never_replayed(tmp_path, monkeypatch):
    """`plan` says what the remote holds now, not what it held when the same command last ran."""
    import os
    import subprocess
    import sys

    done, teammate = _prepared(tmp_path, monkeypatch)
    shared = tmp_path / "shared"
    me = Project(tmp_path / "me")
    me.config(matrix_config(1, extra=_remote_config(shared)))
    shutil.copy(teammate.root / "starbuild.lock", me.root / "starbuild.lock")
    env = {**os.environ, "STARBUILD_CACHE_DIR": str(tmp_path / "cache-me")}
    env.pop("STARBUILD_NO_PLAN_CACHE", None)

    def plan() -> str:
        res = subprocess.run([sys.executable, "-m", "starbuild", "-C", str(me.root), "plan"], env=env,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return res.stdout

    assert "in the remote cache" not in plan()
    time.sleep(2.1)  # past the plan cache's distrust window, had it kept the answer
    assert "in the remote cache" not in plan()
    shutil.copytree(done / "v1", shared / "v1")  # the teammate pushes
    assert "in the remote cache" in plan()
