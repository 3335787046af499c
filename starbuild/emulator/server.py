"""Serving the emulator over HTTP with uvicorn: blocking, or in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn

from .app import Emulator
from .config import DEFAULT_PUBLIC_URL

START_TIMEOUT = 10.0


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):  # reachable from this machine at least
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(emulator: Emulator, log_level: str) -> uvicorn.Server:
    # h11 explicitly: the reset fault reaches into its connection to drop it.
    config = uvicorn.Config(emulator, http="h11", ws="none", lifespan="off", log_level=log_level,
                            access_log=False, timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


@contextmanager
def serve_in_thread(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``emulator`` from a daemon thread; yields its base URL and stops it on exit."""
    sock = _bind(host, port)
    url = _url(sock)
    emulator.config.public_url = url
    server = _server(emulator, "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"starmagic-emulator-{url}")
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the emulator did not start at {url}")
        time.sleep(0.005)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)
        sock.close()


def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 8787,
          announce: Callable[[str], None] | None = None, log_level: str = "warning") -> None:
    """Serve ``emulator`` until interrupted; ``announce`` gets the base URL once it is bound."""
    sock = _bind(host, port)
    url = _url(sock)
    if emulator.config.public_url == DEFAULT_PUBLIC_URL:
        emulator.config.public_url = url
    if announce:
        announce(url)
    try:
        _server(emulator, log_level).run(sockets=[sock])
    finally:
        sock.close()
