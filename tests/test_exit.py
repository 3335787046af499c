"""Leaving without the interpreter's teardown (cli/fastpath.run): nothing written is lost, codes hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _starbuild(root, *args, probe: str = "", timeout: float = 120, **run):
    """``python -c`` running the program as the console script does, after ``probe``; ``run`` goes
    to subprocess.run."""
    code = (f"import sys\n{probe}\nsys.argv = ['starbuild', '-C', sys.argv[1], *sys.argv[2:]]\n"
            "from starbuild.cli.fastpath import run\nrun()\n")
    env = {**os.environ, "STARBUILD_NO_PLAN_CACHE": "1", "STARBUILD_CACHE_DIR": str(root / ".c")}
    env.pop("PYTHONUNBUFFERED", None)  # stdout into a pipe is block-buffered, as for most users
    return subprocess.run([sys.executable, "-c", code, str(root), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, **run)


def test_a_long_answer_into_a_pipe_arrives_whole(project):
    """stdout into a pipe is block-buffered: leaving without a flush would cut the JSON short."""
    project.config("version: 1\nimages:\n  'a/i{{ i }}':\n    matrix:\n      i: [" + ", ".join(map(str, range(400))) + "]\n"
                   "    prompt: image {{ i }} " + "of a long prompt " * 20 + "\n")
    res = _starbuild(project.root, "plan", "--json", "--offline")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout) > 64 * 1024
    assert len(json.loads(res.stdout)["assets"]) == 400


def test_atexit_handlers_run_and_the_exit_code_is_kept(project):
    project.config("version: 1\nimages:\n  hero:\n    prompt: [unclosed\n")
    res = _starbuild(project.root, "plan", "--offline",
                     probe="import atexit; atexit.register(lambda: print('handler ran'))")
    assert res.returncode == 2
    assert "starbuild.yaml" in res.stderr
    assert res.stdout == "handler ran\n"  # printed into a pipe after the command: flushed on the way out
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("daemon", [False, True])
def test_a_thread_still_working_is_waited_for(project, tmp_path, daemon):
    """With another thread alive the process exits the usual way: a non-daemon thread finishes."""
    project.config("version: 1\nimages:\n  hero:\n    prompt: a hero\n")
    mark = tmp_path / "mark"
    probe = ("import threading, time\n"
             f"def late():\n    time.sleep(0.5)\n    open({str(mark)!r}, 'w').write('done')\n"
             f"threading.Thread(target=late, daemon={daemon}).start()\n")
    res = _starbuild(project.root, "plan", "--offline", probe=probe)
    assert res.returncode == 0, res.stderr
    assert mark.exists() is not daemon


def test_an_offline_build_run_as_a_program_leaves_everything_written(project):
    project.config("version: 1\nimages:\n  'a/i{{ i }}':\n    matrix:\n      i: [0, 1, 2]\n    prompt: image {{ i }}\n")
    res = _starbuild(project.root, "build", "--offline", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["summary"]["built"] == 3
    lock = json.loads((project.root / "starbuild.lock").read_text())
    assert sorted(lock["assets"]) == ["a/i0", "a/i1", "a/i2"]
    version = project.root / "assets" / "current"
    assert sorted(p.name for p in version.glob("a/*")) == ["i0.png", "i1.png", "i2.png"]


def test_a_closed_stdout_is_no_traceback(project):
    """Started with descriptor 1 closed, Python has no sys.stdout: what would go there goes nowhere."""
    project.config("version: 1\nimages:\n  hero:\n    prompt: a hero\n")
    res = _starbuild(project.root, "plan", "--offline", preexec_fn=lambda: os.close(1))
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 0, res.stderr
