"""starbuild's own HTTP/1.1 wire under the API client, against servers that answer byte by byte as
scripted: framing (lengths, chunks, the end of the connection), interim answers, broken and hostile
answers, keep-alive and its end, header injection, content coding and TLS."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import socket
import ssl
import threading

import httpx
import pytest

from starbuild.api.client import RetryPolicy, StarMagicClient
from starbuild.api.pool import StackPool, network_transport
from starbuild.errors import NotSentError, TransientApiError, UnknownOutcomeError

TASK = b'{"id": "task-unified-1757156493-abcdefgh", "status": "pending", "progress": 0}'


class Scripted:
    """A server on 127.0.0.1 answering each request with ``answer(request_number, head)``: bytes
    to send, or None to hang up without a word. Keeps every connection open until told otherwise."""

    def __init__(self, answer, *, close_after: bool = False, tls: ssl.SSLContext | None = None):
        self.answer, self.close_after, self.tls = answer, close_after, tls
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.requests: list[bytes] = []

    def __enter__(self) -> "Scripted":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                conn.close()
                return
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                self.requests.append(head)
                reply = self.answer(len(self.requests), head)
                if reply is None:
                    return
                conn.sendall(reply)
                if self.close_after:
                    return

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"


def ok(body: bytes = TASK, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


def get_all(url: str, times: int = 1, transport=None):
    async def go():
        pool = transport or StackPool()
        async with httpx.AsyncClient(transport=pool) as client:
            answers = []
            for _ in range(times):
                resp = await client.get(url)
                answers.append((resp.status_code, resp.content))
            return answers, sum(len(s) for s in pool._idle.values())

    return asyncio.run(go())


def test_lengths_keep_the_connection_and_chunks_are_joined_with_trailers_dropped():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n")
    with Scripted(lambda n, head: chunked if n % 2 else ok(b"plain")) as server:
        answers, idle = get_all(server.url + "/x", times=4)
    assert answers == [(200, b"hello" + b"z" * 26), (200, b"plain")] * 2
    assert server.accepted == 1 and idle == 1  # one connection carried all four


def test_interim_answers_are_skipped():
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    with Scripted(lambda n, head: interim + ok(b"done")) as server:
        assert get_all(server.url)[0] == [(200, b"done")]


def test_a_body_that_ends_with_the_connection_is_read_whole_and_the_connection_not_kept():
    with Scripted(lambda n, head: b"HTTP/1.0 200 OK\r\n\r\nto the end", close_after=True) as server:
        answers, idle = get_all(server.url, times=2)
    assert answers == [(200, b"to the end")] * 2 and idle == 0 and server.accepted == 2


def test_connection_close_is_honoured():
    with Scripted(lambda n, head: ok(b"ok", b"Connection: close\r\n"), close_after=True) as server:
        answers, idle = get_all(server.url, times=3)
    assert answers == [(200, b"ok")] * 3 and idle == 0 and server.accepted == 3


def test_gzip_bodies_are_decoded():
    body = gzip.compress(b'{"a": 1}')
    with Scripted(lambda n, head: ok(body, b"Content-Encoding: gzip\r\n")) as server:
        assert get_all(server.url)[0] == [(200, b'{"a": 1}')]


@pytest.mark.parametrize("reply, match", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "after 5 of 100 body bytes"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "conflicting Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "invalid or conflicting Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "other than chunked"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", "not followed by CRLF"),
    (b"SMTP ready\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\n folded: no\r\n\r\n", "without a name"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", "larger than 64 KiB"),
    (b"HTTP/1.1 200 OK\r\nContent-", "in the middle of the answer's head"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "switched protocols"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "other than chunked"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
    (b"HTTP/1.1 100 Continue\r\n\r\n" * 20, "interim answers without end"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"X: y\r\n" * 80 + b"\r\n",
     "trailers without end"),
])
def test_broken_answers_are_protocol_errors_and_the_connection_is_dropped(reply, match):
    with Scripted(lambda n, head: reply, close_after=True) as server:
        pool = StackPool()
        with pytest.raises(httpx.RemoteProtocolError, match=match):
            get_all(server.url, transport=pool)
    assert pool._idle.get(("http", "127.0.0.1", server.port), []) == [] and pool._busy == set()


def test_a_server_that_hangs_up_on_an_idle_connection_costs_nothing():
    """Keep-alive ended by the server between requests: the next request takes a new connection."""
    def answer(n, head):
        return ok(b"one") if n == 1 else ok(b"two")

    async def go(url):
        pool = StackPool()
        async with httpx.AsyncClient(transport=pool) as client:
            assert (await client.get(url)).content == b"one"
            [conn] = pool._idle[("http", "127.0.0.1", server.port)]
            conn._reader.feed_eof()  # what the loop does when the server's FIN arrives
            assert not conn.is_available()
            assert (await client.get(url)).content == b"two"

    with Scripted(answer) as server:
        asyncio.run(go(server.url))
    assert server.accepted == 2


def test_a_submission_without_an_answer_is_an_unknown_outcome_and_is_sent_once():
    with Scripted(lambda n, head: None) as server:
        async def go():
            async with StarMagicClient(server.url, "sk-test", retry=RetryPolicy(attempts=3, base=0.01)) as client:
                with pytest.raises(UnknownOutcomeError):
                    await client.submit({"model": "gpt-image-2", "prompt": "x"})
        asyncio.run(go())
    assert len(server.requests) == 1


def test_a_task_query_whose_answer_breaks_is_retried():
    replies = {1: b"HTTP/1.1 200 OK\r\nContent-Length: 80\r\n\r\n{\"id\"", 2: ok()}
    with Scripted(lambda n, head: replies[n], close_after=True) as server:
        async def go():
            async with StarMagicClient(server.url, "sk-test", retry=RetryPolicy(attempts=3, base=0.01)) as client:
                return await client.task("task-unified-1757156493-abcdefgh")
        assert asyncio.run(go()).status == "pending"
    assert len(server.requests) == 2


def test_a_key_with_a_line_break_is_never_sent():
    with Scripted(lambda n, head: ok()) as server:
        async def go():
            async with StarMagicClient(server.url, "sk-a\r\nX-Injected: 1") as client:
                with pytest.raises(NotSentError):
                    await client.submit({"model": "gpt-image-2", "prompt": "x"})
        asyncio.run(go())
    assert server.requests == []


def test_requests_carry_host_length_and_auth():
    with Scripted(lambda n, head: ok()) as server:
        async def go():
            async with StarMagicClient(server.url, "sk-test") as client:
                await client.submit({"model": "gpt-image-2", "prompt": "x"})
        asyncio.run(go())
    [head] = server.requests
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/images/generations HTTP/1.1"
    assert f"host: 127.0.0.1:{server.port}".encode() in [line.lower() for line in lines]
    assert b"Authorization: Bearer sk-test" in lines
    assert any(line.lower().startswith(b"content-length: ") for line in lines)


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "starbuild test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def _tls_server(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_tls_with_a_trusted_certificate_keeps_its_connection(certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with Scripted(lambda n, head: ok(), tls=_tls_server(certificate)) as server:
        async def go():
            async with StarMagicClient(server.url, "sk-test", transport=network_transport()) as client:
                return [await client.task("task-unified-1757156493-abcdefgh") for _ in range(3)]
        assert [t.status for t in asyncio.run(go())] == ["pending"] * 3
    assert server.accepted == 1


def test_tls_with_an_untrusted_certificate_sends_nothing(certificate, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with Scripted(lambda n, head: ok(), tls=_tls_server(certificate)) as server:
        async def go():
            async with StarMagicClient(server.url, "sk-test", retry=RetryPolicy(attempts=1)) as client:
                with pytest.raises(TransientApiError, match="cannot reach.*CERTIFICATE_VERIFY_FAILED"):
                    await client.task("task-unified-1757156493-abcdefgh")
        asyncio.run(go())
    assert server.requests == []


def test_a_hang_up_the_event_loop_has_not_read_yet_is_seen_before_reuse():
    """The server closes an idle kept-alive connection while the loop is busy elsewhere: the next
    submission goes out on a new connection instead of into the dead one (an unknown outcome)."""
    import time

    def answer(n, head):
        return ok()

    class Closing(Scripted):
        def _serve(self, conn):
            conn.recv(65536)
            conn.sendall(ok())
            time.sleep(0.05)
            conn.close()  # keep-alive ended by the server, after the answer

    with Closing(answer) as server:
        async def go():
            async with StarMagicClient(server.url, "sk-test", retry=RetryPolicy(attempts=1)) as client:
                await client.task("task-unified-1757156493-abcdefgh")
                time.sleep(0.3)  # the loop is busy: the FIN reaches the socket, not the stream
                return await client.submit({"model": "gpt-image-2", "prompt": "x"})
        assert asyncio.run(go()).status == "pending"
    assert server.accepted == 2


def test_an_answer_that_does_not_decode_is_an_unknown_outcome_for_a_submission_and_retried_for_a_query():
    broken = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"
    with Scripted(lambda n, head: broken if n < 3 else ok()) as server:
        async def go():
            async with StarMagicClient(server.url, "sk-test", retry=RetryPolicy(attempts=3, base=0.01)) as client:
                with pytest.raises(UnknownOutcomeError, match="could not be read"):
                    await client.submit({"model": "gpt-image-2", "prompt": "x"})
                return await client.task("task-unified-1757156493-abcdefgh")  # answer 2 broken, 3 fine
        assert asyncio.run(go()).status == "pending"
    assert len(server.requests) == 3


@pytest.mark.parametrize("extra", [b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                                   b"Keep-Alive: timeout=1\r\nContent-Length: 5\r\n"])
def test_suspect_framing_or_a_short_keep_alive_is_not_reused(extra):
    body = b"5\r\nhello\r\n0\r\n\r\n" if b"chunked" in extra else b"hello"
    with Scripted(lambda n, head: b"HTTP/1.1 200 OK\r\n" + extra + b"\r\n" + body) as server:
        answers, _ = get_all(server.url, times=2)
    assert answers == [(200, b"hello")] * 2 and server.accepted == 2
