"""A real S3-compatible server for the remote cache tests: moto's server mode on a free loopback port.

The server runs once per test session; every test gets a bucket of its own and the standard AWS
variables pointing at it. No client library is mocked: builds talk S3 over HTTP.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest

AWS = {"AWS_ACCESS_KEY_ID": "test-access-key", "AWS_SECRET_ACCESS_KEY": "test-secret-key", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto S3 server for the session: its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Bucket:
    """A bucket of the test's own on the S3 server, seen through boto3 (for inspection and damage)."""

    endpoint: str
    name: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}/team"

    def client(self):
        import boto3.session

        # A session of its own, with the test's keys: the default one would read AWS_PROFILE.
        session = boto3.session.Session(aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
                                        region_name=AWS["AWS_REGION"])
        return session.client("s3", endpoint_url=self.endpoint)

    def keys(self, prefix: str = "team/") -> list[str]:
        out = self.client().list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for o in out.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.name, Key=key)["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.name, Key=key, Body=data)

    def config(self, extra: str = "") -> str:
        """The cache section of a starbuild.yaml for this bucket."""
        return f"cache:\n  remote:\n    url: {self.url}\n    endpoint: {self.endpoint}\n{extra}"


@pytest.fixture
def bucket(moto_endpoint, monkeypatch) -> Bucket:
    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "CI", "STARBUILD_REMOTE_CACHE",
              "STARBUILD_CACHE_NAMESPACE", "GITHUB_HEAD_REF", "GITHUB_REF_NAME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", os.environ.get("HOME", "/nonexistent"))
    b = Bucket(moto_endpoint, f"team-{uuid.uuid4().hex[:12]}")
    b.client().create_bucket(Bucket=b.name)
    return b
