"""The API client's transport: a pool of HTTP/1.1 connections whose cost per request does not grow
with the requests in flight, and the environment's proxies.

Idle connections wait in a stack per origin: a request pops one (checking only that one), a
finished answer pushes its connection back. One request per connection at a time. The wire itself
is starbuild's own (``http1``), not httpcore's: see that module for why and for what it speaks.
"""

from __future__ import annotations

import ssl
import time

import httpx

from starbuild.api.http1 import Connection

MAX_IDLE = 64
# Under the 5 s keep-alive of common servers (uvicorn's, so the emulator's): reusing a connection
# the server is closing at that moment would lose a submission's answer (an unknown outcome).
KEEPALIVE_EXPIRY = 4.0
_PORTS = {"http": 80, "https": 443}


class StackPool(httpx.AsyncBaseTransport):
    """httpx's transport for direct requests: the pool and starbuild's HTTP/1.1 connections."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None):
        self._ssl_context = ssl_context
        self._idle: dict[tuple, list[Connection]] = {}
        self._busy: set[Connection] = set()

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context, made at the first https request (loading a CA bundle takes milliseconds)."""
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context(trust_env=True)
        return self._ssl_context

    def _checkout(self, origin: tuple) -> tuple[Connection | None, list[Connection]]:
        stack = self._idle.get(origin)
        stale = []
        while stack:
            conn = stack.pop()
            if conn.is_available() and not conn.has_expired():
                return conn, stale
            stale.append(conn)
        return None, stale

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in _PORTS:
            raise httpx.UnsupportedProtocol(f"{url.scheme!r} is not http or https", request=request)
        origin = (url.scheme, url.raw_host.decode("ascii"), url.port or _PORTS[url.scheme])
        conn, stale = self._checkout(origin)
        for old in stale:
            old.close()
        if conn is None:
            conn = await Connection.open(origin, self.ssl_context() if url.scheme == "https" else None,
                                         request, KEEPALIVE_EXPIRY)
        self._busy.add(conn)
        try:
            return await conn.send(request, self._give_back)
        except BaseException:
            self._busy.discard(conn)
            conn.close()
            raise

    def _give_back(self, conn: Connection, reusable: bool) -> None:
        self._busy.discard(conn)
        if not reusable:
            conn.close()
            return
        conn.idle_since(time.monotonic())
        stack = self._idle.setdefault(conn.origin, [])
        if stack and stack[0].has_expired():  # the longest idle one: swept here, one per answer
            stack.pop(0).close()
        if len(stack) < MAX_IDLE:
            stack.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        conns = [c for stack in self._idle.values() for c in stack] + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        for conn in conns:
            conn.close()


class ProxyRouter(httpx.AsyncBaseTransport):
    """Sends each request direct or through the proxy the environment names for it.

    HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY are read as urllib reads them (any case),
    once, when the client is made.
    """

    def __init__(self, direct: StackPool, proxies: dict[str, str]):
        self._direct = direct
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
        return await self.via(proxy).handle_async_request(request)

    def via(self, proxy: str) -> httpx.AsyncHTTPTransport:
        """httpx's own transport through ``proxy`` (made once), with the direct requests' TLS context."""
        transport = self._via.get(proxy)
        if transport is None:
            transport = self._via[proxy] = httpx.AsyncHTTPTransport(proxy=proxy, trust_env=False,
                                                                     verify=self._direct.ssl_context())
        return transport

    async def aclose(self) -> None:
        for transport in [self._direct, *self._via.values()]:
            await transport.aclose()


def network_transport() -> httpx.AsyncBaseTransport:
    """A StackPool, honouring the environment like other HTTP tools do.

    TLS is verified against SSL_CERT_FILE / SSL_CERT_DIR when set (a corporate CA), else the
    bundled roots; requests go through HTTPS_PROXY / HTTP_PROXY unless NO_PROXY exempts the host.
    """
    import urllib.request

    transport = StackPool()
    proxies = urllib.request.getproxies_environment()
    if not any(k != "no" for k in proxies):
        return transport
    return ProxyRouter(transport, proxies)
