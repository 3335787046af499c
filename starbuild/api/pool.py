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


class ProxyRouter(httpx.AsyncBaseTransport):
    """Sends each request direct or through the proxy the environment names for it.

    HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY are read as urllib reads them (any case),
    once, when the client is made.
    """

    def __init__(self, direct: httpx.AsyncBaseTransport, ssl_context: ssl.SSLContext,
                 proxies: dict[str, str]):
        self._direct = direct
        self._ssl_context = ssl_context
        self._proxies = proxies
        self._via: dict[str, httpx.AsyncHTTPTransport] = {}

    def proxy_for(self, url: httpx.URL) -> str | None:
        """The proxy URL for a request URL, or None to go direct."""
        import urllib.request

        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if not proxy or urllib.request.proxy_bypass_environment(url.host, self._proxies):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        proxy = self.proxy_for(request.url)
        if proxy is None:
            return await self._direct.handle_async_request(request)
        transport = self._via.get(proxy)
        if transport is None:
            transport = self._via[proxy] = httpx.AsyncHTTPTransport(proxy=proxy, verify=self._ssl_context,
                                                                     trust_env=False)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in [self._direct, *self._via.values()]:
            await transport.aclose()


def network_transport() -> httpx.AsyncBaseTransport:
    """httpx's transport over a StackPool, honouring the environment like other HTTP tools do.

    TLS is verified against SSL_CERT_FILE / SSL_CERT_DIR when set (a corporate CA), else the
    bundled roots; requests go through HTTPS_PROXY / HTTP_PROXY unless NO_PROXY exempts the host.
    """
    import urllib.request

    context = httpx.create_ssl_context(trust_env=True)
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    transport._pool = StackPool(context)  # type: ignore[assignment]
    proxies = urllib.request.getproxies_environment()
    if not any(k != "no" for k in proxies):
        return transport
    return ProxyRouter(transport, context, proxies)
