"""The environment's network settings: HTTP(S)_PROXY, NO_PROXY and SSL_CERT_FILE are honoured."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import certifi
import pytest

from conftest import api_build, matrix_config
from starbuild.api.pool import network_transport
from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread


class ForwardProxy:
    """A tiny HTTP forward proxy on 127.0.0.1 that records every URL it was asked for."""

    def __init__(self):
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                proxy.seen.append(self.path)
                target = urlsplit(self.path)  # absolute-form: the proxy is asked for a full URL
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.request(self.command, path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ForwardProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def clean_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_builds_go_through_the_proxy_the_environment_names(project, clean_proxy_env):
    project.config(matrix_config(2))
    em = Emulator(EmulatorConfig(render="plain"))
    with serve_in_thread(em) as url, ForwardProxy() as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        report = api_build(project, em, base_url=url)
    assert report.exit_code == 0, [r.error for r in report.results]
    assert len(em.ledger) == 2
    submits = [u for u in proxy.seen if u.endswith("/v1/images/generations")]
    assert len(submits) == 2 and all(u.startswith(url) for u in submits)
    assert any("/cdn/" in u for u in proxy.seen)  # result downloads too


def test_no_proxy_sends_those_hosts_direct(project, clean_proxy_env):
    project.config(matrix_config(1))
    em = Emulator(EmulatorConfig(render="plain"))
    with serve_in_thread(em) as url, ForwardProxy() as proxy:
        clean_proxy_env.setenv("http_proxy", proxy.url)
        clean_proxy_env.setenv("no_proxy", "localhost,127.0.0.1")
        report = api_build(project, em, base_url=url)
    assert report.exit_code == 0 and len(em.ledger) == 1
    assert proxy.seen == []


def test_ssl_cert_file_is_the_trust_store(tmp_path, clean_proxy_env):
    bundle = certifi.contents()
    first = bundle[bundle.index("-----BEGIN CERTIFICATE-----"):bundle.index("-----END CERTIFICATE-----") + 25]
    (tmp_path / "corp-ca.pem").write_text(first + "\n")
    clean_proxy_env.setenv("SSL_CERT_FILE", str(tmp_path / "corp-ca.pem"))
    clean_proxy_env.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    transport = network_transport()
    context = transport._direct.ssl_context()
    assert len(context.get_ca_certs()) == 1
    # Proxied requests trust exactly the same CA.
    assert transport.via("http://proxy.invalid:3128")._pool._ssl_context is context
