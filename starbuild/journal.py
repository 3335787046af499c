"""The journal: tasks submitted and results stored, kept in diskcache so a killed build resumes.

Keyed by spec_hash. A record moves ``submitting`` → ``submitted`` (task id known) → ``stored``
(files in the object store). Stored records stay, so a spec that comes back later is served from
the store instead of paid again. No result URL and no key is ever written here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

SUBMITTING = "submitting"
SUBMITTED = "submitted"
STORED = "stored"


class Journal:
    """A small durable map spec_hash → record."""

    def __init__(self, directory: Path):
        import diskcache

        directory.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(str(directory), eviction_policy="none", size_limit=2**40)

    def close(self) -> None:
        self._cache.close()

    def get(self, spec_hash: str) -> dict[str, Any] | None:
        try:
            rec = self._cache.get(spec_hash)
        except Exception:  # a corrupt entry is a miss, never a crash
            return None
        return rec if isinstance(rec, dict) else None

    def _put(self, spec_hash: str, record: dict[str, Any]) -> None:
        self._cache.set(spec_hash, record)

    def intend(self, spec_hash: str, name: str, request: dict[str, Any]) -> None:
        """Before a submission is sent: if we die now, its outcome is unknown."""
        self._put(spec_hash, {"state": SUBMITTING, "name": name, "request": request, "since": time.time()})

    def submitted(self, spec_hash: str, name: str, request: dict[str, Any], task_id: str,
                  credits: float | None) -> None:
        self._put(spec_hash, {"state": SUBMITTED, "name": name, "request": request, "task_id": task_id,
                              "credits": credits, "since": time.time()})

    def stored(self, spec_hash: str, record: dict[str, Any]) -> None:
        self._put(spec_hash, {**record, "state": STORED, "since": time.time()})

    def forget(self, spec_hash: str) -> None:
        self._cache.delete(spec_hash)

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key in list(self._cache.iterkeys()):
            rec = self.get(key)
            if rec is not None:
                yield key, rec
