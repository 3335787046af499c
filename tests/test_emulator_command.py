"""``starbuild emulator`` and serving over HTTP."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread
from starbuild.emulator import command as command_module
from starbuild.emulator.command import emulator_command
from starbuild.emulator.config import rate_fields
from emulator_fixtures import KEY, auth

ROOT = Path(__file__).resolve().parent.parent
RUN_COMMAND = "from starbuild.emulator.command import emulator_command; emulator_command(prog_name='emulator')"


def python(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, **kwargs)


def test_every_fault_rate_has_an_option():
    options = {opt for param in emulator_command.params for opt in param.opts}
    for name in rate_fields():
        assert "--fault-" + name.removeprefix("rate_").replace("_", "-") in options
    for flag in ["--host", "--port", "--latency", "--ttl", "--seed", "--api-key", "--credits",
                 "--max-unfinished", "--render", "--allow-loopback-callbacks", "--fault-429", "--fault-500",
                 "--fault-reset", "--fault-results-null"]:
        assert flag in options
    assert emulator_command.name == "emulator"


def test_importing_the_command_loads_no_web_stack():
    code = ("import sys, starbuild.emulator.command; "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'PIL', 'httpx') if m in sys.modules))")
    process = python("-c", code, stdout=subprocess.PIPE)
    out, _ = process.communicate(timeout=30)
    assert out.decode().strip() == "[]"


def test_options_become_the_emulator_configuration(monkeypatch):
    served = {}

    def fake_serve(emulator, host, port, files_port, announce=None):
        served.update(emulator=emulator, host=host, port=port, files_port=files_port)
        announce(f"http://{host}:{port}", f"http://{host}:{files_port}")

    monkeypatch.setattr("starbuild.emulator.server.serve", fake_serve)
    result = CliRunner().invoke(emulator_command, [
        "--port", "9999", "--latency", "2.5", "--ttl", "60", "--seed", "3", "--api-key", "sk-x",
        "--credits", "10", "--max-unfinished", "4", "--render", "plain", "--allow-loopback-callbacks",
        "--fault-429", "0.25", "--fault-reset", "1", "--fault-results-null", "0.5", "--slow-seconds", "0.5",
        "--failure-code", "generation_timeout", "--deny-model", "gpt-image-1.5",
    ])
    assert result.exit_code == 0, result.output
    config: EmulatorConfig = served["emulator"].config
    assert (served["host"], served["port"], served["files_port"]) == ("127.0.0.1", 9999, 10000)
    assert (config.latency, config.ttl, config.seed, config.api_key, config.credit_balance) == (2.5, 60, 3, "sk-x", 10)
    assert config.render == "plain" and config.allow_loopback_callbacks
    assert config.denied_models == {"gpt-image-1.5"}
    faults = config.faults
    assert (faults.rate_429, faults.rate_reset, faults.rate_results_null, faults.rate_500) == (0.25, 1.0, 0.5, 0.0)
    assert faults.max_unfinished == 4 and faults.slow_seconds == 0.5
    assert faults.failure_codes == ("generation_timeout",)
    assert "http://127.0.0.1:9999" in result.output
    assert command_module  # the module stays importable on its own


def test_rates_outside_zero_to_one_are_usage_errors():
    result = CliRunner().invoke(emulator_command, ["--fault-500", "1.5"])
    assert result.exit_code == 2 and "1.5" in result.output


def test_the_command_serves_until_interrupted():
    process = python("-c", RUN_COMMAND, "--port", "0", "--fault-500", "1", stderr=subprocess.PIPE)
    try:
        line = _read_line(process, timeout=20)
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        with httpx.Client(base_url=url, headers=auth(KEY)) as client:
            response = client.post("/v1/images/generations", json={"model": "gpt-image-2", "prompt": "x"})
            assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
            ledger = client.get("/_emulator/ledger").json()
            assert ledger["submissions"] == [] and ledger["injected"] == {"500": 1}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    while b"\n" not in buffer:
        assert selector.select(timeout=max(0.0, deadline - time.monotonic())), "the emulator printed nothing"
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, "the emulator exited early"
        buffer += chunk
    return buffer.decode()


def test_serve_in_thread_sets_the_public_url_and_stops_on_exit():
    emulator = Emulator()
    with serve_in_thread(emulator) as url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert emulator.config.public_url == url
        assert httpx.get(url + "/_emulator/ledger").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/_emulator/ledger")


def test_serve_in_thread_refuses_a_port_in_use():
    with serve_in_thread(Emulator()) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            with serve_in_thread(Emulator(), port=port):
                pass


def test_a_client_hanging_up_mid_request_is_not_logged_as_a_server_error():
    """A build killed while sending a submission leaves half a body; the emulator shrugs."""
    import logging
    import socket

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    server_log = logging.getLogger("uvicorn.error")
    em = Emulator(EmulatorConfig())
    with serve_in_thread(em) as url:
        server_log.addHandler(handler)  # after the server has set up its logging
        try:
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
                             b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"model\": ")
                time.sleep(0.2)
            time.sleep(0.3)
            ok = httpx.get(f"{url}/v1/tasks/task-unified-1757156493-abcdefgh", headers=auth())
        finally:
            server_log.removeHandler(handler)
    assert ok.status_code == 404  # still serving
    assert em.counters["submit"] == 1 and em.ledger == []
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []
