"""The review gallery: pages, thumbnails, states, actions, and a real browser (headless Chromium) on it."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, matrix_config
from starbuild.config.project import load_config
from starbuild.engine.build import BuildOptions
from starbuild.engine.outcome import AssetResult, BuildReport, Outcome
from starbuild.ui.gallery import GalleryState, create_app, serve_gallery

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "test-token-123"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                "--disable-component-update", "--disable-sync", "--disable-quic"]


class Client:
    """A synchronous client of an ASGI app, in-process, as a loopback browser would call it."""

    def __init__(self, app, host: str = "127.0.0.1"):
        self.app, self.host = app, host

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        async def fetch():
            transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url=f"http://{self.host}:8700") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(fetch())

    def get(self, url: str) -> httpx.Response:
        return self.request("GET", url)

    def post(self, url: str, body: dict, token: str | None = TOKEN) -> httpx.Response:
        headers = {"X-Starbuild-Token": token} if token else {}
        return self.request("POST", url, json=body, headers=headers)


def _two_versions(project) -> GalleryState:
    project.config(matrix_config(3))
    assert project.run("build", "--offline").exit_code == 0
    project.config(matrix_config(3, prompt="icon {{ i }}{{ ' in gold' if i == 1 else '' }}"))
    assert project.run("build", "--offline").exit_code == 0
    return GalleryState(load_config(project.root / "starbuild.yaml"))


GRID = """\
version: 1
images:
  'icons/{{ item }}-{{ rarity }}':
    matrix:
      item: [sword, shield]
      rarity: [common, rare, epic]
    prompt: "a {{ rarity }} {{ item }} icon"
    size: '1:1'
    quality: low
  hero:
    prompt: "a hero on a transparent background"
    size: '1:1'
    background: transparent
    takes: 3
"""


def _review_project(project) -> GalleryState:
    project.config(GRID)
    assert project.run("build", "--offline").exit_code == 0
    return GalleryState(load_config(project.root / "starbuild.yaml"), options=BuildOptions(offline=True))


def test_gallery_pages_thumbnails_and_states(project):
    state = _two_versions(project)
    client = Client(create_app(state, token=TOKEN))
    page = client.get("/").text
    for i in range(3):
        assert f'data-asset="icons/i{i}"' in page
    assert 'loading="lazy"' in page and "icon 1 in gold" in page and "placeholder" in page
    assert "<script src" not in page and "http://" not in page.replace("http://127.0.0.1", "")
    versions = client.get("/asset/icons/i1").text
    assert versions.count("data-version=") == 2 and "icon 1 in gold" in versions and "icon 1<" in versions
    assert 'data-compare="before"' in versions and 'data-compare="after"' in versions  # before/after
    assert client.get("/asset/icons/i0").text.count("data-version=") == 1  # unchanged: shown once
    thumb = client.get("/thumb/2/icons/i1.png")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert client.get("/thumb/2/../../starbuild.lock").status_code == 404
    assert client.get("/file/2/icons/i1.png").content[:8] == b"\x89PNG\r\n\x1a\n"
    before = client.get("/api/state").json()["generation"]
    state.begin({"icons/i2"})
    state.emit("submitted", "icons/i2", {"task_id": "t-1"})
    state.emit("progress", "", {"task_id": "t-1", "progress": 42, "status": "processing"})
    assert client.get("/api/state").json()["live"] == {"icons/i2": "processing 42%"}
    assert "processing 42%" in client.get("/").text
    reason = "task failed: content_policy_violation: " + "the prompt was refused " * 8
    state.end(BuildReport(results=[AssetResult("icons/i2", Outcome.FAILED, error=reason)]))
    page = client.get("/").text
    assert f"failed: {reason}" in page and "data-failed" in page  # the full reason, not a cut
    assert client.get("/api/state").json()["generation"] == before + 2


def test_gallery_answers_only_on_loopback_and_actions_need_the_token(project):
    state = _review_project(project)
    app = create_app(state, token=TOKEN)
    assert Client(app, host="evil.example").get("/").status_code == 421
    client = Client(app)
    lock = (project.root / "starbuild.lock").read_text()
    assert client.post("/api/pick", {"name": "hero", "take": 2}, token=None).status_code == 403
    assert client.post("/api/pick", {"name": "hero", "take": 2}, token="wrong").status_code == 403
    assert (project.root / "starbuild.lock").read_text() == lock
    assert client.post("/api/pick", {"name": "hero", "take": 9}).status_code == 400
    res = client.post("/api/pick", {"name": "hero", "take": 2})
    assert res.status_code == 200 and json.loads((project.root / "starbuild.lock").read_text()) \
        ["assets"]["hero"]["pick"]["take"] == 2
    res = client.post("/api/accept", {"name": "hero"})
    assert res.status_code == 200 and res.json()["message"] == "nothing to accept"


def test_transparent_thumbnails_keep_their_alpha_and_candidates_are_served(project):
    state = _review_project(project)
    client = Client(create_app(state, token=TOKEN))
    thumb = client.get("/thumb/1/hero.png")
    assert thumb.headers["content-type"] == "image/png"
    entry = json.loads((project.root / "starbuild.lock").read_text())["assets"]["hero"]
    for c in entry["candidates"]:
        assert client.get(f"/object/{c['sha256']}").content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/object/" + "0" * 64).status_code == 404  # only images the lockfile refers to
    page = client.get("/asset/hero").text
    assert page.count('class="card candidate') == 3 and "<kbd>3</kbd>" in page


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser_on(project):
    """A function serving a GalleryState on a free loopback port and opening Chromium on it."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "the browser test needs Chromium (.ci/run installs it)"
    servers, opened = [], []

    def open_page(state: GalleryState):
        # Started on first use: playwright's loop would stop the test's builds (asyncio.run) before it.
        if not opened:
            pw = sync_playwright().start()
            opened.extend([pw, pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)])
        browser = opened[1]
        port = _free_port()
        servers.append(serve_gallery(state, port, in_thread=True))
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/state", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        return page, f"http://127.0.0.1:{port}"

    yield open_page
    if opened:
        opened[1].close()
        opened[0].stop()
    for server in servers:
        server.should_exit = True


def test_gallery_in_headless_chromium(project, browser_on):
    state = _two_versions(project)
    page, url = browser_on(state)
    page.goto(url + "/")
    cards = page.locator("[data-asset]")
    assert sorted(cards.nth(i).get_attribute("data-asset") for i in range(cards.count())) == \
        ["icons/i0", "icons/i1", "icons/i2"]
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.fill("#search", "gold")  # search filters the cards
    assert [c.get_attribute("data-asset") for c in page.locator("[data-asset]:visible").all()] == ["icons/i1"]
    page.fill("#search", "")
    page.click("[data-asset='icons/i1'] .name a")
    page.wait_for_url(url + "/asset/icons/i1")
    assert page.locator("[data-version]").count() == 2
    assert "icon 1 in gold" in page.content()
    page.goto(url + "/")
    state.begin({"icons/i0"})  # the page refreshes itself after a rebuild starts
    page.wait_for_selector("[data-live='icons/i0']:has-text('building')", timeout=5000)


def test_review_in_chromium_grid_filters_and_pick_with_a_key(project, browser_on):
    state = _review_project(project)
    page, url = browser_on(state)
    page.goto(url + "/")
    grid = page.locator("section[data-group='icons/{{ item }}-{{ rarity }}'] table.matrix")
    assert [h.inner_text() for h in grid.locator("tbody th").all()] == ["sword", "shield"]
    assert [h.inner_text() for h in grid.locator("thead th[data-col]").all()] == ["common", "rare", "epic"]
    assert grid.locator("tr[data-row='shield'] td").nth(2).locator("[data-asset]").get_attribute("data-asset") \
        == "icons/shield-epic"
    page.click("button[data-filter='nopick']")
    assert [c.get_attribute("data-asset") for c in page.locator("[data-asset]:visible").all()] == ["hero"]
    page.click("button[data-filter='nopick']")
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-grid.png"), full_page=True)

    page.goto(url + "/asset/hero")
    assert page.locator(".candidate").count() == 3
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(ARTIFACTS / "review-candidates.png"), full_page=True)
    page.keyboard.press("2")  # key 2 picks the second candidate
    page.wait_for_selector(".candidate.picked[data-take='2']", timeout=10000)
    entry = json.loads((project.root / "starbuild.lock").read_text())["assets"]["hero"]
    assert entry["pick"]["take"] == 2 and entry["pick"]["by"]
    take2 = next(c for c in entry["candidates"] if c["take"] == 2)
    assert entry["files"][0]["sha256"] == take2["sha256"]
    assert (ARTIFACTS / "review-grid.png").stat().st_size > 10_000


def test_gallery_reroll_and_accept_run_the_commands_code(project):
    state = _review_project(project)
    client = Client(create_app(state, token=TOKEN))
    everything = json.loads((project.root / "starbuild.lock").read_text())["assets"]
    before = everything["icons/sword-rare"]
    res = client.post("/api/reroll", {"name": "icons/sword-rare"})
    assert res.status_code == 200, res.text
    lock = json.loads((project.root / "starbuild.lock").read_text())["assets"]
    cell = lock["icons/sword-rare"]
    assert [c["take"] for c in cell["candidates"]] == [0, 1] and cell["pick"]["take"] == 1
    assert cell["files"][0]["sha256"] != before["files"][0]["sha256"]
    assert {k: v for k, v in lock.items() if k != "icons/sword-rare"} == \
        {k: v for k, v in everything.items() if k != "icons/sword-rare"}
    project.config(GRID.replace("a {{ rarity }} {{ item }} icon", "an {{ rarity }} {{ item }} icon"))
    state.set_project(load_config(project.root / "starbuild.yaml"))
    page = client.get("/asset/icons/shield-epic").text
    assert "accept the change" in page and "a epic shield icon" in page and "an epic shield icon" in page
    res = client.post("/api/accept", {"name": "icons/shield-epic"})
    assert res.status_code == 200 and res.json()["message"] == "accepted icons/shield-epic: prompt"
    accepted = json.loads((project.root / "starbuild.lock").read_text())["assets"]["icons/shield-epic"]
    assert accepted["accepted"][0]["fields"] == ["prompt"]
