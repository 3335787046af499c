"""Ctrl-C during a build says what was kept and how to resume; a busy port is a clear error."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import KEY, api_build, matrix_config, run
from starbuild.emulator import Emulator, EmulatorConfig, ManualClock, serve_in_thread
from starbuild.engine.outcome import Outcome

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


def test_ctrl_c_says_what_was_kept_and_how_to_resume(project):
    project.config(matrix_config(2))
    clock = ManualClock()
    em = Emulator(EmulatorConfig(render="plain", latency=10.0), clock=clock)  # tasks wait for the clock
    with serve_in_thread(em) as url:
        env = _env(STARMAGIC_API_KEY=KEY, STARMAGIC_BASE_URL=url, STARMAGIC_FILES_URL=em.config.files_url)
        proc = subprocess.Popen([sys.executable, "-m", "starbuild", "-C", str(project.root), "build"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while len(em.ledger) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "the build did not submit"
            time.sleep(0.02)
        time.sleep(0.3)  # both task ids journaled, polling
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        assert re.search(r"kept: 0 image\(s\) downloaded into the cache, 2 submitted task\(s\) journaled", err), err
        assert "resume with `starbuild build`" in err
        clock.advance(10.0)
        report = api_build(project, em, base_url=url)  # as told: resumes, pays nothing more
    assert report.exit_code == 0 and len(em.ledger) == 2
    assert {r.outcome for r in report.results} == {Outcome.RESUMED}


def _busy_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_the_emulator_on_a_busy_port_is_a_clear_error():
    sock, port = _busy_port()
    try:
        res = subprocess.run([sys.executable, "-m", "starbuild", "emulator", "--port", str(port)], env=_env(),
                             capture_output=True, text=True, timeout=60)
    finally:
        sock.close()
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and f"port {port}" in res.stderr and "--port 0" in res.stderr
    assert "listening" not in res.stderr


def test_serve_on_a_busy_port_is_a_clear_error(project):
    project.config(matrix_config(1))
    sock, port = _busy_port()
    try:
        res = project.run("serve", "--port", str(port))
    finally:
        sock.close()
    assert res.exit_code == 2 and f"port {port}" in res.stderr
    assert "gallery: http" not in res.stderr


def test_watch_does_not_announce_a_gallery_on_a_busy_port(project):
    project.config(matrix_config(1))
    sock, port = _busy_port()
    try:
        res = run(["-C", str(project.root), "watch", "--offline", "--serve", str(port)])
    finally:
        sock.close()
    assert res.exit_code == 2 and "cannot serve the gallery" in res.stderr
    assert "gallery: http" not in res.stderr
    assert not (project.root / "assets").exists()  # refused before building anything
