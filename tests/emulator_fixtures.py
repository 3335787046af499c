"""Fixtures and helpers of the emulator tests.

Every test runs against an in-process emulator driven by a ManualClock, and the tests marked
``both_transports`` run a second time over real HTTP (uvicorn on 127.0.0.1). Another server is
checked with ``starbuild check-api URL``, not with these tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx
import pytest
from PIL import Image

from starbuild.emulator import Emulator, EmulatorConfig, ManualClock, serve_in_thread

BASE_URL = "http://starmagic.emulator"
FILES_URL = "http://files.starmagic.emulator"
KEY = "sk-test-emulator-key"
TERMINAL = ("completed", "failed", "cancelled")

@pytest.fixture
def anyio_backend():
    """The emulator's callbacks run on asyncio; run async tests there only."""
    return "asyncio"


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Api:
    """One emulator (or external server) as the contract tests see it."""

    def __init__(self, client: httpx.AsyncClient, anon: httpx.AsyncClient, files: httpx.AsyncClient,
                 emulator: Emulator | None = None, clock: ManualClock | None = None):
        self.client = client          # sends the bearer key
        self.files = files            # the file service (its own host), with the bearer key
        self.anon = anon              # sends no Authorization header, like a CDN download
        self.emulator = emulator      # None against an external server
        self.clock = clock

    async def submit(self, **body) -> httpx.Response:
        body.setdefault("model", "gpt-image-2")
        body.setdefault("prompt", "a lighthouse on a cliff at dawn")
        return await self.client.post("/v1/images/generations", json=body)

    async def accepted(self, **body) -> dict:
        response = await self.submit(**body)
        assert response.status_code == 200, response.text
        return response.json()

    async def query(self, task_id: str) -> httpx.Response:
        return await self.client.get(f"/v1/tasks/{task_id}")

    async def settle(self, task_id: str, timeout: float = 300.0) -> dict:
        """The task's final answer: move the clock in-process, poll in real time otherwise."""
        if self.clock is not None:
            self.clock.advance(self.emulator.config.latency)
            body = (await self.query(task_id)).json()
            if body.get("status") == "completed" and body.get("results") is None:
                self.clock.advance(self.emulator.config.faults.results_null_seconds)
                body = (await self.query(task_id)).json()
            return body
        deadline = time.monotonic() + timeout
        while True:
            body = (await self.query(task_id)).json()
            if body.get("status") in TERMINAL and not (body["status"] == "completed" and body.get("results") is None):
                return body
            assert time.monotonic() < deadline, f"task {task_id} did not finish: {body}"
            await anyio.sleep(1.0)  # real server, real time: nothing else to move

    async def generate(self, **body) -> dict:
        return await self.settle((await self.accepted(**body))["id"])

    async def download(self, url: str) -> httpx.Response:
        return await self.anon.get(url)


def in_process_client(emulator: Emulator, headers: dict | None = None, base_url: str = BASE_URL) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator), base_url=base_url,
                             headers=headers or {})


@pytest.fixture(params=["asgi"])
def transport_kind(request) -> str:
    """How tests reach the emulator: in-process by default, see ``both_transports``."""
    return request.param


# Also run a test over real HTTP (uvicorn in a thread) besides in-process.
both_transports = pytest.mark.parametrize(
    "transport_kind", ["asgi", "http"], indirect=True)


@pytest.fixture
async def make_api(transport_kind):
    """A factory of Api objects over the transport under test; ``make_api(**config)``."""
    async with contextlib.AsyncExitStack() as stack:
        async def make(key: str = KEY, **config) -> Api:
            clock = ManualClock()
            emulator = Emulator(EmulatorConfig(**config), clock=clock)
            if transport_kind == "http":
                url = stack.enter_context(serve_in_thread(emulator))
                client = httpx.AsyncClient(base_url=url, headers=auth(key))
                anon = httpx.AsyncClient(base_url=url)
                files = httpx.AsyncClient(base_url=emulator.config.files_url, headers=auth(key))
            else:
                client, anon = in_process_client(emulator, auth(key)), in_process_client(emulator)
                files = in_process_client(emulator, auth(key), FILES_URL)
            clients = [await stack.enter_async_context(c) for c in (client, anon, files)]
            return Api(*clients, emulator, clock)

        yield make


@pytest.fixture
async def api(make_api) -> Api:
    """The default target: tasks take 10 s of (manual) time."""
    return await make_api(latency=10.0)


@pytest.fixture
def emulator_and_clock():
    clock = ManualClock()
    return Emulator(EmulatorConfig(latency=10.0), clock=clock), clock


def image_bytes(size=(64, 48), mode="RGB", fmt="PNG", colour=(200, 30, 30)) -> bytes:
    """An image file of the given pixel size, mode and format, filled with one colour."""
    image = Image.new(mode, size, colour + (128,) if mode == "RGBA" else colour)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def eventually(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait in real time (for real network deliveries) until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class CallbackReceiver:
    """An HTTP server on 127.0.0.1 that records POSTed JSON; fails the first ``fail_first`` posts."""

    def __init__(self, fail_first: int = 0):
        self.fail_first = fail_first
        self.bodies: list[dict] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                receiver.attempts += 1
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CallbackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        """Wait until ``count`` bodies arrived; deliveries are real HTTP in real time."""
        await eventually(lambda: len(self.bodies) >= count, timeout, f"{count} callbacks")
        return self.bodies
