"""Watch mode with real file changes: incremental rebuilds, settling, broken edits, Ctrl-C, the guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from conftest import KEY, matrix_config
from starbuild.engine.build import BuildOptions
from starbuild.emulator import Emulator, EmulatorConfig
from starbuild.engine.outcome import Outcome
from starbuild.ui.watch import Watcher


class Running:
    """A Watcher on its own thread, with what it said and the reports of its builds."""

    def __init__(self, project, *, offline=True, transport=None, confirm=None, yes=False, env=None):
        self.lines: list[str] = []
        self.reports: list = []
        env = {**os.environ, **(env or {})}
        options = BuildOptions(offline=offline, env=env, poll_base=0.01, poll_cap=0.05)
        self.watcher = Watcher(project.root / "starbuild.yaml", options, say=self.lines.append,
                               on_report=self.reports.append, transport=transport, confirm=confirm, yes=yes)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watcher.run, args=(self.stop,), daemon=True)
        self.thread.start()
        self.wait(lambda: any(line.startswith("watching") for line in self.lines))
        time.sleep(0.4)  # let the file watcher start before the test edits anything

    def wait(self, predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, self.lines
            time.sleep(0.02)

    def wait_reports(self, count: int) -> None:
        self.wait(lambda: len(self.reports) >= count)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def test_watch_edit_adding_one_asset_rebuilds_only_it(project):
    project.config(matrix_config(3))
    w = Running(project)
    try:
        assert w.reports[0].count(Outcome.BUILT) == 3
        project.config(matrix_config(4))
        w.wait_reports(2)
        report = w.reports[1]
        assert report.count(Outcome.BUILT) == 1 and report.count(Outcome.CACHED) == 3
        assert [r.name for r in report.results if r.outcome == Outcome.BUILT] == ["icons/i3"]
    finally:
        w.close()


def test_watch_burst_of_saves_causes_one_rebuild(project):
    project.config(matrix_config(2))
    w = Running(project)
    try:
        for i in range(6):
            project.config(matrix_config(2, prompt=f"icon {{{{ i }}}} take {i}"))
            time.sleep(0.03)
        w.wait_reports(2)
        time.sleep(1.5)
        assert len(w.reports) == 2, w.lines
        assert "take 5" in project.lock()["assets"]["icons/i0"]["request"]["prompt"]
    finally:
        w.close()


def test_watch_broken_edit_keeps_loop_alive(project):
    project.config(matrix_config(2))
    w = Running(project)
    try:
        project.config(matrix_config(2).replace("prompt:", "promt:"))
        w.wait_reports(2)
        assert w.reports[1] is None
        errors = [line for line in w.lines if line.startswith("error:")]
        assert errors and "starbuild.yaml:" in errors[0] and "promt" in errors[0]
        assert (project.root / "assets" / "current").exists()  # the last good assets stay current
        project.write("prompts/p.j2", "{{ undefined_thing }}")
        project.config(matrix_config(2).replace('prompt: "icon {{ i }}"', "prompt_file: prompts/p.j2"))
        w.wait_reports(3)
        assert w.reports[2] is None and any("undefined_thing" in line for line in w.lines)
        project.config(matrix_config(3))
        w.wait_reports(4)
        assert w.reports[3].count(Outcome.BUILT) == 1
    finally:
        w.close()


def test_watch_ignores_its_own_outputs(project):
    project.config(matrix_config(2))
    w = Running(project)
    try:
        (project.root / "assets" / "extra.txt").write_text("not an input")
        (project.root / "starbuild.lock").touch()
        time.sleep(1.2)
        assert len(w.reports) == 1, w.lines
    finally:
        w.close()


def test_watch_guard_asks_before_large_paid_rebuild(project):
    em = Emulator(EmulatorConfig(render="plain"))
    answers: list[str] = []
    decision = {"ok": False}

    def confirm(question: str) -> bool:
        answers.append(question)
        return decision["ok"]

    project.config(matrix_config(3).replace("images:", "watch:\n  confirm_over: 2\nimages:"))
    w = Running(project, offline=False, transport=httpx.ASGITransport(app=em), confirm=confirm,
                env={"STARMAGIC_API_KEY": KEY})
    try:
        assert w.reports == [None] and em.ledger == [] and "3 image task(s)" in answers[0]
        assert any(line.startswith("skipped:") for line in w.lines)
        decision["ok"] = True
        project.config(matrix_config(3).replace("images:", "watch:\n  confirm_over: 2\nimages:") + "\n")
        w.wait_reports(2)
        assert w.reports[1].count(Outcome.BUILT) == 3 and len(em.ledger) == 3
    finally:
        w.close()


def test_watch_edit_during_paid_build_keeps_paid_work(project):
    em = Emulator(EmulatorConfig(render="plain", latency=1.0))
    project.config(matrix_config(4))
    holder = {}

    def start():
        holder["w"] = Running(project, offline=False, transport=httpx.ASGITransport(app=em), yes=True,
                              env={"STARMAGIC_API_KEY": KEY})

    t = threading.Thread(target=start)
    t.start()
    deadline = time.monotonic() + 10
    while len(em.ledger) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    project.config(matrix_config(4, prompt="icon {{ i }}{{ ' v2' if i == 0 else '' }}"))  # edit while in flight
    t.join(timeout=20)
    w = holder["w"]
    try:
        assert w.reports[0].count(Outcome.BUILT) == 4  # the first build finished its paid tasks
        w.wait_reports(2)
        assert w.reports[1].count(Outcome.BUILT) == 1 and len(em.ledger) == 5
    finally:
        w.close()


def test_watch_ctrl_c_exits_cleanly(project, tmp_path):
    project.config(matrix_config(2))
    log = tmp_path / "watch.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "starbuild", "-C", str(project.root), "watch", "--offline"],
                                stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ))
        deadline = time.monotonic() + 30
        while "watching" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
    assert code == 0, log.read_text()
    assert time.monotonic() - started < 5
    assert "Traceback" not in log.read_text()
    assert (project.root / "starbuild.lock").is_file(), log.read_text()
    json.loads((project.root / "starbuild.lock").read_text())
    leftovers = [p for p in project.root.rglob("*") if ".tmp" in p.name]
    assert leftovers == []
