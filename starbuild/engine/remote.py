"""The shared remote cache in a build: pull before paying, claim what we pay for, push what we store.

A build looks up each stale asset locally, then here: lock-pinned images first, then the results
of its namespaces. Before paying for a miss it takes a lease; a teammate's live lease is waited
for. Every stored image is pushed in the background (bytes, then the result). A failing remote
never fails a build unless ``--require-remote`` is given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from starbuild.engine.outcome import AssetResult, Outcome
from starbuild.engine.verify import verify_image
from starbuild.errors import UsageError, VerifyError
from starbuild.plan.planner import PlannedAsset
from starbuild.store.objects import ObjectStore
from starbuild.store.remote.cache import FORMATS, Lease, RemoteCache
from starbuild.store.remote.layout import cas_key

log = logging.getLogger("starbuild")
Emit = Callable[[str, str, dict], None]
# A claim lives this long after its holder last renewed it (every third of it while held): a
# machine that crashed or lost the network blocks its teammates for three minutes at most.
LEASE_TTL = 180.0
TASK_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # seconds a lease outlives task_timeout: time to download and push


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_build_remote(project, options, store: ObjectStore, emit: Emit | None) -> "BuildRemote | None":
    """The remote cache of this build, or None; ``--require-remote`` without one is a usage error."""
    from starbuild.store.remote import open_remote

    cache = open_remote(project, options.env, require=options.require_remote)
    if cache is None:
        if options.require_remote:
            raise UsageError("--require-remote: no remote cache is configured (cache.remote) or it is off "
                             "(mode, STARBUILD_REMOTE_CACHE)")
        return None
    if options.offline:  # placeholders are free and never shared: read lock-pinned images only
        cache.settings = dataclasses.replace(cache.settings, mode="read-only", why="offline build")
    provider = project.config.provider
    return BuildRemote(cache, store, placeholder=options.offline, frozen=options.frozen,
                       lease_ttl=LEASE_TTL, emit=emit or (lambda *a: None),
                       claims=options.concurrency or provider.concurrency)


class BuildRemote:
    """The remote cache's part in one build."""

    PULLS = 16   # downloads at once
    PUSHES = 16  # uploads at once

    def __init__(self, cache: RemoteCache, store: ObjectStore, *, placeholder: bool, frozen: bool,
                 lease_ttl: float, emit: Emit, claims: int = 4):
        self.cache = cache
        self.store = store
        self.placeholder = placeholder
        self.frozen = frozen
        self.lease_ttl = lease_ttl
        self.emit = emit
        self.leases: dict[str, str] = {}  # asset name -> spec hash we hold a claim on
        self._noting: dict[str, asyncio.Task] = {}  # asset name -> the update of its lease with the task id
        self._tasks: set[asyncio.Task] = set()
        self._push_slots = asyncio.Semaphore(self.PUSHES)
        # Claims not yet paid for, at most as many as tasks in flight: a machine claims what it is
        # about to pay for, so two machines share a big build instead of one claiming it all.
        self._claims = asyncio.Semaphore(max(1, claims))
        self._claiming: set[str] = set()
        self._heartbeat: asyncio.Task | None = None

    # -- before the run: pull ----------------------------------------------------------------

    async def pull_stale(self, todo: list[PlannedAsset]) -> tuple[list[AssetResult], list[PlannedAsset]]:
        """(results of the assets pulled, the assets still to build)."""
        slots = asyncio.Semaphore(self.PULLS)

        async def one(asset: PlannedAsset) -> AssetResult | None:
            async with slots:
                return await self._pull(asset)

        got = await asyncio.gather(*(one(a) for a in todo))
        return [r for r in got if r is not None], [a for a, r in zip(todo, got) if r is None]

    async def _pull(self, asset: PlannedAsset) -> AssetResult | None:
        if asset.forced or asset.spec is None or not asset.spec_hash:
            return None
        prev = asset.previous or {}
        common = dict(name=asset.name, model=asset.spec.model, request=asset.spec.request(),
                      spec_hash=asset.spec_hash, reason="in the remote cache")
        if pinned(asset) and await self.fetch_files(prev["files"], None):
            return self._hit(AssetResult(outcome=Outcome.PULLED, files=prev["files"], task_id=prev.get("task_id"),
                                         **common))
        if self.frozen or self.placeholder:
            return None
        return await self.pull_result(asset.spec_hash, asset.spec.dims, common)

    def _hit(self, result: AssetResult) -> AssetResult:
        self.cache.stats.hits += 1
        self.emit("pulled", result.name, {"credits": 0.0})
        return result

    async def pull_result(self, spec_hash: str, dims, common: dict) -> AssetResult | None:
        """The asset made of the spec's result in the remote, its images downloaded and verified."""
        record = await self.cache.find_result(spec_hash)
        if record is None:
            return None
        if not await self.fetch_files(record["files"], dims):
            self.cache.unusable(spec_hash, record["files"])
            return None
        from starbuild.engine.runner import named_files

        files = [{"path": f".{FORMATS[f['format']]}", "sha256": f["sha256"], "bytes": f["bytes"],
                  "width": f["width"], "height": f["height"], "format": f["format"]} for f in record["files"]]
        task_id = record.get("task_id")  # shown by `ls`: only a plain id from a shared, untrusted place
        task_id = task_id if isinstance(task_id, str) and TASK_ID_RE.match(task_id) else None
        return self._hit(AssetResult(
            outcome=Outcome.PULLED, files=named_files(common["name"], files), task_id=task_id,
            **{**common, "reason": "in the remote cache"}))  # no price: this build paid nothing, learns nothing

    async def fetch_files(self, files: list[dict], dims) -> bool:
        """Bring every file's object into the local store: verified by sha256 (and decoded, with ``dims``)."""
        for f in files:
            sha = f.get("sha256")
            if not isinstance(sha, str) or len(sha) != 64:
                return False
            if self.store.has(sha):
                continue
            tmp = await self.cache.fetch_object(sha, self.store.temp_dir())
            if tmp is None:
                return False
            if dims is not False:
                try:
                    await asyncio.to_thread(verify_image, tmp, dims)
                except VerifyError as exc:
                    tmp.unlink(missing_ok=True)
                    self.cache.report_corrupt(cas_key(sha), str(exc))
                    return False
            self.store.add(tmp, sha)
        return True

    # -- during the run: claim before paying -------------------------------------------------

    async def before_paying(self, asset: PlannedAsset, spec_hash: str, dims, common: dict) -> AssetResult | None:
        """A result to use instead of paying (found, or waited for), or None: pay (holding a lease if we can).

        Claim first (one create-only write), then look for a result published just before the claim:
        two requests for the usual new image. A claim held by someone else is waited for.
        """
        if self.placeholder or self.frozen or asset.forced:
            return None
        wait = _Wait(self.cache.settings.lease_wait)
        for _ in range(5):
            lease = None
            if self.cache.settings.writable:
                await self._claims.acquire()
                self._claiming.add(asset.name)
                got = await self.cache.take_lease(spec_hash, self.lease_ttl)
                if got is not False:
                    return await self._claimed(asset.name, spec_hash, dims, common, bool(got))
                self._unclaim(asset.name)
                lease = await self.cache.find_lease(spec_hash)
            found = await self.pull_result(spec_hash, dims, common)
            if found is not None:
                return found
            lease = lease or await self.cache.find_lease(spec_hash)
            if lease is None:
                if not self.cache.settings.writable:
                    return None  # read-only: nobody to wait for, no claim to take
            elif not lease.live(self.cache.wall()):
                if await self.cache.take_over(spec_hash, lease, self.lease_ttl):
                    return await self._claimed(asset.name, spec_hash, dims, common, True)
                if not self.cache.settings.writable or lease.namespace != self.cache.settings.namespace:
                    return None
            else:
                found = await self._wait_for(asset.name, spec_hash, dims, common, lease, wait)
                if found is not None or wait.gave_up:
                    return found
        return None

    async def _wait_for(self, name: str, spec_hash: str, dims, common: dict, lease: Lease | None,
                        wait: "_Wait") -> AssetResult | None:
        """Wait while a teammate's claim is live: their result, or None (claim gone, or we gave up)."""
        while lease is not None and lease.live(self.cache.wall()):
            if not await self._wait(name, lease, wait):
                wait.gave_up = True
                return None
            found = await self.pull_result(spec_hash, dims, common)
            if found is not None:
                return found
            lease = await self.cache.find_lease(spec_hash)
        return None

    async def _claimed(self, name: str, spec_hash: str, dims, common: dict, held: bool) -> AssetResult | None:
        """After a claim (or when none could be had): a result published just before it, else pay."""
        found = await self.pull_result(spec_hash, dims, common)
        if held:
            self.leases[name] = spec_hash
            if found is not None:
                await self._release(name)
            elif self._heartbeat is None:
                self._heartbeat = asyncio.ensure_future(self._renew_leases())
        if not held or found is not None:
            self._unclaim(name)
        return found

    async def _renew_leases(self) -> None:
        """Keep our claims alive while they wait in the queue or their tasks run long."""
        every = self.lease_ttl / 3
        while True:
            await asyncio.sleep(every)
            for spec_hash in list(self.leases.values()):
                await self.cache.renew(spec_hash, self.lease_ttl)

    def _unclaim(self, name: str | None) -> None:
        """Free the claim slot of an asset that is paid for, failed, or did not need one."""
        if name in self._claiming:
            self._claiming.discard(name)
            self._claims.release()

    async def _wait(self, name: str, lease: Lease, wait: "_Wait") -> bool:
        """Wait a little for a teammate's live lease; False once lease_wait has passed."""
        if wait.started is None:
            wait.started = time.monotonic()
            self.cache.stats.waits += 1
            self.emit("waiting", name, {"holder": lease.holder, "task_id": lease.task_id, "seconds": wait.limit})
        left = wait.limit - (time.monotonic() - wait.started)
        if left <= 0:
            self.cache.notes.append(f"remote cache: waited {wait.limit:g} s for {lease.holder}'s image of {name}; "
                                    "paid for it instead")
            return False
        await asyncio.sleep(min(wait.delay, left))
        wait.delay = min(wait.delay * 1.5, 2.0)
        return True

    def events(self, emit: Emit) -> Emit:
        """The runner's events, also used to note task ids in our leases and drop them on failure."""

        def handle(kind: str, name: str, info: dict) -> None:
            spec_hash = self.leases.get(name)
            if spec_hash and kind == "submitted" and info.get("task_id"):
                self._noting[name] = self._spawn(self.cache.note_task(spec_hash, self.lease_ttl, info["task_id"]))
            elif kind in ("failed", "skipped"):
                self._unclaim(name)
                if spec_hash:
                    self._spawn(self._release(name))
            emit(kind, name, info)

        return handle

    # -- after each image is stored: push ----------------------------------------------------

    def stored(self, spec_hash: str, record: dict[str, Any]) -> None:
        """An image was paid for and stored: push it (never placeholders, never URLs or keys)."""
        self._unclaim(record.get("name"))
        if record.get("placeholder") or self.placeholder or not self.cache.settings.writable:
            return
        self._spawn(self._push(spec_hash, record))

    async def _push(self, spec_hash: str, record: dict[str, Any]) -> None:
        async with self._push_slots:
            try:
                await self.push_record(spec_hash, record)
            finally:
                await self._release(record.get("name"))

    async def push_record(self, spec_hash: str, record: dict[str, Any], sources: dict[str, Path] | None = None) -> str:
        """Upload a stored result's images, then its record; the push_result outcome or "missing"."""
        files = record.get("files") or []
        for f in files:
            path = (sources or {}).get(f["sha256"]) or self.store.path(f["sha256"])
            if not path.is_file():
                return "missing"
            await self.cache.push_object(f["sha256"], path, check=sources is not None)
        if not all(await asyncio.gather(*(self.cache.has_object(f["sha256"]) for f in files))) or not files:
            return "skipped"  # a result is never published before its bytes
        request = record.get("request") or {}
        result = {"files": [{k: f[k] for k in ("sha256", "width", "height", "format", "bytes")} for f in files],
                  "model": request.get("model"), "credits": record.get("credits"), "task_id": record.get("task_id"),
                  "created": record.get("created") or _now(),
                  "producer": {"holder": self.cache.holder, "run": self.cache.run}}
        return await self.cache.push_result(spec_hash, result)

    async def _release(self, name: str | None) -> None:
        spec_hash = self.leases.pop(name, None) if name else None
        noting = self._noting.pop(name, None) if name else None
        if noting is not None:
            await asyncio.gather(noting, return_exceptions=True)  # never let it write the lease back
        if spec_hash:
            await self.cache.drop_lease(spec_hash)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.cache.stats.errors += 1
            self.cache.stats.last_error = str(task.exception())
            log.debug("remote cache push failed", exc_info=task.exception())

    async def close(self) -> None:
        """Wait for the pushes, release what we still hold, and close the connection."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for name in list(self._claiming):
            self._unclaim(name)
        for name in list(self.leases):
            try:
                await self._release(name)
            except Exception:  # the lease expires on its own
                pass
        await self.cache.close()

    def report_lines(self) -> list[str]:
        return [*self.cache.notes, self.cache.summary()]


@dataclass
class _Wait:
    """How long one asset has waited for a teammate's lease."""

    limit: float
    started: float | None = None
    delay: float = 0.2
    gave_up: bool = False


def pinned(asset: PlannedAsset) -> bool:
    """The lockfile already names this spec's images: fetch them by hash."""
    prev = asset.previous or {}
    return bool(asset.spec_hash and prev.get("spec_hash") == asset.spec_hash and prev.get("files")
                and not prev.get("placeholder"))
