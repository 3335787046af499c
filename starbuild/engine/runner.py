"""The scheduler: run each stale asset's protocol concurrently and politely.

Per asset: reuse a stored result, or resume a journaled task, or submit (journal the task id
before polling), poll, download, verify and store. Every asset yields one AssetResult; one
asset's failure never stops the others (unless fail-fast asks to stop submitting).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import mimetypes
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from starbuild.api.client import StarMagicClient
from starbuild.api.wire import RETRYABLE_FAILURES, Task
from starbuild.errors import (
    ApiError, NotFoundError, RateLimitError, StarbuildError, TaskFailedError, TransientApiError, UnknownOutcomeError,
    VerifyError,
)
from starbuild.engine.journal import STORED, SUBMITTED, SUBMITTING, Journal
from starbuild.engine.outcome import AssetResult, Outcome
from starbuild.plan.planner import PlannedAsset
from starbuild.plan.spec import GenerationSpec, InputRef
from starbuild.store.objects import ObjectStore
from starbuild.engine.verify import verify_image

log = logging.getLogger("starbuild")
Emit = Callable[[str, str, dict], None]


@dataclass
class RunOptions:
    """How hard and how long the runner may work."""

    concurrency: int = 4
    rate_per_second: float | None = None
    max_credits: float | None = None
    task_timeout: float = 600.0
    retry_failed: int = 0
    fail_fast: bool = False
    placeholder: bool = False
    retry_unknown: bool = False
    poll_base: float = 0.5   # first backoff step after the estimate has passed
    poll_cap: float = 10.0   # longest wait between two polls
    seed: int | None = None


class AdaptiveLimit:
    """How many tasks may be in flight: starts small, finds the server's cap, stays under it.

    Slow start: every accepted submission adds one, up to ``max``. A submission refused with 429
    sets the limit to the number of our tasks the server was holding (its cap, as far as we can
    tell), but never below half of it and only once per burst of 429s; after that the limit grows
    by one only after ``limit`` accepted submissions in a row, and not for ``HOLD`` seconds after a
    429. Waiters are woken one slot at a time, in order.
    """

    START = 4
    HOLD = 30.0

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic):
        self.max = max(1, limit)
        self.limit = min(self.max, self.START)
        self.in_use = 0
        self._clock = clock
        self._slow_start = True
        self._streak = 0
        self._last_cut = -1e9
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    async def acquire(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the slot was counted for us by _wake
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled: pass it on
            elif fut in self._waiters:  # (_wake may already have dropped it)
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)

    def throttle(self, holding: int | None = None) -> None:
        """A 429: ``holding`` is how many of our tasks the server had when it refused (None: unknown)."""
        now = self._clock()
        self._slow_start = False
        self._streak = 0
        if now - self._last_cut > 1.0:  # one burst of 429s cuts once, and by half at most
            self.limit = max(1, min(self.limit, max(holding or 0, self.limit // 2)))
            self._last_cut = now

    def success(self) -> None:
        """A submission was accepted."""
        if self.limit >= self.max:
            return
        if self._slow_start:
            self.limit += 1
        else:
            self._streak += 1
            if self._streak < self.limit or self._clock() - self._last_cut < self.HOLD:
                return
            self._streak = 0
            self.limit += 1
        self._wake()


class RateLimiter:
    """At most ``rate`` submissions per second, evenly spaced."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


class Budget:
    """Credits reserved so far plus estimates of submissions under way, against a cap."""

    def __init__(self, limit: float | None):
        self.limit = limit
        self.reserved = 0.0
        self.pending = 0.0

    def try_hold(self, estimate: float) -> bool:
        if self.limit is not None and self.reserved + self.pending + estimate > self.limit + 1e-9:
            return False
        self.pending += estimate
        return True

    def settle(self, estimate: float, actual: float | None) -> None:
        self.pending -= estimate
        self.reserved += estimate if actual is None else actual

    def release(self, estimate: float) -> None:
        self.pending -= estimate


class UploadCache:
    """Uploaded reference images by content hash, reused until shortly before they expire.

    Held in memory only (a watch session keeps one for its lifetime): upload links expire, and no
    expiring URL is ever written to disk.
    """

    MARGIN = 3600.0  # upload again when less than an hour of the link's life is left
    DEFAULT_LIFE = 72 * 3600.0

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._links: dict[str, tuple[str, float]] = {}
        self.uploads = 0

    def get(self, sha: str) -> str | None:
        hit = self._links.get(sha)
        if hit and hit[1] - self._clock() > self.MARGIN:
            return hit[0]
        return None

    def put(self, sha: str, url: str, expires_at: float | None) -> None:
        self.uploads += 1
        self._links[sha] = (url, expires_at or self._clock() + self.DEFAULT_LIFE)


def named_files(name: str, files: list[dict]) -> list[dict]:
    """File records with paths for this asset name: NAME.ext, or NAME-1.ext ... NAME-n.ext."""
    out = []
    for i, f in enumerate(files):
        ext = f["path"].rsplit(".", 1)[-1]
        stem = name if len(files) == 1 else f"{name}-{i + 1}"
        out.append({**f, "path": f"{stem}.{ext}"})
    return out


class Stop(Exception):
    """This asset was not attempted (budget, fail-fast, a failed parent)."""


@dataclass
class Runner:
    """Runs the stale assets of one plan against one client."""

    client: StarMagicClient
    journal: Journal
    store: ObjectStore
    root: Path
    options: RunOptions
    emit: Emit = lambda kind, name, info: None
    limit: AdaptiveLimit = field(init=False)
    rate: RateLimiter = field(init=False)
    budget: Budget = field(init=False)
    uploads: UploadCache = field(default_factory=UploadCache)
    links: dict[str, str] = field(default_factory=dict)  # object sha -> fresh result link, never written
    stopping: bool = False
    remote: Any = None  # the build's remote cache (engine/remote.py): pull before paying, push once stored

    def __post_init__(self) -> None:
        self.limit = AdaptiveLimit(self.options.concurrency)
        self.rate = RateLimiter(self.options.rate_per_second)
        self.budget = Budget(self.options.max_credits)
        self.client.on_rate_limit = self.limit.throttle
        self._holding = 0  # accepted tasks of ours the server has not finished: what it holds for us
        self._rng = random.Random(self.options.seed)
        self._upload_locks: dict[str, asyncio.Lock] = {}

    async def run(self, assets: list[PlannedAsset], ready: list[AssetResult] = ()) -> list[AssetResult]:
        """Every asset's result, in the order given; ``ready`` results (pulled) serve as @asset inputs."""
        done: dict[str, asyncio.Future] = {a.name: asyncio.get_running_loop().create_future() for a in assets}
        for r in ready:
            done[r.name] = asyncio.get_running_loop().create_future()
            done[r.name].set_result(r)
        tasks = [asyncio.create_task(self._guarded(a, done)) for a in assets]
        return list(await asyncio.gather(*tasks))

    async def adopt(self, spec_hash: str, record: dict[str, Any]) -> bool:
        """Finish a task of an earlier run that is no longer planned, so its paid image is kept."""
        try:
            await self._poll_and_store(spec_hash, record["name"], record.get("request") or {},
                                       record["task_id"], record.get("credits"), None)
            return True
        except StarbuildError as exc:
            log.warning("could not recover task %s of %s: %s", record.get("task_id"), record.get("name"), exc)
            return False

    async def _guarded(self, asset: PlannedAsset, done: dict[str, asyncio.Future]) -> AssetResult:
        spec = asset.spec
        assert spec is not None
        base = dict(name=asset.name, model=spec.model, request=spec.request(), spec_hash=asset.spec_hash)
        try:
            result = await self._protocol(asset, done)
        except Stop as exc:
            result = AssetResult(outcome=Outcome.SKIPPED, reason=str(exc), **base)
        except ApiError as exc:
            result = AssetResult(outcome=Outcome.FAILED, reason=asset.reason, error=str(exc),
                                 error_code=exc.code, **base)
        except StarbuildError as exc:
            result = AssetResult(outcome=Outcome.FAILED, reason=asset.reason, error=str(exc), **base)
        except Exception as exc:  # a bug must not take the other assets down
            log.debug("internal error on %s", asset.name, exc_info=True)
            result = AssetResult(outcome=Outcome.FAILED, reason=asset.reason,
                                 error=f"internal error: {type(exc).__name__}: {exc}", **base)
        if result.outcome == Outcome.FAILED and self.options.fail_fast:
            self.stopping = True
        fut = done.get(asset.name)
        if fut is not None and not fut.done():
            fut.set_result(result)
        self.emit(result.outcome.value, asset.name, {"error": result.error, "credits": result.credits})
        return result

    async def _protocol(self, asset: PlannedAsset, done: dict[str, asyncio.Future]) -> AssetResult:
        spec = await self._with_parents(asset.spec, done)
        h = spec.spec_hash(self.options.placeholder)
        assert h is not None
        request = spec.request()
        common = dict(name=asset.name, model=spec.model, request=request, spec_hash=h, reason=asset.reason)
        rec = self.journal.get(h)
        stored = rec is not None and rec.get("state") == STORED
        if stored and not asset.forced and all(self.store.has(f["sha256"]) for f in rec.get("files", [])):
            return AssetResult(outcome=Outcome.CACHED, files=named_files(asset.name, rec["files"]),
                               task_id=rec.get("task_id"), credits=0.0, **common)
        if rec and rec.get("state") == SUBMITTED:
            self.emit("resume", asset.name, {"task_id": rec["task_id"]})
            try:
                await self.limit.acquire()
                hold = _Hold(self)
                self.limit.success()  # a task the server already holds counts as accepted
                try:
                    files = await self._poll_and_store(h, asset.name, request, rec["task_id"], rec.get("credits"),
                                                       spec.dims, hold=hold)
                finally:
                    hold.release()
                return AssetResult(outcome=Outcome.RESUMED, files=files, task_id=rec["task_id"],
                                   credits=rec.get("credits") or 0.0, **common)
            except NotFoundError as exc:
                if not self.options.placeholder:
                    self.journal.forget(h)  # gone for good: the next build submits it again
                    raise NotFoundError(f"task {rec['task_id']} of an earlier run has expired before it "
                                        f"could be downloaded; the next build submits it again ({exc})") from None
                self.journal.forget(h)  # placeholders cost nothing: make it again now
        elif rec and rec.get("state") == SUBMITTING and not (self.options.placeholder or self.options.retry_unknown):
            raise UnknownOutcomeError("an earlier run was stopped while submitting this asset, so it may have "
                                      "been accepted and billed; rerun with --retry-unknown to submit it again")
        if self.remote is not None:
            pulled = await self.remote.before_paying(asset, h, spec.dims, common)
            if pulled is not None:
                return pulled
        return await self._submit_cycle(asset, spec, h, request, common)

    async def _submit_cycle(self, asset: PlannedAsset, spec: GenerationSpec, h: str, request: dict,
                            common: dict) -> AssetResult:
        attempts = 0
        while True:
            task, hold = await self._submit(asset, spec, h, request)
            credits = task.credits_reserved
            try:
                files = await self._poll_and_store(h, asset.name, request, task.id, credits, spec.dims,
                                                   first_wait=task.estimated_time, hold=hold)
                return AssetResult(outcome=Outcome.BUILT, files=files, task_id=task.id,
                                   credits=credits or 0.0, **common)
            except TaskFailedError as exc:
                retryable = exc.code in RETRYABLE_FAILURES
                if retryable and attempts < self.options.retry_failed and not self.stopping:
                    attempts += 1
                    self.emit("retry", asset.name, {"code": exc.code})
                    continue
                raise
            finally:
                hold.release()

    async def _submit(self, asset: PlannedAsset, spec: GenerationSpec, h: str, request: dict) -> tuple[Task, "_Hold"]:
        """Submit under the limits; returns the task and its concurrency slot, held until the task ends.

        Each attempt is a single request, journaled as "submitting" only while it is on the wire: an
        answer that refuses it (429, 5xx) or a server that cannot be reached clears the record and
        frees the slot and the credits before the backoff, so a run killed while waiting leaves
        nothing of unknown outcome, and a 429 really lowers what is in flight.
        """
        deadline = time.monotonic() + self.options.task_timeout
        policy = self.client.retry
        failures = rate_limited = 0  # refusals in a row: 5xx or unreachable, and 429
        while True:
            if self.stopping:
                raise Stop("not submitted: an earlier asset failed and --fail-fast is set")
            await self.limit.acquire()
            try:
                await self.rate.wait()
            except BaseException:
                self.limit.release()
                raise
            if self.stopping or not self.budget.try_hold(asset.credits):
                self.limit.release()
                if self.stopping:
                    raise Stop("not submitted: an earlier asset failed and --fail-fast is set")
                raise Stop(f"not submitted: it would take the credits reserved past max_credits "
                           f"({self.budget.limit:g})")
            try:
                body = spec.api_body(*await self._input_urls(spec))
                self.emit("submit", asset.name, {})
            except BaseException:
                self.budget.release(asset.credits)
                self.limit.release()
                raise
            self.journal.intend(h, asset.name, request)
            try:
                task = await self.client.submit(body)
            except (RateLimitError, TransientApiError) as exc:  # refused or never sent: nothing in flight
                refused: TransientApiError | None = exc
            except ApiError as exc:
                if isinstance(exc, UnknownOutcomeError):
                    self.budget.settle(asset.credits, None)  # it may have been billed: count it
                else:  # a definite refusal (400, 401, 402, 403 ...)
                    self.journal.forget(h)
                    self.budget.release(asset.credits)
                self.limit.release()
                raise
            except BaseException:
                # Cancelled (Ctrl-C) or broken while the request may have been received: the
                # outcome is unknown, so the "submitting" record stays and the next build says so.
                self.budget.settle(asset.credits, None)
                self.limit.release()
                raise
            else:
                refused = None
            if refused is not None:
                self.journal.forget(h)
                self.budget.release(asset.credits)
                self.limit.release()
                if isinstance(refused, RateLimitError):
                    self.limit.throttle(self._holding)
                    rate_limited += 1
                    attempt = rate_limited
                else:
                    failures += 1
                    attempt = failures
                    if failures >= policy.attempts:
                        raise refused
                if time.monotonic() > deadline:
                    raise refused
                await asyncio.sleep(policy.delay(attempt - 1, refused.retry_after, self._rng))
                continue
            self.journal.submitted(h, asset.name, request, task.id, task.credits_reserved)
            self.budget.settle(asset.credits, task.credits_reserved)
            self.emit("submitted", asset.name, {"task_id": task.id, "credits": task.credits_reserved})
            self.limit.success()
            return task, _Hold(self)

    async def _poll_and_store(self, h: str, name: str, request: dict, task_id: str, credits: float | None,
                              dims: tuple[int, int] | None, first_wait: float | None = None,
                              hold: "_Hold | None" = None) -> list[dict]:
        task = await self._wait_for(task_id, first_wait)
        if hold is not None:
            hold.release()  # the server is done with it: the next submission may start while we download
        if task.status == "failed":
            self.journal.forget(h)
            raise TaskFailedError(f"task {task_id} failed: {task.error_code}: {task.error_message or 'no message'}",
                                  code=task.error_code)
        files = []
        for url in task.results or ():
            files.append(await self._download(url, dims))
            self.links[files[-1]["sha256"]] = url
        files = named_files(name, files)
        record = {"name": name, "request": request, "task_id": task_id, "credits": credits,
                  "files": files, "placeholder": self.options.placeholder}
        self.journal.stored(h, record)
        if self.remote is not None:
            self.remote.stored(h, record)
        return files

    async def _wait_for(self, task_id: str, first_wait: float | None) -> Task:
        start = time.monotonic()
        wait = first_wait if first_wait is not None else 0.0
        step = self.options.poll_base
        while True:
            if wait > 0:
                await asyncio.sleep(min(wait, self.options.poll_cap))
            task = await self.client.task(task_id)
            if task.done:
                return task
            if time.monotonic() - start > self.options.task_timeout:
                raise ApiError(f"task {task_id} did not finish within task_timeout "
                               f"({self.options.task_timeout:g} s); it stays journaled and the next build "
                               "picks it up again", code="timeout")
            wait = step * self._rng.uniform(0.8, 1.2)
            step = min(step * 2, self.options.poll_cap)

    async def _download(self, url: str, dims: tuple[int, int] | None) -> dict:
        tmp, sha, size = await self.client.download(url, self.store.temp_dir())
        try:
            info = await asyncio.to_thread(verify_image, tmp, dims)
        except VerifyError:
            tmp.unlink(missing_ok=True)
            raise
        self.store.add(tmp, sha)
        return {"path": f".{info.ext}", "sha256": sha, "bytes": size, "width": info.width,
                "height": info.height, "format": info.format}

    async def _with_parents(self, spec: GenerationSpec, done: dict[str, asyncio.Future]) -> GenerationSpec:
        """Wait for ``@asset`` parents built in this run and put their image hashes into the spec."""
        refs = spec.inputs + ((spec.mask,) if spec.mask else ())
        if not any(r.kind == "asset" and r.sha256 is None for r in refs):
            return spec

        async def fill(ref: InputRef) -> InputRef:
            if ref.kind != "asset" or ref.sha256 is not None:
                return ref
            fut = done.get(ref.ref)
            if fut is None:
                raise Stop(f"input @{ref.ref} is not built; build it first")
            parent: AssetResult = await fut
            if not parent.outcome.ok or not parent.files:
                raise Stop(f"not submitted: input @{ref.ref} {parent.outcome.value}")
            return InputRef("asset", ref.ref, parent.files[0]["sha256"])

        inputs = tuple([await fill(r) for r in spec.inputs])
        mask = await fill(spec.mask) if spec.mask else None
        return spec.with_inputs(inputs, mask)

    async def _input_urls(self, spec: GenerationSpec) -> tuple[list[str] | None, str | None]:
        if not spec.inputs:
            return None, None
        urls = [await self._url_of(r) for r in spec.inputs]
        mask = await self._url_of(spec.mask) if spec.mask else None
        return urls, mask

    async def _url_of(self, ref: InputRef) -> str:
        if ref.kind == "url":
            return ref.ref
        assert ref.sha256 is not None
        if ref.kind == "asset" and ref.sha256 in self.links:
            return self.links[ref.sha256]  # the parent's fresh result link: no upload needed
        lock = self._upload_locks.setdefault(ref.sha256, asyncio.Lock())
        async with lock:
            url = self.uploads.get(ref.sha256)
            if url is None:
                path = self.root / ref.ref if ref.kind == "file" else self.store.path(ref.sha256)
                mime = mimetypes.guess_type(str(path))[0] or "image/png"
                url, expires = await self.client.upload(path, mime)
                self.uploads.put(ref.sha256, url, expires)
        return url


class _Hold:
    """One task's concurrency slot: counted as held by the server until released, released once."""

    def __init__(self, runner: Runner):
        self._runner = runner
        self._held = True
        runner._holding += 1

    def release(self) -> None:
        if self._held:
            self._held = False
            self._runner._holding -= 1
            self._runner.limit.release()
