"""The journal: tasks submitted and results stored, kept in diskcache so a killed build resumes.

Keyed by spec_hash. A record moves ``submitting`` → ``submitted`` (task id known) → ``stored``
(files in the object store). Stored records stay, so a spec that comes back later is served from
the store instead of paid again; ``published`` marks those a version has published (until then
gc keeps them: they are paid images nobody has yet). A write that fails is a StoreError. In-flight and stored records live apart, so looking for
unfinished tasks never reads the (possibly large) stored history. No result URL and no key is
ever written here.

Writes made during one turn of the event loop share one transaction per database, committed at
the end of that turn (a build's writes came one commit each, each blocking the loop on the
disk). No crash state is added by it: a run killed before the commit is in the state of a run
killed just before those writes, and nothing leaves the process that depends on them before the
commit. ``intend`` commits at once, with whatever is pending, since the submission it announces
is sent right after it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import asyncio
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from starbuild.errors import StoreError

log = logging.getLogger("starbuild.journal")

SUBMITTING = "submitting"
SUBMITTED = "submitted"
STORED = "stored"


class Journal:
    """A small durable map spec_hash → record."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._open: dict[int, Any] = {}  # id(cache) -> its transaction of this turn of the loop
        self._failure: StoreError | None = None  # a deferred commit that failed: every later write says so
        self._after: list[Callable[[], None]] = []  # calls waiting for this turn's commit
        self.commits = 0
        with self._writing():
            directory = _usable_dir(directory)
            self._inflight = _open_cache(directory / "inflight")
            self._stored = _open_cache(directory / "stored")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write that fails (disk full, read-only, a broken database) is a StoreError, never a crash."""
        if self._failure is not None:
            raise self._failure
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:  # sqlite3, OSError and diskcache's own errors, alike for the caller
            raise StoreError(f"cannot write the journal in {self.directory}: {exc or type(exc).__name__}; "
                             "free some disk space or make the folder writable") from None

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._inflight.close()
            self._stored.close()

    def _begin(self, cache) -> None:
        """Join this turn's transaction on ``cache``; outside an event loop every write commits by itself."""
        if id(cache) in self._open:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        txn = cache.transact()
        txn.__enter__()
        if not self._open:
            loop.call_soon(self._commit_later)
        self._open[id(cache)] = txn

    def commit(self) -> None:
        """Commit the pending writes (at the end of the turn, or now); StoreError when they fail."""
        txns, self._open = self._open, {}
        after, self._after = self._after, []
        try:
            with self._writing():
                # Stored results first: a crash between the two commits then leaves a task both stored
                # and in flight (harmless), never neither (which would submit it again).
                for cache in (self._stored, self._inflight):
                    txn = txns.get(id(cache))
                    if txn is not None:
                        self.commits += 1
                        txn.__exit__(None, None, None)
        finally:  # a failed commit is reported on its own; what waited for it is still said
            for fn in after:
                fn()

    def then(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once this turn's writes are committed (at once when none are pending): what
        the build tells the user about a task is never ahead of what a resumed build would know."""
        if self._open:
            self._after.append(fn)
        else:
            fn()

    def _commit_later(self) -> None:
        """The end-of-turn commit: a failure is kept and raised by the next write (never lost in the loop)."""
        try:
            self.commit()
        except StoreError as exc:
            self._failure = exc
            log.warning("%s", exc)

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
        """Before a submission is sent: if we die now, its outcome is unknown. Committed at once."""
        with self._writing():
            self._begin(self._inflight)
            self._inflight.set(spec_hash, {"state": SUBMITTING, "name": name, "request": request,
                                           "since": time.time()})
        self.commit()

    def submitted(self, spec_hash: str, name: str, request: dict[str, Any], task_id: str,
                  credits: float | None) -> None:
        with self._writing():
            self._begin(self._inflight)
            self._inflight.set(spec_hash, {"state": SUBMITTED, "name": name, "request": request,
                                           "task_id": task_id, "credits": credits, "since": time.time()})

    def stored(self, spec_hash: str, record: dict[str, Any]) -> None:
        # Written before the in-flight record is dropped, so a crash between leaves both (harmless).
        with self._writing():
            self._begin(self._stored)
            self._begin(self._inflight)
            self._stored.set(spec_hash, {**record, "state": STORED, "since": time.time()})
            self._inflight.delete(spec_hash)

    def forget(self, spec_hash: str) -> None:
        """Drop the in-flight record (the task failed, was refused, or is gone)."""
        with self._writing():
            self._begin(self._inflight)
            self._inflight.delete(spec_hash)

    def forget_stored(self, spec_hash: str) -> None:
        with self._writing():
            self._begin(self._stored)
            self._stored.delete(spec_hash)

    def mark_published(self, spec_hashes: set[str]) -> None:
        """These stored results are now in a version: from here on gc may drop them when no version
        or lockfile needs them. Until then they are paid images nobody has, and gc keeps them."""
        with self._writing():
            self._begin(self._stored)
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
