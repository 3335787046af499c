"""Serving the emulator over HTTP with uvicorn: blocking, or in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn

from .app import Emulator
from .config import DEFAULT_FILES_URL, DEFAULT_PUBLIC_URL

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


def _bind_both(host: str, port: int, files_port: int) -> tuple[socket.socket, socket.socket]:
    """The API's socket and the file service's (its own origin, as on the platform)."""
    api = _bind(host, port)
    try:
        files = _bind(host, files_port)
    except OSError:
        api.close()
        raise
    return api, files


@contextmanager
def serve_in_thread(emulator: Emulator, host: str = "127.0.0.1", port: int = 0,
                    files_port: int = 0) -> Iterator[str]:
    """Serve ``emulator`` from a daemon thread; yields the API's base URL and stops it on exit.

    The file service answers on a second port: its base URL is ``emulator.config.files_url``.
    """
    socks = _bind_both(host, port, files_port)
    url = _url(socks[0])
    emulator.config.public_url, emulator.config.files_url = url, _url(socks[1])
    server = _server(emulator, "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": list(socks)}, daemon=True,
                              name=f"starmagic-emulator-{url}")
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            for sock in socks:
                sock.close()
            raise RuntimeError(f"the emulator did not start at {url}")
        time.sleep(0.005)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)
        for sock in socks:
            sock.close()


def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 8787, files_port: int = 0,
          announce: Callable[[str, str], None] | None = None, log_level: str = "warning") -> None:
    """Serve ``emulator`` until interrupted; ``announce`` gets the API and files base URLs once bound.

    A port already in use raises OSError before anything is announced.
    """
    socks = _bind_both(host, port, files_port)
    url, files = _url(socks[0]), _url(socks[1])
    if emulator.config.public_url == DEFAULT_PUBLIC_URL:
        emulator.config.public_url = url
    if emulator.config.files_url == DEFAULT_FILES_URL:
        emulator.config.files_url = files
    if announce:
        announce(emulator.config.public_url, emulator.config.files_url)
    try:
        _server(emulator, log_level).run(sockets=list(socks))
    finally:
        for sock in socks:
            sock.close()
