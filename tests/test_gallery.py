"""The preview gallery: pages, thumbnails, states, and a real browser (headless Chromium) on it."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, matrix_config
from starbuild.config.project import load_config
from starbuild.ui.gallery import GalleryState, create_app, serve_gallery
from starbuild.engine.outcome import AssetResult, BuildReport, Outcome

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


class Client:
    """A synchronous client of an ASGI app, in-process."""

    def __init__(self, app):
        self.app = app

    def get(self, url: str) -> httpx.Response:
        import asyncio

        async def fetch():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://127.0.0.1:8700") as c:
                return await c.get(url)

        return asyncio.run(fetch())


def _two_versions(project) -> GalleryState:
    project.config(matrix_config(3))
    assert project.run("build", "--offline").exit_code == 0
    project.config(matrix_config(3, prompt="icon {{ i }}{{ ' in gold' if i == 1 else '' }}"))
    assert project.run("build", "--offline").exit_code == 0
    return GalleryState(load_config(project.root / "starbuild.yaml"))


def test_gallery_pages_thumbnails_and_states(project):
    state = _two_versions(project)
    client = Client(create_app(state))
    page = client.get("/").text
    for i in range(3):
        assert f"data-asset='icons/i{i}'" in page
    assert "loading=lazy" in page and "icon 1 in gold" in page and "placeholder" in page
    assert "<script src" not in page and "http://" not in page.replace("http://127.0.0.1", "")
    versions = client.get("/asset/icons/i1").text
    assert versions.count("data-version=") == 2 and "icon 1 in gold" in versions and "icon 1<" in versions
    assert client.get("/asset/icons/i0").text.count("data-version=") == 1  # unchanged: shown once
    thumb = client.get("/thumb/2/icons/i1.png")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert client.get("/thumb/2/../../starbuild.lock").status_code == 404
    assert client.get("/file/2/icons/i1.png").content[:8] == b"\x89PNG\r\n\x1a\n"
    before = client.get("/api/state").json()["generation"]
    state.begin({"icons/i2"})
    assert "building" in client.get("/").text
    failed = AssetResult("icons/i2", Outcome.FAILED, error="task failed: content_policy_violation")
    state.end(BuildReport(results=[failed]))
    page = client.get("/").text
    assert "failed: task failed: content_policy_violation" in page
    assert client.get("/api/state").json()["generation"] == before + 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gallery_in_headless_chromium(project):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "the browser test needs Chromium (.ci/run installs it)"
    state = _two_versions(project)
    port = _free_port()
    server = serve_gallery(state, port, in_thread=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/state", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 800})
                page.goto(f"http://127.0.0.1:{port}/")
                cards = page.locator("[data-asset]")
                assert cards.count() == 3
                assert sorted(cards.nth(i).get_attribute("data-asset") for i in range(3)) == \
                    ["icons/i0", "icons/i1", "icons/i2"]
                page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "gallery.png"))
                page.click("[data-asset='icons/i1'] a")
                page.wait_for_url(f"http://127.0.0.1:{port}/asset/icons/i1")
                assert page.locator("[data-version]").count() == 2
                assert "icon 1 in gold" in page.content()
                page.screenshot(path=str(ARTIFACTS / "gallery-versions.png"))
                # The page refreshes itself after a rebuild.
                page.goto(f"http://127.0.0.1:{port}/")
                state.begin({"icons/i0"})
                page.wait_for_selector("text=building", timeout=5000)
            finally:
                browser.close()
    finally:
        server.should_exit = True
    assert (ARTIFACTS / "gallery.png").stat().st_size > 10_000
