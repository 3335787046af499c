"""The S3 backend (AWS, R2, MinIO, B2, GCS interop) on obstore.

obstore is async, has no Python dependencies, and does create-only writes (``If-None-Match: *``)
and compare-and-swap (``If-Match``) that leases need. Credentials come only from the standard
AWS chain: the AWS_* variables, web identity and container credentials, and the instance
metadata service (obstore's own); a named profile (AWS_PROFILE or ~/.aws files) goes through
boto3's session when boto3 is installed. Every obstore error becomes RemoteCacheError here.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from starbuild.errors import ConfigError, RemoteCacheError
from starbuild.store.remote.backend import Blob, Written

TIMEOUT = timedelta(seconds=30)
TAIL = 0.25  # seconds the client's threads may still work after a failed request
CONNECT_TIMEOUT = timedelta(seconds=5)
# Few, quick retries: a failing remote must never hold a build up; the breaker does the rest.
RETRY = {"max_retries": 2, "retry_timeout": timedelta(seconds=10),
         "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1), "base": 2}}


def _short(exc: BaseException) -> str:
    """An obstore message without its multi-line debug dump."""
    text = str(exc).split("\n\nDebug source", 1)[0].strip()
    return " ".join(text.split())[:300] or type(exc).__name__


def _uses_profile(env: dict[str, str]) -> bool:
    if env.get("AWS_ACCESS_KEY_ID"):
        return False
    if env.get("AWS_PROFILE"):
        return True
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE"), env.get("AWS_CONFIG_FILE"),
             home / ".aws" / "credentials", home / ".aws" / "config"]
    return any(f and Path(f).is_file() for f in files)


def _credential_provider(env: dict[str, str]):
    if not _uses_profile(env):
        return None
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        return None  # obstore's own chain (variables, web identity, containers, instance metadata)
    session = boto3.Session(profile_name=env.get("AWS_PROFILE") or None)
    return Boto3CredentialProvider(session)


class S3Backend:
    """One bucket and prefix on an S3-compatible store."""

    def __init__(self, url: str, endpoint: str | None, env: dict[str, str]):
        self.url = url.rstrip("/")
        self._endpoint = endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        self._env = env
        self._opened = None
        self._broken: RemoteCacheError | None = None
        self._failed_at = -1e9
        if self._endpoint:
            from starbuild.config.cache import check_endpoint

            try:
                self._endpoint = check_endpoint(self._endpoint)
            except ValueError as exc:
                raise ConfigError(f"AWS_ENDPOINT_URL: {exc}") from None

    @property
    def _store(self):
        """The obstore client, made on first use: a build with nothing stale never loads it."""
        if self._opened is None and self._broken is None:
            from obstore.store import S3Store

            parts = urlsplit(self.url)
            config: dict = {"endpoint": self._endpoint} if self._endpoint else {}
            region = self._env.get("AWS_REGION") or self._env.get("AWS_DEFAULT_REGION")
            if region:
                config["region"] = region
            options = {"timeout": TIMEOUT, "connect_timeout": CONNECT_TIMEOUT,
                       "allow_http": bool(self._endpoint and self._endpoint.startswith("http://"))}
            try:
                self._opened = S3Store(parts.netloc, prefix=parts.path.strip("/") or None, config=config,
                                       client_options=options, retry_config=RETRY,
                                       credential_provider=_credential_provider(self._env))
            except Exception as exc:  # a bad profile or configuration: every call fails, like an outage
                self._broken = RemoteCacheError(f"remote cache {self.url}: {_short(exc)}")
        return self._opened

    def _fail(self, op: str, key: str, exc: BaseException) -> RemoteCacheError:
        self._failed_at = time.monotonic()
        if isinstance(exc, RemoteCacheError):
            return exc
        return RemoteCacheError(f"remote cache {self.url}: {op} {key}: {_short(exc)}")

    def _check(self) -> None:
        if self._store is None and self._broken is not None:
            raise self._broken

    async def get(self, key: str) -> Blob | None:
        import obstore

        try:
            self._check()
            result = await obstore.get_async(self._store, key)
            data = bytes(await result.bytes_async())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._fail("read", key, exc) from None
        return Blob(data, result.meta.get("e_tag"))

    async def download(self, key: str, dest: Path) -> tuple[bool, str | None]:
        import obstore

        try:
            self._check()
            result = await obstore.get_async(self._store, key)
            with open(dest, "wb") as out:
                async for chunk in result.stream(min_chunk_size=1 << 20):
                    out.write(chunk)
        except FileNotFoundError:
            dest.unlink(missing_ok=True)
            return False, None
        except Exception as exc:
            dest.unlink(missing_ok=True)
            raise self._fail("read", key, exc) from None
        return True, result.meta.get("e_tag")

    async def exists(self, key: str) -> bool:
        import obstore

        try:
            self._check()
            await obstore.head_async(self._store, key)
            return True
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._fail("look up", key, exc) from None

    async def create(self, key: str, data: bytes) -> Written | None:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            self._check()
            done = await obstore.put_async(self._store, key, data, mode="create")
            return Written(done.get("e_tag"))
        except (AlreadyExistsError, PreconditionError):
            return None
        except Exception as exc:
            raise self._fail("write", key, exc) from None

    async def replace(self, key: str, data: bytes, tag: str) -> Written | None:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            self._check()
            done = await obstore.put_async(self._store, key, data, mode={"e_tag": tag})
            return Written(done.get("e_tag"))
        except (AlreadyExistsError, PreconditionError, FileNotFoundError):
            return None
        except Exception as exc:
            raise self._fail("write", key, exc) from None

    async def overwrite(self, key: str, data: bytes) -> None:
        import obstore

        try:
            self._check()
            await obstore.put_async(self._store, key, data, mode="overwrite")
        except Exception as exc:
            raise self._fail("write", key, exc) from None

    async def delete(self, key: str) -> None:
        import obstore

        try:
            self._check()
            await obstore.delete_async(self._store, key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._fail("delete", key, exc) from None

    async def list(self, prefix: str) -> list[str]:
        import obstore

        try:
            self._check()
            chunks = await obstore.list(self._store, prefix=prefix).collect_async()
        except Exception as exc:
            raise self._fail("list", prefix, exc) from None
        return sorted(m["path"] for m in chunks)

    async def close(self) -> None:
        # Dropping the store here, not at interpreter exit, lets its connection pool shut down
        # while the runtime is still alive. A request that failed to connect leaves work in the
        # client's threads for a few milliseconds; a process that exits during it can abort, so
        # a close right after a failure waits that long.
        self._opened = None
        left = self._failed_at + TAIL - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)
