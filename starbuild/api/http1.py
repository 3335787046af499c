"""HTTP/1.1 over asyncio streams: one connection, one request at a time, under the API client's pool.

httpx's own stack below its client (httpcore, h11 and anyio) cost about 290 µs of CPU per request,
most of a build's client CPU at three requests per image. This module speaks the part of HTTP/1.1
the API, its file host and its CDN use, directly on asyncio's streams:

- requests with their body in memory (JSON, and an upload of up to 64 MB), sent with a
  Content-Length; header names, values and the target are checked for CR, LF and NUL first;
- answers framed by Content-Length, chunked transfer coding or the end of the connection;
  1xx interim answers are skipped; a head larger than 64 KiB or malformed is refused;
- keep-alive unless the answer or HTTP/1.0 says otherwise, and only once the body was read whole;
- TLS through asyncio with the context the pool passes;
- httpx's exceptions (ConnectError, ReadTimeout, RemoteProtocolError, ...), so that the client's
  retry policy and its unknown-outcome rule for submissions stay as they are.

Content decoding (gzip and the like), redirects and everything above the wire stay httpx's.
"""

from __future__ import annotations

import asyncio
import re
import select
import ssl
import time
from typing import AsyncIterator

import httpx

MAX_HEAD = 64 * 1024          # bytes of status line and headers
READ_SIZE = 64 * 1024
MAX_INTERIM = 16              # 1xx answers before the real one
MAX_TRAILERS = 64             # trailer lines after a chunked body
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_NO_BODY = (204, 304)


def _timeout(request: httpx.Request, kind: str) -> float | None:
    """httpx's timeout of ``kind`` (connect, read, write) for this request; None: no limit."""
    return (request.extensions.get("timeout") or {}).get(kind)


class Connection:
    """One TCP (or TLS) connection to an origin (scheme, host, port)."""

    def __init__(self, origin: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 expiry: float):
        self.origin = origin
        self._reader = reader
        self._writer = writer
        self._expiry = expiry
        self._idle_at = time.monotonic()
        self._closed = False

    @classmethod
    async def open(cls, origin: tuple[str, str, int], ssl_context: ssl.SSLContext | None,
                   request: httpx.Request, expiry: float) -> "Connection":
        """A new connection for ``request`` (its connect timeout; its failures carry it)."""
        scheme, host, port = origin
        secure = scheme == "https"
        try:
            async with asyncio.timeout(_timeout(request, "connect")):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=ssl_context if secure else None, server_hostname=host if secure else None,
                    limit=MAX_HEAD)
        except TimeoutError:  # asyncio's timeout, or the system's own (ETIMEDOUT)
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time", request=request) from None
        except (OSError, ssl.SSLError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise httpx.ConnectError(f"{host}:{port}: {why}", request=request) from None
        return cls(origin, reader, writer, expiry)

    # --- the pool's questions -----------------------------------------------------------------

    def is_closed(self) -> bool:
        return self._closed

    def _heed_keep_alive(self, headers: list[tuple[bytes, bytes]]) -> None:
        """A server that says how long it keeps an idle connection (``Keep-Alive: timeout=2``) is
        not sent a request on one older than a second less than that."""
        for name, value in headers:
            if name.lower() == b"keep-alive":
                for part in value.split(b","):
                    key, _, number = part.strip().partition(b"=")
                    if key.strip().lower() == b"timeout" and number.strip().isdigit():
                        self._expiry = min(self._expiry, max(0.0, int(number.strip()) - 1.0))

    def idle_since(self, when: float) -> None:
        self._idle_at = when

    def has_expired(self) -> bool:
        return time.monotonic() - self._idle_at > self._expiry

    def is_available(self) -> bool:
        """Fit to carry a request: open, and the server has neither hung up nor sent anything unasked.

        The socket itself is asked too: a hang-up that reached the system while the event loop was
        busy is not known to the stream yet, and a submission written into it would be lost.
        """
        if (self._closed or self._reader.at_eof() or self._writer.transport.is_closing()
                or self._reader._buffer):  # noqa: SLF001 - bytes nobody asked for mean broken framing
            return False
        sock = self._writer.get_extra_info("socket")
        if sock is None:
            return True
        try:  # poll, not select: no limit on the descriptor's number
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            return not poller.poll(0)  # an idle connection has nothing to read but a hang-up (or a stray byte)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()

    # --- one exchange -------------------------------------------------------------------------

    async def send(self, request: httpx.Request, on_done) -> httpx.Response:
        """Send ``request`` and read the answer's head; the body streams as the caller reads it.

        ``on_done(conn, reusable)`` is called once the body is read whole, closed early or failed.
        """
        read_timeout, write_timeout = _timeout(request, "read"), _timeout(request, "write")
        body = await request.aread()
        head = _request_head(request, body)
        try:
            self._writer.write(head + body if len(body) < READ_SIZE else head)
            if len(body) >= READ_SIZE:
                self._writer.write(body)
            async with asyncio.timeout(write_timeout):
                await self._writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("the request could not be written in time", request=request) from None
        except OSError as exc:
            raise httpx.WriteError(f"the connection broke while sending: {exc}", request=request) from None
        for _ in range(MAX_INTERIM + 1):
            status, reason, headers, version = await self._read_head(request, read_timeout)
            if 100 <= status < 200:
                if status == 101:
                    raise httpx.RemoteProtocolError("the server switched protocols unasked", request=request)
                continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            break
        else:
            raise httpx.RemoteProtocolError("interim answers without end", request=request)
        try:
            framing = _framing(status, request.method, headers, version)
        except ValueError as exc:
            raise httpx.RemoteProtocolError(f"malformed answer: {exc}", request=request) from None
        self._heed_keep_alive(headers)
        stream = _Body(self, request, framing, read_timeout, on_done)
        return httpx.Response(status, headers=headers, stream=stream, request=request,
                              extensions={"http_version": version, "reason_phrase": reason})

    async def _read_head(self, request: httpx.Request, timeout: float | None):
        try:
            async with asyncio.timeout(timeout):
                raw = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            what = "in the middle of the answer's head" if exc.partial else "without sending an answer"
            raise httpx.RemoteProtocolError(f"the server closed the connection {what}", request=request) from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError(f"the answer's head is larger than {MAX_HEAD // 1024} KiB",
                                            request=request) from None
        except TimeoutError:
            raise httpx.ReadTimeout("no answer in time", request=request) from None
        except OSError as exc:
            raise httpx.ReadError(f"the connection broke while reading: {exc}", request=request) from None
        try:
            return _parse_head(raw)
        except ValueError as exc:
            raise httpx.RemoteProtocolError(f"malformed answer: {exc}", request=request) from None


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    target = request.url.raw_path
    method = request.method.encode("ascii")
    lines = [method + b" " + target + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        low = name.lower()
        if low == b"content-length" or low == b"transfer-encoding":
            continue  # the body is in memory: its length is sent, never chunks
        lines.append(name + b": " + value)
    if body or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    joined = b"".join(lines)
    if b"\r" in joined or b"\n" in joined or b"\0" in joined:
        raise httpx.LocalProtocolError("a header or the target holds a line break or NUL; not sent", request=request)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _parse_head(raw: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    lines = raw[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ValueError("not an HTTP/1.x status line")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in b" \t" or name[:1] in b" \t":
            raise ValueError("a header line without a name")  # includes obsolete line folding
        headers.append((name, value.strip(b" \t")))
    return int(code), reason, headers, version


def _framing(status: int, method: str, headers: list[tuple[bytes, bytes]], version: bytes) -> tuple[str, int, bool]:
    """(kind, length, keep_alive): kind is "length", "chunked" or "eof"."""
    lengths, codings, connection = set(), [], []
    for name, value in headers:
        low = name.lower()
        if low == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif low == b"transfer-encoding":
            codings += [v.strip().lower() for v in value.split(b",")]
        elif low == b"connection":
            connection += [v.strip().lower() for v in value.split(b",")]
    keep = b"close" not in connection and (version == b"HTTP/1.1" or b"keep-alive" in connection)
    if method == "HEAD" or status in _NO_BODY:
        return "length", 0, keep
    if codings:
        if codings != [b"chunked"]:  # gzip, chunked would hand over still-coded bytes as the body
            raise ValueError("a transfer coding other than chunked")
        # With a Content-Length beside it, or from HTTP/1.0, the framing is suspect: not reused.
        return "chunked", 0, keep and not lengths and version == b"HTTP/1.1"
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise ValueError("an invalid or conflicting Content-Length")
        return "length", int(next(iter(lengths))), keep
    return "eof", 0, False


class _Body(httpx.AsyncByteStream):
    """An answer's body, read from the connection as the caller asks for it."""

    def __init__(self, conn: Connection, request: httpx.Request, framing: tuple[str, int, bool],
                 timeout: float | None, on_done):
        self._kind, self._length, self._keep = framing
        self._conn, self._request, self._timeout, self._on_done = conn, request, timeout, on_done
        self._whole = False
        self._released = False
        if self._kind == "length" and self._length == 0:
            self._finish(True)

    def _finish(self, whole: bool) -> None:
        self._whole = whole
        if not self._released:
            self._released = True
            self._on_done(self._conn, whole and self._keep)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._released:
            return
        reader = self._conn._reader  # noqa: SLF001
        try:
            if self._kind == "length":
                async for part in self._exact(reader, self._length):
                    yield part
            elif self._kind == "chunked":
                async for part in self._chunks(reader):
                    yield part
            else:
                while part := await self._read(reader.read(READ_SIZE)):
                    yield part
        except BaseException:
            self._finish(False)
            raise
        self._finish(True)

    async def _read(self, awaitable):
        try:
            async with asyncio.timeout(self._timeout):
                return await awaitable
        except TimeoutError:
            raise httpx.ReadTimeout("the answer's body stalled", request=self._request) from None
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError("the server closed the connection before the whole body was sent",
                                            request=self._request) from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError("a chunk size line is too long", request=self._request) from None
        except OSError as exc:
            raise httpx.ReadError(f"the connection broke while reading: {exc}", request=self._request) from None

    async def _exact(self, reader: asyncio.StreamReader, length: int) -> AsyncIterator[bytes]:
        left = length
        while left:
            part = await self._read(reader.read(min(left, READ_SIZE)))
            if not part:
                raise httpx.RemoteProtocolError(
                    f"the server closed the connection after {length - left} of {length} body bytes",
                    request=self._request)
            left -= len(part)
            yield part

    async def _chunks(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while True:
            line = await self._read(reader.readuntil(b"\r\n"))
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise httpx.RemoteProtocolError("a malformed chunk size", request=self._request)
            size = int(size_text, 16)
            if size == 0:
                for _ in range(MAX_TRAILERS + 1):  # trailers: read and dropped
                    if await self._read(reader.readuntil(b"\r\n")) == b"\r\n":
                        return
                raise httpx.RemoteProtocolError("trailers without end", request=self._request)
            async for part in self._exact(reader, size):
                yield part
            if await self._read(reader.readexactly(2)) != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk not followed by CRLF", request=self._request)

    async def aclose(self) -> None:
        self._finish(self._whole)
