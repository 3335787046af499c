"""A short chaos campaign (bench/chaos.py): builds killed with SIGKILL at random moments under a
fault mix, resumed, then one clean build. Nothing may be paid twice and nothing left corrupt."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def chaos():
    spec = importlib.util.spec_from_file_location("chaos", BENCH / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module
    spec.loader.exec_module(module)
    return module


def test_chaos_kills_never_pay_twice_nor_corrupt(chaos, tmp_path):
    summary = chaos.Summary()
    lines = []
    chaos.run_kills(summary, trials=5, seed=7, streams=1, workdir=tmp_path, log=lines.append)
    report = summary.line() + "\n" + "\n".join(lines + summary.problems)
    assert summary.trials == 5 and summary.assets >= 12 and summary.submissions > 0, report
    assert summary.duplicates == 0, report
    assert summary.corrupt == 0, report
    assert summary.tracebacks == 0 and summary.unreported == 0 and summary.failed == 0, report
    assert summary.hangs == 0 and summary.slow_stops == 0 and summary.lost <= summary.unknown_billed, report


def test_chaos_budget_over_reserving_server_is_never_overspent(chaos):
    faults, assets, concurrency, cap, extra = chaos.budget_cases()["over-reserving with odd usage"]
    result = chaos.run_budget_case("odd usage", faults, 16, 16, 4.0, extra)
    assert not result["problems"] and result["exit"] == 3, result
    assert result["ratio"] <= 1.0 and result["lost"] == 0 and result["duplicates"] == 0, result


def test_chaos_checks_see_a_corrupt_version(chaos, tmp_path):
    """The campaign's consistency check is not vacuous: a truncated file in current is caught."""
    version = tmp_path / "assets" / "v0001"
    version.mkdir(parents=True)
    (version / "a.png").write_bytes(b"12345")
    (version / "manifest.json").write_text('{"assets": {"a": {"files": [{"path": "a.png", "bytes": 9}]}}}')
    (tmp_path / "assets" / "current").symlink_to("v0001")
    (tmp_path / "starbuild.lock").write_text("{not json")
    problems = chaos.consistency_problems(tmp_path)
    assert any("does not parse" in p for p in problems) and any("a.png is 5 bytes" in p for p in problems)


def test_chaos_counts_a_second_payment_as_a_duplicate(chaos):
    """A prompt accepted twice is a duplicate unless its earlier task failed."""
    from starbuild.emulator import Emulator, EmulatorConfig
    from starbuild.emulator.app import LedgerEntry

    em = Emulator(EmulatorConfig())

    class Task:
        def __init__(self, outcome):
            self.outcome = outcome

    em.tasks.update({"t1": Task("completed"), "t2": Task("completed"), "t3": Task("failed"), "t4": Task("completed")})
    em.ledger += [LedgerEntry("t1", "m", {"prompt": "a"}, 1, 0), LedgerEntry("t2", "m", {"prompt": "a"}, 1, 0),
                  LedgerEntry("t3", "m", {"prompt": "b"}, 1, 0), LedgerEntry("t4", "m", {"prompt": "b"}, 1, 0)]
    assert chaos.duplicates(em) == 1


# --- what killed runs leave behind is removed by the next build, whatever it has to do ----------


def _offline_project(tmp_path, monkeypatch):
    from conftest import Project

    monkeypatch.setenv("STARBUILD_CACHE_DIR", str(tmp_path / ".cache"))
    project = Project(tmp_path / "proj")
    project.config("version: 1\nimages:\n  a:\n    prompt: hi\n    size: '1:1'\n")
    assert project.run("build", "--offline").exit_code == 0
    return project


def test_a_dead_runs_partial_download_is_removed_by_the_next_build(tmp_path, monkeypatch):
    """A run killed mid-download leaves .download-PID-*.part; the next build (under the project
    lock, so no other build of this cache runs) removes it at once."""
    project = _offline_project(tmp_path, monkeypatch)
    part = tmp_path / ".cache" / "objects" / "tmp" / ".download-999999-0123456789ab.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"half an image")
    project.config("version: 1\nimages:\n  a:\n    prompt: hi\n    size: '1:1'\n  b:\n    prompt: ho\n    size: '1:1'\n")
    assert project.run("build", "--offline").exit_code == 0
    assert not part.exists()


def test_a_dead_runs_partial_version_is_removed_by_a_no_op_build(tmp_path, monkeypatch):
    """A run killed while publishing leaves assets/.vNNNN.tmp-PID; a build with nothing to
    publish removes it too."""
    project = _offline_project(tmp_path, monkeypatch)
    partial = project.root / "assets" / ".v0002.tmp-999999"
    partial.mkdir()
    (partial / "a.png").write_bytes(b"half a version")
    assert project.run("build", "--offline").exit_code == 0
    assert not partial.exists()
