"""The journal: tasks submitted and results stored, kept in diskcache so a killed build resumes.

Keyed by spec_hash. A record moves ``submitting`` → ``submitted`` (task id known) → ``stored``
(files in the object store). Stored records stay, so a spec that comes back later is served from
the store instead of paid again; ``published`` marks those a version has published (until then
gc keeps them: they are paid images nobody has yet). A write that fails is a StoreError. In-flight and stored records live apart, so looking for
unfinished tasks never reads the (possibly large) stored history. No result URL and no key is
ever written here.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from starbuild.errors import StoreError

log = logging.getLogger("starbuild.journal")

SUBMITTING = "submitting"
SUBMITTED = "submitted"
STORED = "stored"


class Journal:
    """A small durable map spec_hash → record."""

    def __init__(self, directory: Path):
        self.directory = directory
        with self._writing():
            directory = _usable_dir(directory)
            self._inflight = _open_cache(directory / "inflight")
            self._stored = _open_cache(directory / "stored")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write that fails (disk full, read-only, a broken database) is a StoreError, never a crash."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:  # sqlite3, OSError and diskcache's own errors, alike for the caller
            raise StoreError(f"cannot write the journal in {self.directory}: {exc or type(exc).__name__}; "
                             "free some disk space or make the folder writable") from None

    def close(self) -> None:
        self._inflight.close()
        self._stored.close()

    @staticmethod
    def _read(cache, key: str) -> dict[str, Any] | None:
        try:
            rec = cache.get(key)
        except Exception:  # a corrupt entry is a miss, never a crash
            return None
        return rec if isinstance(rec, dict) else None

    def get(self, spec_hash: str) -> dict[str, Any] | None:
        """The in-flight record of a spec if there is one, else its stored result."""
        return self._read(self._inflight, spec_hash) or self._read(self._stored, spec_hash)

    def intend(self, spec_hash: str, name: str, request: dict[str, Any]) -> None:
        """Before a submission is sent: if we die now, its outcome is unknown."""
        with self._writing():
            self._inflight.set(spec_hash, {"state": SUBMITTING, "name": name, "request": request,
                                           "since": time.time()})

    def submitted(self, spec_hash: str, name: str, request: dict[str, Any], task_id: str,
                  credits: float | None) -> None:
        with self._writing():
            self._inflight.set(spec_hash, {"state": SUBMITTED, "name": name, "request": request,
                                           "task_id": task_id, "credits": credits, "since": time.time()})

    def stored(self, spec_hash: str, record: dict[str, Any]) -> None:
        # Written before the in-flight record is dropped, so a crash between leaves both (harmless).
        with self._writing():
            self._stored.set(spec_hash, {**record, "state": STORED, "since": time.time()})
            self._inflight.delete(spec_hash)

    def forget(self, spec_hash: str) -> None:
        """Drop the in-flight record (the task failed, was refused, or is gone)."""
        with self._writing():
            self._inflight.delete(spec_hash)

    def forget_stored(self, spec_hash: str) -> None:
        with self._writing():
            self._stored.delete(spec_hash)

    def mark_published(self, spec_hashes: set[str]) -> None:
        """These stored results are now in a version: from here on gc may drop them when no version
        or lockfile needs them. Until then they are paid images nobody has, and gc keeps them."""
        with self._writing():
            for h in spec_hashes:
                rec = self._read(self._stored, h)
                if rec is not None and not rec.get("published"):
                    self._stored.set(h, {**rec, "published": True})

    def inflight(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key in list(self._inflight.iterkeys()):
            rec = self._read(self._inflight, key)
            if rec is not None:
                yield key, rec

    def stored_items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key in list(self._stored.iterkeys()):
            rec = self._read(self._stored, key)
            if rec is not None:
                yield key, rec


def _set_aside(path: Path, why: object) -> None:
    """Move an unreadable journal file or folder out of the way, keeping it for inspection."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    log.warning("warning: the journal at %s could not be read (%s); it was set aside as %s and a new one "
                "started. Tasks it listed as in flight will not be resumed.", path, why, aside.name)


def _usable_dir(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:  # a file where the folder should be
        _set_aside(directory, exc.strerror)
        directory.mkdir(parents=True)
    return directory


def _open_cache(path: Path):
    import diskcache

    opts = dict(eviction_policy="none", size_limit=2**40)
    try:
        return diskcache.Cache(str(path), **opts)
    except (sqlite3.DatabaseError, OSError) as exc:
        _set_aside(path, exc)
        return diskcache.Cache(str(path), **opts)
