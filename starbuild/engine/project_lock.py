"""One build per project at a time: an OS file lock in the project, with the holder's pid beside it.

The lock lives in the project's own ``.starbuild/`` folder, not in the cache: two builds of one
project with different ``STARBUILD_CACHE_DIR`` still exclude each other. A moved cache is locked
too (after the project, always in that order), since builds of other projects may share it.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from starbuild.errors import LockedError, StoreError

LOCK_DIR = ".starbuild"


@contextmanager
def project_lock(root: Path, cache: Path | None = None, *, wait: bool = False) -> Iterator[None]:
    """Hold the build lock of the project at ``root`` (and of its cache); LockedError names the holder."""
    folders = [root / LOCK_DIR]
    if cache is not None and cache.resolve() != folders[0].resolve():
        folders.append(cache)
    with ExitStack() as stack:
        for folder in folders:
            stack.enter_context(_locked(folder, wait))
        yield


@contextmanager
def _locked(folder: Path, wait: bool) -> Iterator[None]:
    import filelock

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {folder} for the build lock: {exc}") from None
    lock = filelock.FileLock(str(folder / "build.lock"))
    holder = folder / "build.pid"
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except filelock.Timeout:
        try:
            who = holder.read_text().strip()
        except OSError:
            who = "unknown"
        raise LockedError(f"another starbuild run (pid {who}) is building this project; "
                          "wait for it, or pass --wait") from None
    try:
        try:
            holder.write_text(f"{os.getpid()}\n")
        except OSError:
            pass  # the pid is a courtesy; the lock itself is held
        yield
    finally:
        try:
            holder.unlink()
        except OSError:
            pass
        lock.release()
