"""Helpers shared by the benchmarks: projects in temp folders and measured CLI subprocesses."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KEY = "sk-bench-not-a-real-key"


def _fresh_bytecode() -> None:
    """Compile starbuild's modules once, as an installed copy has them: with bytecode writing off in
    the environment (PYTHONDONTWRITEBYTECODE), every measured start would compile the modules
    edited since the last compile again, and count that as start-up."""
    import compileall

    import starbuild

    compileall.compile_dir(Path(starbuild.__file__).parent, quiet=2)


_fresh_bytecode()


@dataclass
class Measured:
    """One finished subprocess: exit code, output, wall time, CPU time and peak RSS of its own."""

    returncode: int
    stdout: str
    stderr: str
    wall: float
    cpu: float          # user + system seconds of the child (and children it waited for)
    maxrss_mb: float    # peak resident set size of the child, in MiB

    def json(self) -> dict:
        return json.loads(self.stdout)


TIME = Path("/usr/bin/time")


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> Measured:
    """Run a command to completion; its CPU time from wait4, so that only this child is counted.

    The peak RSS comes from /usr/bin/time, which forks the command from its own small process:
    Linux folds the RSS of the process a child was forked (or vforked) from into the child's
    ru_maxrss at exec, so a command started straight from this (large) process would report this
    process's size instead of its own.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        full = [str(TIME), "-o", rss.name, "-f", "%M", *cmd] if TIME.exists() else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(full, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = rss.read().split() if TIME.exists() else []
        maxrss_kb = float(lines[-1]) if lines and lines[-1].isdigit() else usage.ru_maxrss
        return Measured(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                        wall, usage.ru_utime + usage.ru_stime, maxrss_kb / 1024)


def starbuild_cmd(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "starbuild", "-C", str(root), *args]


def cli_env(url: str | None, cache: Path, **extra: str) -> dict:
    """The environment of a CLI build against an emulator at ``url`` (None: offline)."""
    env = {**os.environ, "STARBUILD_CACHE_DIR": str(cache), **extra}
    env.pop("STARMAGIC_API_KEY", None)
    if url is not None:
        env.update(STARMAGIC_API_KEY=KEY, STARMAGIC_BASE_URL=url, STARMAGIC_FILES_URL=url)
    return env


def matrix_project(root: Path, count: int, *, concurrency: int, size: str = "1:1", resolution: str | None = None,
                   quality: str = "low", prompt: str = "bench image {{ i }}", extra: str = "") -> Path:
    """A project of ``count`` images from one matrix axis; returns the config path."""
    root.mkdir(parents=True, exist_ok=True)
    res = f"    resolution: {resolution}\n" if resolution else ""
    text = (f"version: 1\nprovider:\n  concurrency: {concurrency}\n{extra}images:\n  'img/i{{{{ i }}}}':\n"
            f"    matrix:\n      i: {list(range(count))}\n    prompt: \"{prompt}\"\n    size: '{size}'\n"
            f"{res}    quality: {quality}\n")
    path = root / "starbuild.yaml"
    path.write_text(text)
    return path


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"min {fmt.format(min(values))}, max {fmt.format(max(values))}"


def requests_of(counters: dict) -> int:
    """HTTP requests an emulator answered, from its counters (the status_* ones count answers twice)."""
    return sum(v for k, v in counters.items() if not k.startswith(("status_", "fault_")))


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
