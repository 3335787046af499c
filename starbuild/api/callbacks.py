"""The callback listener (SPEC.md §11): a tiny HTTP server that completes tasks when the API posts.

Each submission's ``callback_url`` is the configured URL plus ``/`` and a random token. A POST
whose last path segment is the token of a task being waited for, with a JSON body of that task,
hands the body to the waiting task, which then downloads and verifies the results exactly as after
a poll. Anything else (an unknown token, another task's body, another method, a malformed request)
is answered 404 and changes nothing. It runs on the build's event loop; it never logs a token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any

from starbuild.config.callback import Callback, split_listen
from starbuild.errors import UsageError

log = logging.getLogger("starbuild.callbacks")
MAX_HEAD = 16 * 1024
MAX_BODY = 1 << 20
READ_TIMEOUT = 10.0


class CallbackHub:
    """Tokens of the tasks being waited for, and the listener that receives their callbacks."""

    def __init__(self, config: Callback):
        self.config = config
        self.url = config.url
        self._slots: dict[str, Any] = {}   # token -> the Watched task (engine/polling.py)
        self._server: asyncio.AbstractServer | None = None
        self.received = 0   # callbacks that completed a wait
        self.refused = 0    # answered 404

    async def start(self) -> None:
        host, port = split_listen(self.config.listen)
        try:
            self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)
        except OSError as exc:
            raise UsageError(f"provider.callback.listen: cannot listen on {self.config.listen}: "
                             f"{exc.strerror or exc}") from None
        if self.url is None:  # a loopback listener reached directly
            bound = self._server.sockets[0].getsockname()
            shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            self.url = f"http://{shown}:{bound[1]}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "CallbackHub":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def register(self, watched: Any) -> str:
        """A fresh token for a task about to be submitted; returns its callback_url."""
        token = secrets.token_urlsafe(24)
        watched.token = token
        self._slots[token] = watched
        return f"{self.url}/{token}"

    def drop(self, watched: Any) -> None:
        if watched.token:
            self._slots.pop(watched.token, None)

    def deliver(self, path: str, body: bytes) -> bool:
        """Hand a callback to its task; False (a 404, nothing changed) unless the token and task match."""
        token = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        watched = self._slots.get(token)
        if watched is None:
            return False
        try:
            data = json.loads(body)
        except ValueError:
            return False
        if not isinstance(data, dict) or not watched.task_id or data.get("id") != watched.task_id:
            return False
        watched.callback = data
        if watched.wake is not None and not watched.wake.done():
            watched.wake.set_result(None)
        self.received += 1
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status = 404
        try:
            method, path, body = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
            if method == "POST" and self.deliver(path, body):
                status = 204
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError):
            pass
        if status != 204:
            self.refused += 1
        log.debug("callback -> %s", status)
        reason = b"No Content" if status == 204 else b"Not Found"
        try:
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (status, reason))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    """(method, path, body) of one HTTP/1.1 request; ValueError when it is not one we accept."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("not an HTTP request")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding":
            raise ValueError("chunked bodies are not accepted")
    if not 0 <= length <= MAX_BODY:
        raise ValueError("body too large")
    body = await reader.readexactly(length) if length else b""
    return parts[0], parts[1], body
