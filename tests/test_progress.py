"""The terminal progress display: ticks every second on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time

from conftest import KEY, REPO
from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread
from starbuild.ui.progress import LiveProgress, PlainProgress

ELAPSED = re.compile(rb"(\d+:\d\d:\d\d)")


def _read_pty(master: int, proc: subprocess.Popen, timeout: float) -> list[tuple[float, bytes]]:
    chunks, start = [], time.monotonic()
    while time.monotonic() - start < timeout:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append((time.monotonic() - start, data))
        elif proc.poll() is not None:
            break
    return chunks


def test_progress_display_ticks_every_second_on_a_terminal(project):
    project.config("version: 1\nimages:\n  hero:\n    prompt: a slow one\n    size: '1:1'\n    quality: low\n")
    emulator = Emulator(EmulatorConfig(render="plain", latency=5.0))
    with serve_in_thread(emulator) as url:
        env = {**os.environ, "STARMAGIC_API_KEY": KEY, "STARMAGIC_BASE_URL": url, "STARMAGIC_FILES_URL": url,
               "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30", "PYTHONPATH": str(REPO)}
        env.pop("NO_COLOR", None)
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "starbuild", "-C", str(project.root), "build"],
                                stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        try:
            chunks = _read_pty(master, proc, timeout=30)
            assert proc.wait(timeout=30) == 0
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
    screen = b"".join(data for _, data in chunks)
    # Each second of elapsed time is drawn, in order, about a second apart.
    first_seen: dict[bytes, float] = {}
    for at, data in chunks:
        for value in ELAPSED.findall(data):
            first_seen.setdefault(value, at)
    ticks = [first_seen[v] for v in (b"0:00:01", b"0:00:02", b"0:00:03") if v in first_seen]
    assert len(ticks) == 3, f"elapsed seconds drawn: {sorted(first_seen)}"
    assert all(0.3 < later - earlier < 2.0 for earlier, later in zip(ticks, ticks[1:])), ticks
    assert b"hero" in screen and b"%" in screen and b"ETA" in screen  # the asset in flight, with an ETA
    assert b"done in" in screen and b"assets in" in screen and len(emulator.ledger) == 1


def test_live_progress_shows_backoff_lease_waits_and_progress():
    now = [100.0]
    out = io.StringIO()
    live = LiveProgress(out=out, clock=lambda: now[0])
    live("plan", "", {"total": 3})
    live("submitted", "a", {"task_id": "t1", "credits": 1.5, "estimated_time": 10})
    live("backoff", "b", {"delay": 4.0, "rate_limited": True})
    live("lease_wait", "c", {"holder": "ci@runner-7"})
    now[0] += 2
    live("progress", "", {"task_id": "t1", "progress": 40, "status": "processing"})
    text = _text(live)
    assert "a  processing 40%, 6s left" in text
    assert "b  429: backing off 2s" in text and "c  waiting for a teammate's lease (ci@runner-7)" in text
    assert "0/3" in text and "ETA" in text and "1.5 credits" in text
    live("built", "a", {})
    live("pulled", "c", {})
    text = _text(live)
    assert "2/3" in text and "a  processing" not in text and "lease" not in text


def _text(live: LiveProgress) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(live.render())
    return console.file.getvalue()


def test_plain_progress_lines_name_backoff_and_lease_waits():
    out = io.StringIO()
    plain = PlainProgress(out=out)
    plain("backoff", "hero", {"delay": 2.0, "rate_limited": True})
    plain("waiting", "icon", {"holder": "ana"})
    plain("progress", "", {"task_id": "x", "progress": 5})
    assert out.getvalue().splitlines() == [
        "backoff   hero: rate limited (429), submitting again in 2.0 s",
        "waiting   icon: waiting for a teammate's lease of ana"]
