"""Secrets and trust: the key goes only to https hosts (or this machine), server text is shown
scrubbed of the key and of control characters, the gallery answers only loopback Host names,
and a server that drips its answers cannot hold a build past its deadlines."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from conftest import api_build
from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread
from starbuild.emulator.config import Faults
from starbuild.engine.outcome import Outcome

CANARY = "sk-canary-77e1d0c4b9a35f26"
ONE = "version: 1\nprovider:\n  task_timeout: {timeout}\nimages:\n  a:\n    prompt: a red kite\n    size: '1:1'\n" \
      "    quality: low\n"


def _cli(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starbuild", "-C", str(root), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _env(tmp_path: Path, url: str | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARMAGIC_")}
    env.update(STARMAGIC_API_KEY=CANARY, STARBUILD_CACHE_DIR=str(tmp_path / ".cache"), **extra)
    if url:
        env["STARMAGIC_BASE_URL"] = url
    return env


# --- https only, except on this machine ---------------------------------------------------------


@pytest.mark.parametrize("field", ["base_url", "files_url"])
@pytest.mark.parametrize("url", ["http://api.example.com", "http://10.0.0.5:8080", "http://127.0.0.1.evil.com",
                                 "ftp://api.example.com", "api.example.com", "https://user:pw@api.example.com",
                                 "https://api.example.com/?key=x"])
def test_config_urls_that_could_leak_the_key_are_refused(project, field, url):
    project.config(f"version: 1\nprovider:\n  {field}: {json.dumps(url)}\nimages:\n  a: {{prompt: x}}\n")
    res = project.run("validate")
    assert res.exit_code == 2, res.stderr
    assert f"starbuild.yaml:3:" in res.stderr and f"provider.{field}" in res.stderr


@pytest.mark.parametrize("url", ["https://api.example.com", "http://localhost:8787", "http://127.0.0.1:9",
                                 "http://127.1.2.3", "http://[::1]:8787/v1"])
def test_config_urls_that_are_safe_are_accepted(project, url):
    project.config(f"version: 1\nprovider:\n  base_url: {json.dumps(url)}\n  files_url: {json.dumps(url)}\n"
                   "images:\n  a: {prompt: x}\n")
    assert project.run("validate").exit_code == 0


@pytest.mark.parametrize("var", ["STARMAGIC_BASE_URL", "STARMAGIC_FILES_URL"])
def test_environment_urls_over_plain_http_are_refused_before_sending(project, tmp_path, var):
    project.config(ONE.format(timeout=600))
    env = _env(tmp_path, **{var: "http://api.example.com"})
    res = _cli(project.root, env, "build")
    assert res.returncode == 2, res.stderr
    assert var in res.stderr and "https" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / ".cache" / "journal").exists() or not any(
        (tmp_path / ".cache" / "journal").rglob("*.val"))
    assert not (project.root / "starbuild.lock").exists()


def test_uploads_follow_the_base_url_when_only_it_is_overridden(project, tmp_path):
    project.write("refs/in.png", "")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(project.root / "refs" / "in.png")
    project.config("version: 1\nimages:\n  edit:\n    prompt: the same, at night\n    inputs: [refs/in.png]\n"
                   "    size: '1:1'\n    quality: low\n")
    em = Emulator(EmulatorConfig(render="plain", api_key=CANARY))
    with serve_in_thread(em) as url:
        em.config.files_url = url  # a local server answering uploads on its API host too
        res = _cli(project.root, _env(tmp_path, url), "build")
    assert res.returncode == 0, res.stderr
    assert em.counters["upload"] == 1 and len(em.ledger) == 1


def test_explicit_files_url_still_wins(project, tmp_path):
    from starbuild.config.urls import api_urls

    assert api_urls("https://a", "https://f", {"STARMAGIC_BASE_URL": "http://127.0.0.1:1"}) == \
        ("http://127.0.0.1:1", "http://127.0.0.1:1")
    assert api_urls("https://a", "https://f", {"STARMAGIC_BASE_URL": "http://127.0.0.1:1",
                                               "STARMAGIC_FILES_URL": "http://127.0.0.1:2"}) == \
        ("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert api_urls("https://a", "https://f", {}) == ("https://a", "https://f")


# --- server text: the key scrubbed, control characters escaped ----------------------------------


def test_echoed_headers_never_print_the_key(project, tmp_path):
    project.config(ONE.format(timeout=600))
    em = Emulator(EmulatorConfig(render="plain", api_key=CANARY, faults=Faults(rate_echo_headers=1.0)))
    with serve_in_thread(em) as url:
        raw = httpx.post(f"{url}/v1/images/generations", json={"model": "gpt-image-2", "prompt": "x"},
                         headers={"Authorization": f"Bearer {CANARY}"})
        assert CANARY in raw.text  # the server really echoes the key
        env = _env(tmp_path, url)
        plain = _cli(project.root, env, "-vv", "build")
        as_json = _cli(project.root, env, "build", "--json")
    for res in (plain, as_json):
        assert res.returncode == 1, res.stderr
        assert CANARY not in res.stdout + res.stderr
        assert "authorization: Bearer ***" in res.stdout + res.stderr
    error = json.loads(as_json.stdout)["assets"][0]["error"]
    assert "***" in error and CANARY not in error
    assert not any(CANARY.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


@pytest.mark.parametrize("where", ["task failure", "error answer"])
def test_escape_sequences_from_the_server_never_reach_the_terminal(project, tmp_path, where):
    project.config(ONE.format(timeout=600))
    faults = Faults(rate_escape_text=1.0, rate_task_failed=1.0) if where == "task failure" else \
        Faults(rate_escape_text=1.0, rate_echo_headers=1.0)
    em = Emulator(EmulatorConfig(render="plain", faults=faults))
    with serve_in_thread(em) as url:
        env = _env(tmp_path, url)
        plain = _cli(project.root, env, "build")
        as_json = _cli(project.root, env, "build", "--json")
    for res in (plain, as_json):
        assert res.returncode == 1, res.stderr
        assert "\x1b" not in res.stdout + res.stderr and "\x07" not in res.stdout + res.stderr
        assert "\\e[2J" in res.stdout + res.stderr  # shown, escaped
    assert "\\e[2J" in json.loads(as_json.stdout)["assets"][0]["error"]


def test_gallery_shows_server_text_escaped(project, emulator):
    from starbuild.config.project import load_config
    from starbuild.ui.gallery import GalleryState, create_app

    emulator.config.faults = Faults(rate_escape_text=1.0, rate_task_failed=1.0)
    project.config(ONE.format(timeout=600))
    report = api_build(project, emulator)
    assert report.results[0].outcome == Outcome.FAILED
    state = GalleryState(load_config(project.root / "starbuild.yaml"))
    state.end(report)

    async def get() -> httpx.Response:
        app = create_app(state, project.root.parent / ".cache")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            return await c.get("/")

    page = asyncio.run(get())
    assert page.status_code == 200 and "failed" in page.text
    assert "\x1b" not in page.text and "\x07" not in page.text and "\\e[2J" in page.text


# --- the gallery answers only to loopback names -----------------------------------------------


@pytest.mark.parametrize("host,status", [("127.0.0.1:8700", 200), ("localhost:8700", 200), ("[::1]:8700", 200),
                                         ("localhost", 200), ("evil.example:8700", 421),
                                         ("127.0.0.1.nip.io:8700", 421), ("", 421)])
def test_gallery_answers_only_loopback_host_names(project, host, status):
    from starbuild.ui.gallery import GalleryState, create_app

    app = create_app(GalleryState())

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            return await c.get(path, headers={"Host": host})

    for path in ("/", "/api/state"):
        assert asyncio.run(get(path)).status_code == status


def test_gallery_over_http_refuses_a_rebound_host(project):
    import threading

    import uvicorn

    from starbuild.ui.gallery import GalleryState, create_app

    server = uvicorn.Server(uvicorn.Config(create_app(GalleryState()), host="127.0.0.1", port=0, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        assert httpx.get(f"http://127.0.0.1:{port}/api/state").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/api/state", headers={"Host": "attacker.example"}).status_code == 421
    finally:
        server.should_exit = True
        thread.join(10)


# --- dripping bodies: every request and download has a deadline ----------------------------------


@pytest.mark.parametrize("fault", ["rate_drip_task", "rate_drip_result"])
def test_dripping_answers_end_at_the_deadline_and_the_task_is_kept(project, fault):
    project.config(ONE.format(timeout=1))
    from starbuild.api.client import RetryPolicy

    em = Emulator(EmulatorConfig(render="plain", faults=Faults(**{fault: 1.0}, drip_seconds=0.5)))
    started = time.monotonic()
    report = api_build(project, em, retry=RetryPolicy(attempts=2, base=0.01, cap=0.05, max_advised=0.05))
    assert time.monotonic() - started < 15
    result = report.results[0]
    assert result.outcome == Outcome.FAILED
    assert "task_timeout" in result.error or "did not finish within" in result.error, result.error
    assert len(em.ledger) == 1
    # The paid task stays journaled: without the fault the next build resumes it, paying nothing more.
    em.config.faults = Faults()
    again = api_build(project, em)
    assert again.results[0].outcome == Outcome.RESUMED, again.results[0]
    assert len(em.ledger) == 1


def test_dripping_download_over_http_ends_at_the_deadline(project, tmp_path):
    project.config(ONE.format(timeout=2))
    em = Emulator(EmulatorConfig(render="plain", api_key=CANARY,
                                 faults=Faults(rate_drip_result=1.0, drip_seconds=1.0)))
    with serve_in_thread(em) as url:
        started = time.monotonic()
        res = _cli(project.root, _env(tmp_path, url), "build")
        elapsed = time.monotonic() - started
    assert res.returncode == 1, res.stderr
    assert "did not finish within 2 s" in res.stdout + res.stderr
    assert elapsed < 30


def test_client_deadline_covers_a_slow_request(tmp_path):
    """One request, not only a task: a dripping answer to any GET ends at the client's deadline."""
    from starbuild.api.client import RetryPolicy, StarMagicClient
    from starbuild.errors import TransientApiError

    em = Emulator(EmulatorConfig(render="plain", faults=Faults(rate_drip_task=1.0, drip_seconds=0.3)))

    async def main() -> float:
        async with StarMagicClient("http://starmagic.emulator", "k", transport=httpx.ASGITransport(app=em),
                                   retry=RetryPolicy(attempts=1), deadline=0.5) as client:
            started = time.monotonic()
            with pytest.raises(TransientApiError, match="no complete answer within 0.5 s"):
                await client.task("task-unified-1-abc")
            return time.monotonic() - started

    assert asyncio.run(main()) < 3


def test_progress_lines_escape_what_a_server_named():
    from starbuild.ui.progress import PlainProgress

    out = io.StringIO()
    progress = PlainProgress(out)
    progress("resume", "a", {"task_id": "task-1\x1b]0;owned\x07"})
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert "task-1\\e]0;owned\\x07" in out.getvalue()
    # A failure's reason is printed once, in the summary: escaped there too.
    from starbuild.engine.outcome import AssetResult, BuildReport, Outcome
    from starbuild.ui.progress import render_summary

    summary = io.StringIO()
    render_summary(BuildReport(results=[AssetResult("b", Outcome.FAILED, error="boom\x1b[2J")]), summary)
    assert "\x1b" not in summary.getvalue() and "boom\\e[2J" in summary.getvalue()
