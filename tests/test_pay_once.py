"""Never pay twice, never lose a paid image: gc, the project lock, shared specs, journal failures,
odd answers, requests that never left, refused keys, corrupt objects, a copied `current`, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import KEY, api_build, matrix_config
from starbuild.emulator import Emulator, EmulatorConfig, Faults, serve_in_thread
from starbuild.engine.outcome import Outcome
from starbuild.engine.project_lock import project_lock


def _cli(proj, url: str, *args: str, env: dict | None = None, **popen):
    env = {**os.environ, "STARMAGIC_API_KEY": KEY, "STARMAGIC_BASE_URL": url, "STARMAGIC_FILES_URL": url,
           **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "starbuild", "-C", str(proj.root), *args], env=env, **popen)


def _objects(cache: Path) -> set[str]:
    return {p.name for p in (cache / "objects").glob("??/*")}


# --- gc ---------------------------------------------------------------------------------------


def test_gc_keeps_paid_images_of_a_failed_publish(project, emulator, tmp_path):
    project.config(matrix_config(2))
    (project.root / "assets").mkdir(parents=True)
    (project.root / "assets" / "v0001").write_text("in the way")  # the publish of v0001 fails
    with pytest.raises(Exception) as info:
        api_build(project, emulator)
    assert "v0001" in str(info.value) and len(emulator.ledger) == 2
    cache = tmp_path / ".cache"
    paid = _objects(cache)
    assert len(paid) == 2
    dry = project.run("gc", "--dry-run")
    assert dry.exit_code == 0 and "would remove 0 unreferenced objects" in dry.stdout
    assert "kept 2 paid image(s)" in dry.stdout
    assert project.run("gc").exit_code == 0 and _objects(cache) == paid
    (project.root / "assets" / "v0001").unlink()
    report = api_build(project, emulator)
    assert report.exit_code == 0 and report.count(Outcome.CACHED) == 2 and len(emulator.ledger) == 2


def test_gc_dry_run_lists_what_gc_then_removes(project, emulator, tmp_path):
    keep1 = "output:\n  keep: 1\n"
    project.config(matrix_config(1, prompt="old", extra=keep1))
    api_build(project, emulator)
    old = _objects(tmp_path / ".cache")
    project.config(matrix_config(1, prompt="new", extra=keep1))
    api_build(project, emulator)
    dry = project.run("gc", "--dry-run")
    (sha,) = old
    assert f"would remove object {sha}" in dry.stdout and "would remove 1 unreferenced" in dry.stdout
    assert sha in _objects(tmp_path / ".cache")  # a dry run removes nothing
    res = project.run("gc")
    assert "removed 1 unreferenced" in res.stdout and sha not in _objects(tmp_path / ".cache")
    assert project.run("gc", "--dry-run").stdout.startswith("would remove 0")


# --- the project lock ---------------------------------------------------------------------------


def test_lock_excludes_builds_with_different_cache_folders(project, emulator, tmp_path):
    project.config(matrix_config(1))
    with project_lock(project.root, tmp_path / "cache-of-another-build"):
        res = project.run("build", "--offline", env={"STARBUILD_CACHE_DIR": str(tmp_path / "cache-b")})
    assert res.exit_code == 3 and "another starbuild run" in res.stderr
    assert not (project.root / "starbuild.lock").exists()
    res = project.run("build", "--offline", env={"STARBUILD_CACHE_DIR": str(tmp_path / "cache-b")})
    assert res.exit_code == 0


def test_lock_watch_waits_for_the_lock_instead_of_dropping_the_build(project, tmp_path):
    from starbuild.engine.build import BuildOptions
    from starbuild.ui.watch import Watcher

    project.config(matrix_config(1))
    lines: list[str] = []
    watcher = Watcher(project.root / "starbuild.yaml", BuildOptions(offline=True), say=lines.append)
    held = threading.Event()

    def hold_for_a_moment() -> None:
        with project_lock(project.root, tmp_path / "elsewhere"):
            held.set()
            time.sleep(0.5)

    thread = threading.Thread(target=hold_for_a_moment)
    thread.start()
    assert held.wait(5)
    report = watcher.build_once()
    thread.join()
    assert report is not None and report.count(Outcome.BUILT) == 1, lines
    assert not any("another starbuild run" in line for line in lines)


# --- one submission per spec ------------------------------------------------------------------


@pytest.mark.parametrize("faults", [Faults(), Faults(rate_slow_submit=1.0, slow_submit_seconds=0.1)])
def test_identical_specs_are_submitted_once_and_both_published(project, faults):
    # (A slow submit answer has the second asset look while the first is on the wire.)
    em = Emulator(EmulatorConfig(render="plain", latency=0.2, faults=faults))
    project.config("version: 1\nprovider:\n  concurrency: 4\ndefaults:\n  size: '1:1'\n  quality: low\n"
                   "images:\n  hero:\n    prompt: a red door\n  hero-copy:\n    prompt: a red door\n"
                   "  other:\n    prompt: a blue door\n")
    report = api_build(project, em, max_credits=1)
    assert report.exit_code == 0, [r.error for r in report.results]
    assert sorted(e.request["prompt"] for e in em.ledger) == ["a blue door", "a red door"]
    lock = project.lock()["assets"]
    assert lock["hero"]["files"][0]["sha256"] == lock["hero-copy"]["files"][0]["sha256"]
    current = project.root / "assets" / "current"
    assert (current / "hero.png").read_bytes() == (current / "hero-copy.png").read_bytes()
    assert report.credits_reserved == pytest.approx(0.22)


# --- the journal cannot be written --------------------------------------------------------------


class _BrokenJournal:
    """A journal whose writes fail from a given point: ``intend`` or ``submitted``."""

    def __init__(self, inner, fail_at: str):
        self.inner, self.fail_at = inner, fail_at

    def __getattr__(self, name):
        from starbuild.errors import StoreError

        attr = getattr(self.inner, name)
        if name in ("intend", "submitted") and name == self.fail_at:
            def broken(*args, **kwargs):
                raise StoreError("cannot write the journal: [Errno 28] No space left on device")
            return broken
        return attr


@pytest.mark.parametrize("fail_at", ["intend", "submitted"])
def test_journal_write_failure_leaks_no_slot_or_hold_and_keeps_accepted_tasks(project, tmp_path, fail_at):
    from starbuild.api.client import RetryPolicy, StarMagicClient
    from starbuild.config.resolve import load_and_resolve
    from starbuild.engine.build import plan_project
    from starbuild.engine.journal import Journal
    from starbuild.engine.runner import RunOptions, Runner
    from starbuild.store.objects import ObjectStore

    em = Emulator(EmulatorConfig(render="plain", latency=0.1))
    project.config(matrix_config(6, concurrency=2))
    proj, specs = load_and_resolve(project.root / "starbuild.yaml")
    todo = plan_project(proj, specs=specs).to_build()
    journal = Journal(tmp_path / "journal")

    async def main():
        async with StarMagicClient("http://starmagic.emulator", KEY, transport=httpx.ASGITransport(app=em),
                                   retry=RetryPolicy(attempts=2, base=0.01, cap=0.01)) as client:
            runner = Runner(client, _BrokenJournal(journal, fail_at), ObjectStore(tmp_path / "store"),
                            project.root, RunOptions(concurrency=2, max_credits=5, poll_base=0.01, poll_cap=0.02))
            results = await asyncio.wait_for(runner.run(todo), timeout=20)  # a leaked slot would hang here
            return runner, results

    runner, results = asyncio.run(main())
    journal.close()
    assert runner.limit.in_use == 0 and runner.budget.pending == pytest.approx(0.0)
    built = [r for r in results if r.outcome == Outcome.BUILT]
    assert len(built) == len(em.ledger)  # every task the API accepted was downloaded and stored
    assert all(ObjectStore(tmp_path / "store").has(r.files[0]["sha256"]) for r in built)
    if fail_at == "intend":
        assert not em.ledger and results[0].outcome == Outcome.FAILED
        assert "No space left" in results[0].error
    else:
        assert 1 <= len(em.ledger) <= 2
    others = [r for r in results if r.outcome != Outcome.BUILT]
    assert others and all(r.outcome == Outcome.FAILED and "journal" in r.error for r in others)


# --- odd answers, requests that never left, refusals -------------------------------------------


@pytest.mark.parametrize("fault", ["rate_progress_overflow", "rate_usage_huge"])
def test_submit_answer_with_an_overflowing_number_keeps_the_task(project, fault):
    em = Emulator(EmulatorConfig(render="plain", faults=Faults(**{fault: 1.0})))
    project.config(matrix_config(3))
    report = api_build(project, em)
    assert report.exit_code == 0 and report.count(Outcome.BUILT) == 3 and len(em.ledger) == 3
    json.loads((project.root / "starbuild.lock").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert api_build(project, em).count(Outcome.CACHED) == 3 and len(em.ledger) == 3


@pytest.mark.parametrize("env", [{"STARMAGIC_BASE_URL": "127.0.0.1:9"}, {"STARMAGIC_BASE_URL": "starmagic.emulator"},
                                 {"STARMAGIC_API_KEY": "sk-caf\u00e9"}, {"STARMAGIC_API_KEY": "sk-one\nsk-two"}])
def test_request_that_cannot_leave_the_machine_is_refused_before_sending(project, emulator, env):
    project.config(matrix_config(1))
    res = project.run("build", env={"STARMAGIC_API_KEY": KEY, "STARMAGIC_BASE_URL": "https://example.invalid",
                                    **env})
    assert res.exit_code == 2, res.stderr
    assert "Traceback" not in res.stderr and "may have been" not in res.stderr
    for value in env.values():
        if "sk-" in value:
            assert value not in res.stderr  # the key is never shown
    # Nothing is left "of unknown outcome": a good setting builds at once.
    assert api_build(project, emulator).exit_code == 0 and len(emulator.ledger) == 1


def test_client_reports_an_unsendable_submission_as_not_sent():
    from starbuild.api.client import StarMagicClient
    from starbuild.errors import NotSentError

    async def main():
        async with StarMagicClient("starmagic.emulator", KEY) as client:
            await client.submit({"model": "gpt-image-2", "prompt": "x"})

    with pytest.raises(NotSentError):
        asyncio.run(main())


def test_refused_key_stops_submitting_at_once_with_one_message(project):
    em = Emulator(EmulatorConfig(render="plain", api_key="sk-another-key"))
    project.config(matrix_config(12, concurrency=4))
    with serve_in_thread(em) as url:
        proc = _cli(project, url, "build", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert em.counters["submit"] <= 4  # what was already on its way; nothing after the first 401
    assert out.count("stopped:") == 1 and "refused the key" in out and "not submitted" in out
    assert "skipped:" not in out and "Traceback" not in err


def test_exhausted_credits_stop_submitting_exit_3(project):
    em = Emulator(EmulatorConfig(render="plain", credit_balance=0.3))
    project.config(matrix_config(10, concurrency=1))
    report = api_build(project, em)
    assert len(em.ledger) == 2 and report.count(Outcome.BUILT) == 2
    assert em.counters["submit"] == 3  # two accepted, one 402, then no more
    assert report.exit_code == 3 and "out of credits" in report.stopped


# --- publishing ---------------------------------------------------------------------------------


def test_published_files_are_copies_an_edit_cannot_spread(project, emulator, tmp_path):
    project.config(matrix_config(1))
    api_build(project, emulator)
    published = project.root / "assets" / "current" / "icons" / "i0.png"
    sha = project.lock()["assets"]["icons/i0"]["files"][0]["sha256"]
    obj = tmp_path / ".cache" / "objects" / sha[:2] / sha
    assert published.stat().st_ino != obj.stat().st_ino and published.stat().st_nlink == 1
    with published.open("r+b") as fh:  # an in-place edit of the published file
        fh.seek(60)
        fh.write(b"\x00\xff" * 8)
    project.config(matrix_config(2))
    assert api_build(project, emulator).version == 2
    republished = project.root / "assets" / "current" / "icons" / "i0.png"
    assert republished.read_bytes() == obj.read_bytes()
    assert project.lock()["assets"]["icons/i0"]["files"][0]["sha256"] == sha


def test_a_corrupt_store_object_is_never_published(project, emulator, tmp_path):
    project.config(matrix_config(1))
    api_build(project, emulator)
    sha = project.lock()["assets"]["icons/i0"]["files"][0]["sha256"]
    obj = tmp_path / ".cache" / "objects" / sha[:2] / sha
    for damaged in (obj, project.root / "assets" / "current" / "icons" / "i0.png"):
        os.chmod(damaged, 0o644)
        damaged.write_bytes(damaged.read_bytes()[:-20] + b"bitrot" * 4)
    project.config(matrix_config(2))
    report = api_build(project, emulator)
    assert report.version == 2 and any("icons/i0" in n and "sha256" in n for n in report.notes)
    v2 = project.root / "assets" / "v0002"
    assert not (v2 / "icons" / "i0.png").exists() and "icons/i0" not in project.lock()["assets"]
    report = api_build(project, emulator)  # the next build makes it again
    assert report.count(Outcome.BUILT) == 1 and len(emulator.ledger) == 3
    assert project.lock()["assets"]["icons/i0"]["files"][0]["sha256"] == sha


# --- the output folder ----------------------------------------------------------------------------


def test_current_copied_into_a_real_folder_is_repaired(project, emulator):
    project.config(matrix_config(2))
    api_build(project, emulator)
    assets = project.root / "assets"
    (assets / "current").unlink()
    shutil.copytree(assets / "v0001", assets / "current")  # what cp -rL makes of it
    project.config(matrix_config(3))
    report = api_build(project, emulator)
    assert report.exit_code == 0 and report.version == 2
    assert os.readlink(assets / "current") == "v0002" and len(emulator.ledger) == 3


def test_current_as_the_only_copy_of_its_version_becomes_the_version_again(project, emulator):
    project.config(matrix_config(1))
    api_build(project, emulator)
    assets = project.root / "assets"
    (assets / "current").unlink()
    (assets / "v0001").rename(assets / "current")  # a CI artifact of `current` alone
    assert api_build(project, emulator).exit_code == 0
    assert os.readlink(assets / "current") == "v0001" and (assets / "v0001" / "icons" / "i0.png").is_file()


def test_current_folder_that_is_not_a_copy_is_a_located_error_before_paying(project, emulator):
    project.config(matrix_config(1))
    (project.root / "assets" / "current").mkdir(parents=True)
    (project.root / "assets" / "current" / "mine.png").write_bytes(b"user data")
    res = project.run("build", env={"STARMAGIC_API_KEY": KEY, "STARMAGIC_BASE_URL": "http://127.0.0.1:9"})
    assert res.exit_code == 2 and "starbuild.yaml" in res.stderr and "output.dir" in res.stderr
    assert "assets/current is a folder" in res.stderr and "Traceback" not in res.stderr
    assert (project.root / "assets" / "current" / "mine.png").read_bytes() == b"user data"
    assert not emulator.ledger


def test_output_dir_naming_a_file_is_a_located_error_before_paying(project, emulator):
    project.config(matrix_config(1, extra="output:\n  dir: build/images\n"))
    (project.root / "build").write_text("a file")
    with pytest.raises(Exception) as info:
        api_build(project, emulator)
    assert info.value.exit_code == 2 and "output.dir" in str(info.value) and "is a file" in str(info.value)
    assert not emulator.ledger


# --- SIGTERM ------------------------------------------------------------------------------------


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to its background jobs


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_sigterm_ends_a_build_like_ctrl_c_and_the_next_build_resumes(project, tmp_path, sigint):
    em = Emulator(EmulatorConfig(render="plain", latency=2.0))
    project.config(matrix_config(3, concurrency=3))
    log = tmp_path / "log"
    extra = {"preexec_fn": _ignore_sigint} if sigint == "ignored" else {}
    with serve_in_thread(em) as url:
        with log.open("w") as fh:
            proc = _cli(project, url, "build", stdout=fh, stderr=subprocess.STDOUT, **extra)
            deadline = time.monotonic() + 30
            while log.read_text().count("submitted ") < 3:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        text = log.read_text()
        assert proc.returncode == 143 and "terminated" in text and "Traceback" not in text
        assert "did not stop within" not in text  # it stopped at once, not by its watchdog
        assert not (project.root / ".starbuild" / "build.pid").exists()  # the lock was let go
        second = _cli(project, url, "build", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert [a["status"] for a in json.loads(out)["assets"]] == ["resumed"] * 3 and len(em.ledger) == 3


def test_rollback_repairs_a_copied_current_instead_of_crashing(project, emulator):
    project.config(matrix_config(1, prompt="one"))
    api_build(project, emulator)
    project.config(matrix_config(1, prompt="two"))
    api_build(project, emulator)
    assets = project.root / "assets"
    (assets / "current").unlink()
    shutil.copytree(assets / "v0002", assets / "current")
    res = project.run("rollback", "1")
    assert res.exit_code == 0, res.stderr
    assert os.readlink(assets / "current") == "v0001" and (assets / "v0002").is_dir()


def test_sigterm_while_submissions_are_on_the_wire_journals_their_answers(project, tmp_path):
    em = Emulator(EmulatorConfig(render="plain", latency=1.5,
                                 faults=Faults(rate_slow_submit=1.0, slow_submit_seconds=0.8)))
    project.config(matrix_config(3, concurrency=3))
    log = tmp_path / "log"
    with serve_in_thread(em) as url:
        with log.open("w") as fh:
            proc = _cli(project, url, "build", stdout=fh, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 30
            while len(em.ledger) < 3:  # accepted (and billed); the answers are a second away
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert proc.returncode == 143, log.read_text()
        second = _cli(project, url, "build", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert [a["status"] for a in json.loads(out)["assets"]] == ["resumed"] * 3 and len(em.ledger) == 3


def test_gc_learns_that_a_record_of_an_earlier_starbuild_was_published(project, emulator, tmp_path):
    from starbuild.engine.journal import Journal

    keep1 = "output:\n  keep: 1\n"
    project.config(matrix_config(1, prompt="old", extra=keep1))
    api_build(project, emulator)
    journal = Journal(tmp_path / ".cache" / "journal")  # as an earlier starbuild left it: no flag
    for h, rec in list(journal.stored_items()):
        journal._stored.set(h, {k: v for k, v in rec.items() if k != "published"})
    journal.close()
    assert "kept" not in project.run("gc").stdout  # in a version: nothing to keep apart
    project.config(matrix_config(1, prompt="new", extra=keep1))
    api_build(project, emulator)  # v0001 (the old image) is pruned
    res = project.run("gc")
    assert "removed 1 unreferenced" in res.stdout and "kept" not in res.stdout, res.stdout


def test_a_refused_task_query_does_not_leave_a_paid_image_for_the_next_build(project):
    """A 400 to GET /v1/tasks/{id} (a proxy that rejects the request, as the echo_headers fault does)
    says nothing about the task, which is paid for: the query is retried and the image downloaded
    in the same build."""
    emulator = Emulator(EmulatorConfig(render="plain"))
    refused: set[str] = set()

    async def first_query_refused(scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "GET" and path.startswith("/v1/tasks/") \
                and path not in refused:
            refused.add(path)
            response = emulator.error(400, "invalid_request", "Request rejected by the gateway")
            await response(scope, receive, send)
            return
        await emulator(scope, receive, send)

    project.config(matrix_config(4))
    report = api_build(project, emulator, transport=httpx.ASGITransport(app=first_query_refused))
    assert len(refused) == 4 and len(emulator.ledger) == 4
    assert report.exit_code == 0 and report.count(Outcome.BUILT) == 4
    assert all(e.get("files") for e in project.lock()["assets"].values())
