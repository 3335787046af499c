"""One build per project at a time: an OS file lock, with the holder's pid beside it."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from starbuild.errors import LockedError


@contextmanager
def project_lock(cache: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold the project's build lock; LockedError naming the holder when it is taken."""
    import filelock

    cache.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(cache / "build.lock"))
    holder = cache / "build.pid"
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
        holder.write_text(f"{os.getpid()}\n")
        yield
    finally:
        try:
            holder.unlink()
        except OSError:
            pass
        lock.release()
