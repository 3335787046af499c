"""The connection pool under the API client, over real HTTP: reuse, concurrency, expiry, errors."""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx
import pytest

from conftest import KEY
from starbuild.api import pool
from starbuild.api.pool import network_transport
from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread

TASK = "/v1/tasks/task-unified-1757156493-abcdefgh"  # unknown: a small 404, fine for these checks


def _idle(transport) -> list:
    return [c for stack in transport._idle.values() for c in stack]


def test_sequential_requests_reuse_one_connection():
    em = Emulator(EmulatorConfig())

    async def go(url):
        transport = network_transport()
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            first = None
            for _ in range(20):
                resp = await client.get(TASK, headers={"Authorization": f"Bearer {KEY}"})
                assert resp.status_code == 404
                [conn] = _idle(transport)
                first = first or conn
                assert conn is first
        assert _idle(transport) == []

    with serve_in_thread(em) as url:
        asyncio.run(go(url))


def test_concurrent_requests_each_get_a_connection_and_give_it_back():
    em = Emulator(EmulatorConfig())

    async def go(url):
        transport = network_transport()
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            answers = await asyncio.gather(*(client.get(TASK, headers={"Authorization": f"Bearer {KEY}"})
                                             for _ in range(12)))
            assert {a.status_code for a in answers} == {404}
            idle = _idle(transport)
            assert 1 < len(idle) <= 12 and len(set(map(id, idle))) == len(idle)
            assert transport._busy == set()
            async with client.stream("GET", TASK, headers={"Authorization": f"Bearer {KEY}"}) as resp:
                assert len(_idle(transport)) == len(idle) - 1  # a streamed body holds its connection
                await resp.aread()
            assert len(_idle(transport)) == len(idle)

    with serve_in_thread(em) as url:
        asyncio.run(go(url))


def test_an_expired_idle_connection_is_closed_and_replaced(monkeypatch):
    monkeypatch.setattr(pool, "KEEPALIVE_EXPIRY", 0.05)
    em = Emulator(EmulatorConfig())

    async def go(url):
        transport = network_transport()
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            await client.get(TASK, headers={"Authorization": f"Bearer {KEY}"})
            [old] = _idle(transport)
            await asyncio.sleep(0.2)
            assert (await client.get(TASK, headers={"Authorization": f"Bearer {KEY}"})).status_code == 404
            [new] = _idle(transport)
            assert new is not old and old.is_closed()

    with serve_in_thread(em) as url:
        asyncio.run(go(url))


def test_a_connection_the_server_closes_is_not_reused():
    """A server that answers with `Connection: close` (and hangs up): every request opens anew."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()

    async def go():
        transport = network_transport()
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                assert (await client.get(f"http://127.0.0.1:{port}/")).text == "ok"
                assert _idle(transport) == []

    try:
        asyncio.run(go())
    finally:
        listener.close()
    assert len(accepted) == 3


def test_a_refused_connection_is_an_httpx_error_and_leaves_nothing_behind():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def go():
        transport = network_transport()
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")
            assert _idle(transport) == [] and transport._busy == set()

    asyncio.run(go())


def test_the_longest_idle_connection_is_swept_when_it_expires(monkeypatch):
    monkeypatch.setattr(pool, "KEEPALIVE_EXPIRY", 0.5)
    em = Emulator(EmulatorConfig())

    async def go(url):
        transport = network_transport()
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            get = lambda: client.get(TASK, headers={"Authorization": f"Bearer {KEY}"})  # noqa: E731
            await asyncio.gather(get(), get())
            oldest, newest = _idle(transport)
            await asyncio.sleep(0.3)
            await get()  # reuses the newest; the oldest stays below it, idle
            await asyncio.sleep(0.3)  # now only the oldest has outlived the expiry
            await get()  # reuses the newest again, and on giving it back sweeps the oldest
            assert _idle(transport) == [newest] and oldest.is_closed()

    with serve_in_thread(em) as url:
        asyncio.run(go(url))
