"""The shared remote cache (SPEC.md §7): backends, layout, settings and the cache protocol.

``open_remote`` gives the RemoteCache of a run, or None when no remote is configured or it is off.
``push_file`` / ``fetch_file`` let other features keep a small file (the spend ledger, ...) in
the remote, under ``v1/files/``, with the same credentials, mode and breaker.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from starbuild.store.remote.settings import RemoteSettings, remote_settings

if TYPE_CHECKING:
    from starbuild.config.project import Project
    from starbuild.store.remote.cache import RemoteCache

__all__ = ["RemoteSettings", "fetch_file", "holder_name", "open_backend", "open_remote", "push_file",
           "remote_settings"]


def holder_name() -> str:
    """Who holds a lease, for teammates' messages: user@host."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "user"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def open_backend(settings: RemoteSettings, env: dict[str, str]):
    """The backend for a URL: ``s3://`` on obstore, ``file://`` on the file system."""
    parts = urlsplit(settings.url)
    if parts.scheme == "file":
        from starbuild.store.remote.backend import FileBackend

        return FileBackend(Path(unquote(parts.path)), settings.url)
    from starbuild.store.remote.s3 import S3Backend

    return S3Backend(settings.url, settings.endpoint, env)


def open_remote(project: "Project", env: dict[str, str] | None = None, *,
                require: bool = False) -> "RemoteCache | None":
    """The remote cache of a run of this project, or None (not configured, or mode off)."""
    from starbuild.store.remote.cache import RemoteCache

    env = dict(os.environ) if env is None else env
    settings = remote_settings(project.config.cache.remote, env, project.root)
    if settings is None:
        return None
    return RemoteCache(open_backend(settings, env), settings, require=require, holder=holder_name())


def push_file(project: "Project", name: str, data: bytes, env: dict[str, str] | None = None) -> bool:
    """Keep a small file at ``v1/files/NAME`` in the remote; False when none, read-only, or failing."""

    async def go() -> bool:
        remote = open_remote(project, env)
        if remote is None:
            return False
        try:
            return await remote.put_file(name, data)
        finally:
            await remote.close()

    return asyncio.run(go())


def fetch_file(project: "Project", name: str, env: dict[str, str] | None = None) -> bytes | None:
    """A small file kept with ``push_file``, or None."""

    async def go() -> bytes | None:
        remote = open_remote(project, env)
        if remote is None:
            return None
        try:
            return await remote.get_file(name)
        finally:
            await remote.close()

    return asyncio.run(go())
