"""The processing cache layer: derived files by (source sha256, canonical steps, processing version).

A derived file's bytes live in the object store under their own sha256, like generated images; this
index maps a derivation key to the record of what it produced, at ``<cache>/derived/ab/<key>.json``.
A record whose object has gone (gc, a wiped store) is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from starbuild.plan.spec import canonical_json, sha256_hex
from starbuild.errors import StoreError
from starbuild.safefile import in_folder
from starbuild.store.objects import ObjectStore


def derivation_key(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything a derived file depends on."""
    return sha256_hex(canonical_json(payload))


class DerivedIndex:
    """Derivation key -> record (files with sha256, sizes and formats; any extra fields)."""

    def __init__(self, cache: Path, store: ObjectStore):
        self.root = cache / "derived"
        self.store = store

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record for a key when every object it names is still stored."""
        try:
            record = json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        for f in record.get("files") or []:
            if not isinstance(f, dict) or not self.store.has(str(f.get("sha256", ""))):
                return None
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Write a record in place. A cache: a record cut short by a crash does not parse and is a
        miss, and writers of one key write the same bytes, so no temp file, rename or fsync."""
        path = self._path(key)
        data = json.dumps(record, sort_keys=True).encode()
        try:
            in_folder(path, lambda: path.write_bytes(data))
        except OSError as exc:  # a full disk, a file where the folder should be: located, never a traceback
            raise StoreError(f"cannot write {path}: {exc}") from exc

    def add_bytes(self, data: bytes) -> tuple[str, Path]:
        """Store bytes made in this process (metadata files, manifests); their sha256 and stored path."""
        sha = hashlib.sha256(data).hexdigest()
        if self.store.has(sha):
            return sha, self.store.path(sha)
        fd, tmp = tempfile.mkstemp(dir=self.store.temp_dir(), suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return sha, self.store.add(Path(tmp), sha)

    def prune(self) -> int:
        """Drop records whose objects are gone (after gc); how many were dropped."""
        dropped = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.glob("*/*.json"):
            if self.get(path.stem) is None:
                path.unlink(missing_ok=True)
                dropped += 1
        return dropped
