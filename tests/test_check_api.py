"""``starbuild check-api``: the documented-behaviour checks against a server over HTTP, within a billing cap."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import run
from starbuild.api.contract_checks import CHECKS
from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread

KEY = "sk-check-api"
BILLABLE = sum(c.billable for c in CHECKS)


def check_api(url: str, files_url: str, *args: str):
    return run(["check-api", url, "--files-url", files_url, *args], env={"STARMAGIC_API_KEY": KEY})


def rows(stdout: str) -> dict[str, str]:
    """check name -> result, from the printed table."""
    out = {}
    for line in stdout.splitlines()[1:-1]:
        name, result = line.split()[:2]
        out[name] = result
    return out


def test_check_api_passes_against_the_emulator_and_prints_a_row_per_check():
    emulator = Emulator(EmulatorConfig(render="plain"))
    with serve_in_thread(emulator) as url:
        result = check_api(url, emulator.config.files_url, "--allow-billing", "100")
    assert result.exit_code == 0, result.stdout
    table = rows(result.stdout)
    assert list(table) == [c.name for c in CHECKS]
    assert set(table.values()) == {"pass"}
    assert len(emulator.ledger) == BILLABLE and BILLABLE >= 8
    assert f"{len(CHECKS)} passed, 0 failed, 0 skipped; {BILLABLE} billable task(s) submitted" in result.stdout


@pytest.mark.parametrize("allowance", [0, 3])
def test_check_api_never_bills_past_the_allowance(allowance):
    emulator = Emulator(EmulatorConfig(render="plain"))
    with serve_in_thread(emulator) as url:
        result = check_api(url, emulator.config.files_url, "--allow-billing", str(allowance))
    assert result.exit_code == 0, result.stdout
    assert len(emulator.ledger) == allowance
    table = rows(result.stdout)
    skipped = [name for name, status in table.items() if status == "skipped"]
    assert skipped and "fail" not in table.values()
    assert "skipped by budget" in result.stdout
    if allowance == 0:
        assert all(c.name in skipped for c in CHECKS if c.billable)


def test_check_api_fails_a_server_that_refuses_the_key():
    emulator = Emulator(EmulatorConfig(render="plain", api_key="sk-someone-else"))
    with serve_in_thread(emulator) as url:
        result = check_api(url, emulator.config.files_url, "--allow-billing", "2")
    assert result.exit_code == 1
    table = rows(result.stdout)
    assert table["auth.missing-key"] == "pass" and table["task.invalid-id"] == "fail"
    assert emulator.ledger == []


def test_a_server_that_accepts_what_the_docs_refuse_fails_and_bills_at_most_one_probe():
    accepted = []

    async def submit(request):
        if request.headers.get("authorization") == f"Bearer {KEY}":  # only a keyed request can bill us
            accepted.append(await request.json())
        return JSONResponse({"id": "task-unified-1757156493-abcdefgh", "status": "pending"})

    lax = Starlette(routes=[Route("/v1/images/generations", submit, methods=["POST"])])
    emulator = Emulator(EmulatorConfig())
    with serve_in_thread(emulator) as files_url:  # a real file host; the lax server is the API
        import threading

        import uvicorn

        from starbuild.emulator.server import _bind, _url

        sock = _bind("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(lax, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            while not server.started:
                thread.join(0.01)
            result = check_api(_url(sock), files_url, "--allow-billing", "0")
        finally:
            server.should_exit = True
            thread.join(5)
            sock.close()
    assert result.exit_code == 1
    assert rows(result.stdout)["submit.refuses.size-ratio-not-listed"] == "fail"
    assert len(accepted) == 1  # the first accepted refusal stops every other probe


def test_check_api_without_a_key_is_refused():
    result = run(["check-api", "http://127.0.0.1:9"], env={"STARMAGIC_API_KEY": ""})
    assert result.exit_code == 3 and "STARMAGIC_API_KEY" in result.stderr


def test_an_unreachable_server_fails_every_check_it_runs_and_bills_nothing():
    with serve_in_thread(Emulator(EmulatorConfig())) as url:
        pass  # nothing listens there any more
    result = check_api(url, url, "--allow-billing", "2")
    assert result.exit_code == 1
    assert "pass" not in rows(result.stdout).values()
    assert "0 billable task(s) submitted of 2 allowed" in result.stdout


def test_check_api_against_the_emulator_command_on_two_ports():
    import os
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "starbuild", "emulator", "--port", "0", "--render", "plain"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        url, files_url = re.findall(r"http://127\.0\.0\.1:\d+", line)
        assert url != files_url
        result = check_api(url, files_url, "--allow-billing", "3")
        assert result.exit_code == 0, result.stdout
        assert len(httpx.get(f"{url}/_emulator/ledger").json()["submissions"]) == 3
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
