"""``provider.callback`` (SPEC.md §11): where the API posts task results, and where starbuild listens."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) as (host, port); ValueError when it is not one."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (such as 127.0.0.1:8765)")
    return host, int(port)


class Callback(BaseModel):
    """Callbacks instead of frequent polling: the API posts each task's result to ``url``/TOKEN."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    url: str | None = Field(None, description="public https address that forwards to listen (http only for a "
                                              "loopback host); default: the listen address itself, if loopback")
    listen: str = Field(description="host:port where starbuild receives callbacks, e.g. 127.0.0.1:8765 "
                                    "(port 0: any free port, with url left out)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        split_listen(v)
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            parts = urlsplit(v)
            host = parts.hostname or ""
        except ValueError:
            raise ValueError(f"{v!r} is not a URL") from None
        if not host or parts.query or parts.fragment:
            raise ValueError(f"{v!r} must be an https URL with a host and no query")
        if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host)):
            return v.rstrip("/")
        raise ValueError(f"{v!r} must use https (http only for a loopback host such as 127.0.0.1)")

    @model_validator(mode="after")
    def _url_or_loopback(self) -> "Callback":
        if self.url is None and not is_loopback_host(split_listen(self.listen)[0]):
            raise ValueError("url is required unless listen is a loopback address: the API needs a public "
                             "https address that forwards to listen")
        return self
