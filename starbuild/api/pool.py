"""A connection pool whose cost per request does not grow with the requests in flight.

httpcore's pool walks every connection, polling each idle socket, on every request and every
response close; with 50 requests in flight that walk was most of a build's CPU. Here idle
connections wait in a stack per origin: a request pops one (checking only that one), a finished
response pushes it back. HTTP/1.1 only, one request per connection at a time, as before.
"""

from __future__ import annotations

import ssl
from typing import AsyncIterator

import httpcore
import httpx

MAX_IDLE = 64
# Under the 5 s keep-alive of common servers (uvicorn's, so the emulator's): reusing a connection
# the server is closing at that moment would lose a submission's answer (an unknown outcome).
KEEPALIVE_EXPIRY = 4.0


class StackPool:
    """The pool handed to httpx's transport in place of httpcore's."""

    def __init__(self, ssl_context: ssl.SSLContext | None):
        self._ssl_context = ssl_context
        self._idle: dict[tuple, list[httpcore.AsyncHTTPConnection]] = {}
        self._busy: set[httpcore.AsyncHTTPConnection] = set()

    def _checkout(self, origin: httpcore.Origin) -> tuple[httpcore.AsyncHTTPConnection, list]:
        stack = self._idle.get(_key(origin))
        stale = []
        while stack:
            conn = stack.pop()
            if conn.is_available() and not conn.has_expired():
                return conn, stale
            stale.append(conn)
        conn = httpcore.AsyncHTTPConnection(origin=origin, ssl_context=self._ssl_context,
                                            keepalive_expiry=KEEPALIVE_EXPIRY)
        return conn, stale

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        conn, stale = self._checkout(request.url.origin)
        for old in stale:
            await old.aclose()
        self._busy.add(conn)
        try:
            response = await conn.handle_async_request(request)
        except BaseException:
            self._busy.discard(conn)
            await conn.aclose()
            raise
        return httpcore.Response(status=response.status, headers=response.headers,
                                 content=_Returning(response.stream, self, conn, request.url.origin),
                                 extensions=response.extensions)

    async def _give_back(self, conn: httpcore.AsyncHTTPConnection, origin: httpcore.Origin) -> None:
        self._busy.discard(conn)
        stack = self._idle.setdefault(_key(origin), [])
        if stack and stack[0].has_expired():  # the longest idle one: swept here, one per response
            await stack.pop(0).aclose()
        if conn.is_idle() and len(stack) < MAX_IDLE:
            stack.append(conn)
        else:
            await conn.aclose()

    async def aclose(self) -> None:
        conns = [c for stack in self._idle.values() for c in stack] + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        for conn in conns:
            await conn.aclose()

    async def __aenter__(self) -> "StackPool":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _key(origin: httpcore.Origin) -> tuple[bytes, bytes, int]:
    return origin.scheme, origin.host, origin.port


class _Returning:
    """A response body that hands its connection back to the pool once closed."""

    def __init__(self, stream, pool: StackPool, conn: httpcore.AsyncHTTPConnection, origin: httpcore.Origin):
        self._stream, self._pool, self._conn, self._origin = stream, pool, conn, origin
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._stream.aclose()
        finally:
            await self._pool._give_back(self._conn, self._origin)


def network_transport() -> httpx.AsyncHTTPTransport:
    """httpx's transport over a StackPool (TLS verified with the default context)."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    transport._pool = StackPool(httpx.create_ssl_context())  # type: ignore[assignment]
    return transport
