"""Crashes and faults over real HTTP: SIGKILL mid-build, then resume; a mix of server faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from conftest import KEY, api_build, ledger_prompts, matrix_config
from starbuild.emulator import Emulator, EmulatorConfig, Faults, serve_in_thread
from starbuild.engine.outcome import Outcome


def _cli(proj, url: str, *args: str, **popen):
    env = {**os.environ, "STARMAGIC_API_KEY": KEY, "STARMAGIC_BASE_URL": url, "STARMAGIC_FILES_URL": url}
    return subprocess.Popen([sys.executable, "-m", "starbuild", "-C", str(proj.root), *args], env=env, **popen)


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def assert_consistent(root: Path) -> None:
    """The lockfile parses (or is absent) and current points at a complete version (or is absent)."""
    lock_path = root / "starbuild.lock"
    if lock_path.exists():
        lock = json.loads(lock_path.read_text())
        assert lock["lockfile_version"] == 1
    current = root / "assets" / "current"
    if current.is_symlink():
        manifest = json.loads((current / "manifest.json").read_text())
        for entry in manifest["assets"].values():
            for f in entry["files"]:
                assert (current / f["path"]).stat().st_size == f["bytes"]


def test_resume_sigkill_with_20_in_flight(project, tmp_path):
    em = Emulator(EmulatorConfig(render="plain", latency=3.0))
    project.config(matrix_config(20, concurrency=20))
    log = tmp_path / "first.log"
    with serve_in_thread(em) as url:
        with log.open("w") as fh:
            proc = _cli(project, url, "build", stdout=fh, stderr=subprocess.STDOUT)
            _wait_for(lambda: log.read_text().count("submitted ") >= 20)
            assert len(em.ledger) == 20
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert_consistent(project.root)
        assert not (project.root / "starbuild.lock").exists()
        second = _cli(project, url, "build", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err.decode()
    report = json.loads(out)
    assert [a["status"] for a in report["assets"]] == ["resumed"] * 20
    assert len(em.ledger) == 20 and len(set(ledger_prompts(em))) == 20
    assert len(project.lock()["assets"]) == 20
    assert_consistent(project.root)


def test_resume_fault_mix_builds_everything_without_paying_twice(project):
    faults = Faults(rate_500=0.15, rate_429=0.10, rate_results_null=0.3, results_null_seconds=0.2,
                    rate_legacy_envelope=0.5, rate_results_objects=0.5, rate_extra_fields=0.5, max_unfinished=5)
    em = Emulator(EmulatorConfig(render="plain", latency=0.2, seed=7, faults=faults))
    project.config(matrix_config(30, concurrency=8))
    with serve_in_thread(em) as url:
        report = api_build(project, em, base_url=url)
    assert report.exit_code == 0, [r.error for r in report.results if r.error]
    assert report.count(Outcome.BUILT) == 30
    counts = Counter(ledger_prompts(em))
    assert len(counts) == 30 and max(counts.values()) == 1
    statuses = Counter(k for k in em.counters if k.startswith("status_"))
    assert em.counters["status_500"] > 0 and em.counters["status_429"] > 0, em.counters
    assert len(project.lock()["assets"]) == 30


def test_resume_orphaned_task_of_an_edited_asset_is_kept(project, tmp_path):
    """Paid work is never abandoned: a task in flight for a spec the user then edits away is stored."""
    em = Emulator(EmulatorConfig(render="plain", latency=1.5))
    project.config(matrix_config(1, prompt="first idea"))
    log = tmp_path / "log"
    with serve_in_thread(em) as url:
        with log.open("w") as fh:
            proc = _cli(project, url, "build", stdout=fh, stderr=subprocess.STDOUT)
            _wait_for(lambda: "submitted " in log.read_text())
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        project.config(matrix_config(1, prompt="second idea"))
        report = api_build(project, em, base_url=url)
        assert report.adopted == 1 and len(em.ledger) == 2
        project.config(matrix_config(1, prompt="first idea"))
        report = api_build(project, em, base_url=url)
    assert report.count(Outcome.CACHED) == 1 and len(em.ledger) == 2


def test_resume_frozen_never_adopts_orphans(project, tmp_path):
    em = Emulator(EmulatorConfig(render="plain", latency=1.5))
    log = tmp_path / "log"
    with serve_in_thread(em) as url:
        project.config(matrix_config(1, prompt="kept"))
        assert api_build(project, em, base_url=url).exit_code == 0
        project.config(matrix_config(1, prompt="abandoned"))
        with log.open("w") as fh:
            proc = _cli(project, url, "build", stdout=fh, stderr=subprocess.STDOUT)
            _wait_for(lambda: "submitted " in log.read_text())
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        project.config(matrix_config(1, prompt="kept"))  # up to date, with an orphaned task journaled
        before = sum(em.counters.values())
        report = api_build(project, em, base_url=url, frozen=True)
        assert report.exit_code == 0 and report.adopted == 0
        assert sum(em.counters.values()) == before  # --frozen makes no request at all
        report = api_build(project, em, base_url=url)
        assert report.adopted == 1


def test_a_run_killed_while_backing_off_a_429_leaves_nothing_of_unknown_outcome(project, tmp_path):
    """'submitting' is journaled only while a submission is on the wire: a run killed while it waits
    out 429s (nothing in flight) leaves plain unbuilt assets, submitted by the next build without
    --retry-unknown."""
    em = Emulator(EmulatorConfig(render="plain", latency=0.1, faults=Faults(rate_429=1.0)))
    project.config(matrix_config(3, concurrency=3))
    log = tmp_path / "first.log"
    with serve_in_thread(em) as url:
        with log.open("w") as fh:
            proc = _cli(project, url, "build", stdout=fh, stderr=subprocess.STDOUT)
            _wait_for(lambda: em.counters["status_429"] >= 6)  # every asset refused at least once
            time.sleep(0.3)  # into a backoff wait
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert em.ledger == []
        em.config.faults = Faults()
        second = _cli(project, url, "build", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err.decode()
    outcomes = Counter(a["status"] for a in json.loads(out)["assets"])
    assert outcomes == {"built": 3}
    assert len(em.ledger) == 3
