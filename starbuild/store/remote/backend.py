"""The small interface every remote cache backend implements, and the shared-folder backend.

A backend stores opaque objects under slash-separated keys. It needs only: read (with a version
tag), create-only write, compare-and-swap on a tag, overwrite, delete and list. Every failure is
raised as RemoteCacheError by the backend that owns the dependency; a missing object is None,
never an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starbuild.errors import RemoteCacheError
from starbuild.store.objects import copy_hashing


@dataclass(frozen=True)
class Blob:
    """An object's bytes and the tag that names this version of it (for compare-and-swap)."""

    data: bytes
    tag: str | None


@dataclass(frozen=True)
class Written:
    """A write that happened, and the tag of the version it made."""

    tag: str | None


class Backend(Protocol):
    """What the remote cache needs of a store."""

    url: str

    async def get(self, key: str) -> Blob | None: ...

    async def exists(self, key: str) -> bool: ...

    async def download(self, key: str, dest: Path) -> tuple[bool, str | None]:
        """Stream an object into a file: (found, its tag); large images never sit in memory whole."""

    async def create(self, key: str, data: bytes) -> Written | None:
        """Write only if nothing is there; None when something already is."""

    async def replace(self, key: str, data: bytes, tag: str) -> Written | None:
        """Write only if the object is still the version ``tag``; None when it changed."""

    async def overwrite(self, key: str, data: bytes) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def list(self, prefix: str) -> list[str]: ...

    async def close(self) -> None: ...


def _tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileBackend:
    """A shared folder (``file:///mnt/share/starbuild``): create-only by hard link, swaps under a lock file."""

    LOCK_STALE = 10.0  # seconds after which a swap lock left by a dead process is broken

    def __init__(self, root: Path, url: str):
        self.root = root
        self.url = url

    def _path(self, key: str) -> Path:
        return self.root / key

    async def get(self, key: str) -> Blob | None:
        return await asyncio.to_thread(self._get, key)

    def _get(self, key: str) -> Blob | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RemoteCacheError(f"remote cache {self.url}: cannot read {key}: {exc.strerror or exc}") from None
        return Blob(data, _tag(data))

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def download(self, key: str, dest: Path) -> tuple[bool, str | None]:
        return await asyncio.to_thread(self._download, key, dest)

    def _download(self, key: str, dest: Path) -> tuple[bool, str | None]:
        try:
            digest = copy_hashing(self._path(key), dest)
        except FileNotFoundError:
            dest.unlink(missing_ok=True)
            return False, None
        except OSError as exc:
            dest.unlink(missing_ok=True)
            raise RemoteCacheError(f"remote cache {self.url}: cannot read {key}: {exc.strerror or exc}") from None
        return True, digest

    async def create(self, key: str, data: bytes) -> Written | None:
        return await asyncio.to_thread(self._create, key, data)

    def _create(self, key: str, data: bytes) -> Written | None:
        dest = self._path(key)
        tmp = self._temp(dest, data)
        try:
            os.link(tmp, dest)  # atomic and exclusive, also on network file systems
            return Written(_tag(data))
        except FileExistsError:
            return None
        except OSError as exc:
            raise RemoteCacheError(f"remote cache {self.url}: cannot write {key}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _temp(self, dest: Path, data: bytes) -> Path:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return tmp
        except OSError as exc:
            raise RemoteCacheError(f"remote cache {self.url}: cannot write {dest.name}: {exc.strerror or exc}") from None

    async def overwrite(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._overwrite, key, data)

    def _overwrite(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        tmp = self._temp(dest, data)
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise RemoteCacheError(f"remote cache {self.url}: cannot write {key}: {exc.strerror or exc}") from None

    async def replace(self, key: str, data: bytes, tag: str) -> Written | None:
        return await asyncio.to_thread(self._replace, key, data, tag)

    def _replace(self, key: str, data: bytes, tag: str) -> Written | None:
        lock = self._path(key).with_name(self._path(key).name + ".swap")
        if not self._lock(lock):
            return None
        try:
            current = self._get(key)
            if current is None or current.tag != tag:
                return None
            self._overwrite(key, data)
            return Written(_tag(data))
        finally:
            lock.unlink(missing_ok=True)

    def _lock(self, lock: Path) -> bool:
        for _ in range(2):
            try:
                os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                return True
            except FileExistsError:
                try:
                    if time.time() - lock.stat().st_mtime > self.LOCK_STALE:
                        lock.unlink(missing_ok=True)
                        continue
                except OSError:
                    continue
                return False
            except OSError as exc:
                raise RemoteCacheError(f"remote cache {self.url}: cannot lock {lock.name}: {exc.strerror or exc}") from None
        return False

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> None:
        path = self._path(key)
        lock = path.with_name(path.name + ".swap")
        locked = False
        for _ in range(50):  # not in the middle of a swap, which could write it back
            locked = self._lock(lock)
            if locked:
                break
            time.sleep(0.01)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise RemoteCacheError(f"remote cache {self.url}: cannot delete {key}: {exc.strerror or exc}") from None
        finally:
            if locked:
                lock.unlink(missing_ok=True)

    async def list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        out = []
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                if not (name.startswith(".") or name.endswith(".swap")):
                    out.append(os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/"))
        return sorted(out)

    async def close(self) -> None:
        return None
