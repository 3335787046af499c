"""RemoteCache: the shared cache's protocol over one backend, behind a circuit breaker.

Reads are verified (image bytes by sha256; result records by shape): a mismatch is a miss and is
reported, never an error. Writes are create-only; results are written after their bytes. A
failing remote is skipped for 30 s after 3 failures in a row, and every failure is a miss or a
skipped write unless ``require`` makes it fatal. Nothing here knows about plans or builds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from starbuild.errors import RemoteCacheError
from starbuild.text import printable
from starbuild.store.remote.backend import Backend
from starbuild.store.remote.layout import SHA_RE, ac_key, alt_key, cas_key, file_key, lease_key
from starbuild.store.remote.settings import RemoteSettings

FAILED = object()  # what a call that failed (or was skipped) returns where None means something else
BREAKER_FAILURES = 3
BREAKER_SECONDS = 30.0
FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif"}


@dataclass
class Stats:
    """What one run did with the remote, for its summary line."""

    hits: int = 0
    uploads: int = 0
    waits: int = 0
    errors: int = 0
    corrupt: int = 0
    races: int = 0
    skipped: int = 0  # calls not made while the breaker was open
    last_error: str | None = None
    tripped: int = 0


@dataclass(frozen=True)
class Lease:
    """A claim on a spec: who is paying for it, until when, and (once known) the task id."""

    namespace: str
    holder: str
    run: str
    expires: float
    task_id: str | None
    tag: str | None

    def live(self, now: float) -> bool:
        return now < self.expires


def _printable(value: Any, limit: int = 100) -> str:
    """Text from the shared remote as messages may show it: control characters escaped, bounded."""
    return printable(str(value)[:limit])


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Unavailable(Exception):
    """The breaker is open: the remote is not called for now."""


def valid_files(files: Any) -> bool:
    """A result record's files are well-formed (they come from a shared, untrusted place)."""
    if not isinstance(files, list) or not files:
        return False
    for f in files:
        if not (isinstance(f, dict) and isinstance(f.get("sha256"), str) and SHA_RE.match(f["sha256"])
                and f.get("format") in FORMATS and all(isinstance(f.get(k), int) and not isinstance(f.get(k), bool)
                                                       and f[k] > 0 for k in ("width", "height", "bytes"))):
            return False
    return True


@dataclass
class RemoteCache:
    """One run's view of the shared cache."""

    backend: Backend
    settings: RemoteSettings
    require: bool = False
    holder: str = "unknown"
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    stats: Stats = field(default_factory=Stats)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._failures = 0
        self._open_until = 0.0
        self._corrupt: dict[str, str | None] = {}  # sha -> tag of a corrupt remote copy, replaced on push
        self._present: set[str] = set()  # objects known to be in the remote already
        self._held: dict[str, tuple[str | None, float]] = {}  # spec hash -> (tag, expiry) of our own claims
        self._task_ids: dict[str, str] = {}  # spec hash -> task id noted in our claim
        self._missing: set[str] = set()  # objects a result named that the remote does not have
        self._results: dict[str, tuple[str, str | None]] = {}  # spec hash -> (namespace, tag) of a result read
        self._broken: dict[str, tuple[str, str | None]] = {}  # results whose images are missing or corrupt

    # -- the breaker -------------------------------------------------------------------------

    async def _call(self, fn, *args):
        if self.clock() < self._open_until:
            self.stats.skipped += 1
            if self.require:
                raise RemoteCacheError(f"{self.stats.last_error} (the remote is skipped for {BREAKER_SECONDS:g} s "
                                       f"after {BREAKER_FAILURES} failures)")
            raise Unavailable()
        try:
            out = await fn(*args)
        except RemoteCacheError as exc:
            self._failed(exc)
            raise
        self._failures = 0
        return out

    def _failed(self, exc: RemoteCacheError) -> None:
        self.stats.errors += 1
        self.stats.last_error = str(exc)
        self._failures += 1
        if self._failures >= BREAKER_FAILURES:
            self._failures = 0
            self._open_until = self.clock() + BREAKER_SECONDS
            self.stats.tripped += 1

    async def _safe(self, default, fn, *args):
        """Call the backend; a failure is ``default`` (a miss, a skipped write) unless required."""
        try:
            return await self._call(fn, *args)
        except Unavailable:
            return default
        except RemoteCacheError:
            if self.require:
                raise
            return default

    @property
    def failed(self) -> bool:
        return self.stats.errors > 0

    async def probe(self) -> None:
        """Reach the remote once, or raise (``--require-remote`` checks before anything is paid)."""
        await self._call(self.backend.exists, f"{cas_key('0' * 64)}")

    # -- image bytes -------------------------------------------------------------------------

    async def has_object(self, sha: str) -> bool:
        if sha in self._present:
            return True
        found = await self._safe(False, self.backend.exists, cas_key(sha))
        if found:
            self._present.add(sha)
        return found

    async def fetch_object(self, sha: str, tmp_dir: Path) -> Path | None:
        """Download an image by hash into a temp file, verified; None on a miss or a corrupt copy."""
        tmp = tmp_dir / f"remote-{uuid.uuid4().hex}"
        try:
            found, tag = await self._call(self.backend.download, cas_key(sha), tmp)
        except Unavailable:
            return None
        except RemoteCacheError:
            if self.require:
                raise
            return None
        if not found:
            self._missing.add(sha)
            return None
        if await asyncio.to_thread(_sha256_of, tmp) != sha:
            tmp.unlink(missing_ok=True)
            self._corrupt[sha] = tag
            self.report_corrupt(cas_key(sha), "its bytes do not match their sha256")
            return None
        self._present.add(sha)
        return tmp

    def report_corrupt(self, key: str, why: str) -> None:
        note = f"remote cache: {key} is corrupt ({why}); not used"
        if note not in self.notes:  # once per object, however many assets name it
            self.stats.corrupt += 1
            self.notes.append(note)

    async def push_object(self, sha: str, path: Path, check: bool = True) -> bool:
        """Upload an image unless the remote has it; a copy found corrupt is replaced. True if uploaded.

        ``check=False`` skips looking first: right for an image just paid for, which is almost never
        there (and a create-only write refuses it if it is).
        """
        if not self.settings.writable or sha in self._present:
            return False
        if check and sha not in self._corrupt and await self.has_object(sha):
            return False
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:  # never publish a damaged local copy
            self.notes.append(f"remote cache: the local copy of {sha[:12]} is damaged; not pushed")
            return False
        if sha in self._corrupt:
            tag = self._corrupt.pop(sha)
            if tag:
                done = await self._safe(None, self.backend.replace, cas_key(sha), data, tag)
            else:
                done = await self._safe(False, self.backend.overwrite, cas_key(sha), data) is None
        else:
            done = await self._safe(FAILED, self.backend.create, cas_key(sha), data)
            if done is None:  # it was there already
                self._present.add(sha)
                return False
            done = done is not FAILED
        if done:
            self._present.add(sha)
            self.stats.uploads += 1
        return bool(done)

    # -- results -----------------------------------------------------------------------------

    async def find_result(self, spec_hash: str) -> dict | None:
        """The result of a spec in this build's namespace, else in the namespaces it reads."""
        for ns in self.settings.namespaces:
            blob = await self._safe(None, self.backend.get, ac_key(ns, spec_hash))
            if blob is None:
                continue
            record = self._parse_result(blob.data, spec_hash)
            if record is None:
                self.report_corrupt(ac_key(ns, spec_hash), "not a valid result record")
                continue
            self._results[spec_hash] = (ns, blob.tag)
            return {**record, "namespace": ns}
        return None

    def unusable(self, spec_hash: str, files: list[dict]) -> None:
        """A result was found but its images are missing or corrupt: the next good one replaces it."""
        if spec_hash in self._results and any(f["sha256"] in self._missing or f["sha256"] in self._corrupt
                                              for f in files):
            self._broken[spec_hash] = self._results[spec_hash]

    @staticmethod
    def _parse_result(data: bytes, spec_hash: str) -> dict | None:
        try:
            record = json.loads(data)
        except ValueError:
            return None
        if not isinstance(record, dict) or record.get("spec_hash") != spec_hash or not valid_files(record.get("files")):
            return None
        return record

    async def has_result(self, spec_hash: str) -> bool:
        for ns in self.settings.namespaces:
            if await self._safe(False, self.backend.exists, ac_key(ns, spec_hash)):
                return True
        return False

    async def push_result(self, spec_hash: str, record: dict) -> str:
        """Publish a result (its bytes first): "new", "same", "alt" (a race paid twice) or "skipped"."""
        if not self.settings.writable:
            return "skipped"
        ns = self.settings.namespace
        data = json.dumps({**record, "spec_hash": spec_hash}, sort_keys=True, indent=1).encode()
        created = await self._safe(FAILED, self.backend.create, ac_key(ns, spec_hash), data)
        if created is FAILED:
            return "skipped"
        if created is not None:
            return "new"
        broken = self._broken.pop(spec_hash, None)
        if broken is not None and broken[0] == ns and broken[1] is not None:
            if await self._safe(None, self.backend.replace, ac_key(ns, spec_hash), data, broken[1]) is not None:
                self.notes.append(f"remote cache: the result of spec {spec_hash[:12]} named images that are "
                                  "missing or corrupt; replaced by this build's")
                return "new"
        theirs = await self._safe(None, self.backend.get, ac_key(ns, spec_hash))
        mine = [f["sha256"] for f in record["files"]]
        parsed = self._parse_result(theirs.data, spec_hash) if theirs else None
        if parsed is not None and [f["sha256"] for f in parsed["files"]] == mine:
            return "same"
        if parsed is None and theirs is not None:  # a corrupt record: the good one takes its place
            ok = await self._safe(None, self.backend.replace, ac_key(ns, spec_hash), data, theirs.tag)
            return "new" if ok is not None else "skipped"
        key = alt_key(ns, spec_hash, mine[0])
        await self._safe(None, self.backend.create, key, data)
        self.stats.races += 1
        self.notes.append(f"remote cache: spec {spec_hash[:12]} was paid for twice by a race; both images are "
                          f"kept (the second at {key})")
        return "alt"

    # -- leases ------------------------------------------------------------------------------

    def _lease_data(self, spec_hash: str, ttl: float, task_id: str | None) -> tuple[bytes, float]:
        now = self.wall()
        data = json.dumps({"holder": self.holder, "run": self.run, "spec_hash": spec_hash, "created": now,
                           "expires": now + ttl, "task_id": task_id}, sort_keys=True).encode()
        return data, now + ttl

    async def find_lease(self, spec_hash: str) -> Lease | None:
        """A claim on the spec in any namespace this build reads (its own first)."""
        for ns in self.settings.namespaces:
            blob = await self._safe(None, self.backend.get, lease_key(ns, spec_hash))
            if blob is None:
                continue
            try:
                rec = json.loads(blob.data)
                task_id = rec.get("task_id")
                return Lease(ns, _printable(rec["holder"]), str(rec["run"]), float(rec["expires"]),
                             _printable(task_id) if task_id else None, blob.tag)
            except (ValueError, KeyError, TypeError):
                return Lease(ns, "?", "?", 0.0, None, blob.tag)  # unreadable: treated as expired
        return None

    async def take_lease(self, spec_hash: str, ttl: float) -> bool | None:
        """Claim a spec (create-only): True, False when someone else holds it, None when the remote failed."""
        if not self.settings.writable:
            return None
        data, expires = self._lease_data(spec_hash, ttl, None)
        done = await self._safe(FAILED, self.backend.create, lease_key(self.settings.namespace, spec_hash), data)
        if done is FAILED:
            return None
        if done is not None:
            self._held[spec_hash] = (done.tag, expires)
        return done is not None

    async def take_over(self, spec_hash: str, lease: Lease, ttl: float) -> bool:
        """Replace an expired claim, only if nobody else replaced it first."""
        if not self.settings.writable or lease.namespace != self.settings.namespace or lease.tag is None:
            return False
        data, expires = self._lease_data(spec_hash, ttl, None)
        done = await self._safe(None, self.backend.replace, lease_key(lease.namespace, spec_hash), data, lease.tag)
        if done is not None:
            self._held[spec_hash] = (done.tag, expires)
        return done is not None

    async def _own_tag(self, spec_hash: str) -> str | None:
        """The tag of our claim on a spec: remembered while it cannot have expired, else read back."""
        tag, expires = self._held.get(spec_hash, (None, 0.0))
        if tag and self.wall() < expires:
            return tag
        lease = await self.find_lease(spec_hash)
        mine = lease is not None and lease.run == self.run and lease.namespace == self.settings.namespace
        return lease.tag if mine else None

    async def note_task(self, spec_hash: str, ttl: float, task_id: str) -> None:
        """Add the task id to our claim once the API has accepted the task."""
        self._task_ids[spec_hash] = task_id
        await self.renew(spec_hash, ttl)

    async def renew(self, spec_hash: str, ttl: float) -> None:
        """Push our claim's expiry ``ttl`` seconds ahead (a long queue or task must not lose it)."""
        tag = await self._own_tag(spec_hash)
        if tag:
            data, expires = self._lease_data(spec_hash, ttl, self._task_ids.get(spec_hash))
            done = await self._safe(None, self.backend.replace, lease_key(self.settings.namespace, spec_hash),
                                    data, tag)
            if done is not None:
                self._held[spec_hash] = (done.tag, expires)

    async def drop_lease(self, spec_hash: str) -> None:
        """Release our claim (after the result is published, or when we gave up)."""
        if await self._own_tag(spec_hash):
            self._held.pop(spec_hash, None)
            self._task_ids.pop(spec_hash, None)
            await self._safe(None, self.backend.delete, lease_key(self.settings.namespace, spec_hash))

    # -- small files of other features -------------------------------------------------------

    async def put_file(self, name: str, data: bytes) -> bool:
        """Write a small file under ``v1/files/NAME`` (overwriting); False when read-only or failing."""
        if not self.settings.writable:
            return False
        return await self._safe(False, self.backend.overwrite, file_key(name), data) is None

    async def get_file(self, name: str) -> bytes | None:
        blob = await self._safe(None, self.backend.get, file_key(name))
        return blob.data if blob else None

    async def list_files(self, prefix: str = "") -> list[str]:
        base = file_key(prefix.strip("/")) if prefix.strip("/") else "v1/files"
        keys = await self._safe([], self.backend.list, base)
        return [k.removeprefix("v1/files/") for k in keys]

    # -- the end -----------------------------------------------------------------------------

    def summary(self) -> str:
        s = self.stats
        line = (f"remote cache: {s.hits} hits, {s.uploads} uploads, {s.waits} waits, {s.errors} errors; "
                f"mode {self.settings.mode}, namespace {self.settings.namespace}")
        if s.errors:
            skipped = f"; skipped for {BREAKER_SECONDS:g} s after {BREAKER_FAILURES} failures" if s.tripped else ""
            line += f"; the remote failed ({s.last_error}){skipped}"
        return line

    async def close(self) -> None:
        await self.backend.close()
