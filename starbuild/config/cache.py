"""The ``cache`` section of starbuild.yaml: the shared remote cache (SPEC.md §7).

Only where the cache is and how to use it; credentials come from the standard AWS chain and are
refused here, so nothing secret is ever written into a config that is committed.
"""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MODES = ("auto", "read-write", "read-only", "off")


class _Strict(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


def is_loopback(host: str | None) -> bool:
    """Whether a host name is this machine (plain http is allowed only there)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RemoteConfig(_Strict):
    """Where the team's shared cache lives and how this build may use it."""

    url: str = Field(description="s3://BUCKET/PREFIX on any S3-compatible store, or file:///PATH for a shared folder")
    endpoint: str | None = Field(None, description="S3 endpoint for R2, MinIO, B2, ...; AWS_ENDPOINT_URL works too")
    mode: Literal["auto", "read-write", "read-only", "off"] = Field(
        "auto", description="auto: read-only when CI is set on a branch other than main/master; "
                            "env STARBUILD_REMOTE_CACHE overrides")
    namespace: str = Field("main", pattern=NAMESPACE_PATTERN,
                           description="where this build writes results; env STARBUILD_CACHE_NAMESPACE overrides")
    read_namespaces: list[str] = Field(default_factory=list, description="namespaces also read from")
    lease_wait: float = Field(600, ge=0, le=86400,
                              description="seconds to wait for a teammate's image that is being made")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("s3", "file"):
            raise ValueError(f"{v!r} is not a remote cache URL; use s3://BUCKET/PREFIX or file:///PATH")
        if parts.username or parts.password or "@" in parts.netloc:
            raise ValueError("credentials do not belong in the config; they come from the standard AWS "
                             "variables or profile")
        if parts.query or parts.fragment:
            raise ValueError(f"{v!r}: a remote cache URL takes no query or fragment")
        if parts.scheme == "s3" and not parts.netloc:
            raise ValueError(f"{v!r} names no bucket; use s3://BUCKET/PREFIX")
        if parts.scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path.startswith("/")):
            raise ValueError(f"{v!r}: use an absolute path, as in file:///mnt/share/starbuild")
        if ".." in parts.path.split("/"):
            raise ValueError(f"{v!r}: '..' is not allowed in the path")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return check_endpoint(v)

    @field_validator("read_namespaces")
    @classmethod
    def _namespaces(cls, v: list[str]) -> list[str]:
        import re

        for ns in v:
            if not isinstance(ns, str) or not re.match(NAMESPACE_PATTERN, ns):
                raise ValueError(f"{ns!r} is not a namespace: letters, digits, '.', '_' and '-'")
        return v


def check_endpoint(v: str) -> str:
    """An S3 endpoint: https, or http on a loopback host; no credentials in it."""
    parts = urlsplit(v)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{v!r} is not an endpoint URL; use https://HOST")
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the endpoint; they come from the standard AWS chain")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{v!r}: use https (plain http only on a loopback host)")
    return v.rstrip("/")


class Cache(_Strict):
    """Caches beyond this machine."""

    remote: RemoteConfig | None = Field(None, description="the shared remote cache (teams and CI)")
