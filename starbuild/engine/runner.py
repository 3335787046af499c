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
from starbuild.api.wire import RETRYABLE_FAILURES, Task, parse_task
from starbuild.errors import (
    ApiError, AuthError, NotFoundError, QuotaError, RateLimitError, StarbuildError, StoreError, TaskFailedError,
    TransientApiError, UnknownOutcomeError, VerifyError,
)
from starbuild.engine.journal import STORED, SUBMITTED, SUBMITTING, Journal
from starbuild.engine.outcome import AssetResult, Outcome
from starbuild.engine.prices import PriceBook
from starbuild.models import ceiling_credits, price_kind
from starbuild.engine.polling import Tracker
from starbuild.plan.planner import PlannedAsset
from starbuild.plan.spec import GenerationSpec, InputRef
from starbuild.spend.ledger import NullLedger
from starbuild.store.objects import ObjectStore
from starbuild.engine.verify import PngStamp, verify_image

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
    callbacks: Any = None    # a CallbackHub (api/callbacks.py) when provider.callback is set


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
    """Credits reserved so far plus the holds of submissions under way, against a cap.

    ``reserved + pending`` never passes ``limit`` by a hold; only an API that reserves more than
    a submission held can take ``reserved`` past it, and then nothing more is submitted.
    """

    def __init__(self, limit: float | None):
        self.limit = limit
        self.reserved = 0.0
        self.pending = 0.0
        self.max_seen = 0.0  # the most reserved + held at any moment

    def left(self) -> float | None:
        return None if self.limit is None else max(0.0, self.limit - self.reserved - self.pending)

    def try_hold(self, amount: float) -> bool:
        if self.limit is not None and self.reserved + self.pending + amount > self.limit + 1e-9:
            return False
        self.pending += amount
        self.max_seen = max(self.max_seen, self.reserved + self.pending)
        return True

    def settle(self, held: float, actual: float | None) -> None:
        """The answer came: count what the API reserved, or what was held when it did not say."""
        self.pending -= held
        self.reserved += held if actual is None else actual
        self.max_seen = max(self.max_seen, self.reserved + self.pending)

    def release(self, held: float) -> None:
        self.pending -= held


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


LATE_ANSWER_SECONDS = 5.0  # how long a stopped build still waits for the answer to a submission
INLINE_VERIFY = 256 * 1024  # bytes: a downloaded image this small is verified in the event loop


class Stop(Exception):
    """This asset was not attempted (budget, fail-fast, a refused key, a failed parent)."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code  # "budget" or "refused": the build was stopped, not failed


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
    _tmp: Path | None = field(default=None, init=False, repr=False)  # the store's temp folder, made once
    ledger: Any = field(default_factory=NullLedger)  # the credits ledger (spend/ledger.py)
    stopping: bool = False
    prices: PriceBook = field(default_factory=PriceBook)
    refusal: str | None = None  # why the API will take nothing more (a refused key, no credits)
    halted: str | None = None  # why nothing more may be submitted (the journal cannot be written)
    remote: Any = None  # the build's remote cache (engine/remote.py): pull before paying, push once stored
    early: Any = None  # work started on each stored image, ``stored(name, files)`` (post/early.py)

    def __post_init__(self) -> None:
        self.limit = AdaptiveLimit(self.options.concurrency)
        self.rate = RateLimiter(self.options.rate_per_second)
        self.budget = Budget(self.options.max_credits)
        self.client.on_rate_limit = self.limit.throttle
        self._holding = 0  # accepted tasks of ours the server has not finished: what it holds for us
        self._rng = random.Random(self.options.seed)
        self._upload_locks: dict[str, asyncio.Lock] = {}
        self._by_hash: dict[str, asyncio.Future] = {}  # one protocol per spec_hash per build
        self.tracker = Tracker(self.options.poll_base, self.options.poll_cap, self.options.callbacks)

    async def run(self, assets: list[PlannedAsset], ready: list[AssetResult] = ()) -> list[AssetResult]:
        """Every asset's result, in the order given; ``ready`` results (pulled) serve as @asset inputs."""
        done: dict[str, asyncio.Future] = {a.name: asyncio.get_running_loop().create_future() for a in assets}
        for r in ready:
            done[r.name] = asyncio.get_running_loop().create_future()
            done[r.name].set_result(r)
        tasks = [asyncio.create_task(self._guarded(a, done)) for a in assets]
        return list(await asyncio.gather(*tasks))

    def stop_reason(self, results: list[AssetResult]) -> str | None:
        """Why this run stopped submitting (a refused key, no credits, the budget), naming what it skipped."""
        skipped = [r.name for r in results if r.outcome == Outcome.SKIPPED and r.error_code in ("budget", "refused")]
        if self.refusal:
            why = f"{self.refusal}: stopped submitting"
        elif skipped:
            why = (f"max_credits {self.budget.limit:g} reached ({self.budget.reserved:g} credits reserved): "
                   "stopped submitting")
        else:
            return None
        names = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        return f"{why}; {len(skipped)} asset(s) not submitted" + (f": {names}" if skipped else "")

    async def adopt(self, spec_hash: str, record: dict[str, Any]) -> bool:
        """Finish a task of an earlier run that is no longer planned, so its paid image is kept."""
        try:
            await self._poll_and_store(spec_hash, record["name"], record.get("request") or {},
                                       record["task_id"], record.get("credits"), None)
            return True
        except StarbuildError as exc:
            log.warning("could not recover task %s of %s: %s", self.client.scrub(record.get("task_id")),
                        record.get("name"), self.client.scrub(exc))
            return False

    async def _guarded(self, asset: PlannedAsset, done: dict[str, asyncio.Future]) -> AssetResult:
        spec = asset.spec
        assert spec is not None
        base = dict(name=asset.name, model=spec.model, request=spec.request(), spec_hash=asset.spec_hash)
        try:
            result = await self._protocol(asset, done)
        except Stop as exc:
            if exc.code == "journal":  # not a choice but a fault: the build must not look successful
                result = AssetResult(outcome=Outcome.FAILED, reason=asset.reason, error=str(exc), **base)
            else:
                result = AssetResult(outcome=Outcome.SKIPPED, reason=str(exc), error_code=exc.code, **base)
        except ApiError as exc:
            if isinstance(exc, (AuthError, QuotaError)):
                self._refuse(exc)
            result = AssetResult(outcome=Outcome.FAILED, reason=asset.reason, error=self.client.scrub(exc),
                                 error_code=exc.code, **base)
        except StarbuildError as exc:
            result = AssetResult(outcome=Outcome.FAILED, reason=asset.reason, error=self.client.scrub(exc), **base)
        except Exception as exc:  # a bug must not take the other assets down
            log.debug("internal error on %s", asset.name, exc_info=True)
            result = AssetResult(outcome=Outcome.FAILED, reason=asset.reason,
                                 error=self.client.scrub(f"internal error: {type(exc).__name__}: {exc}"), **base)
        if result.outcome == Outcome.FAILED and self.options.fail_fast:
            self.stopping = True
        self.ledger.asset_result(result, asset.credits)
        fut = done.get(asset.name)
        if fut is not None and not fut.done():
            fut.set_result(result)
        self.emit(result.outcome.value, asset.name, {"error": result.error, "credits": result.credits})
        return result

    async def _protocol(self, asset: PlannedAsset, done: dict[str, asyncio.Future]) -> AssetResult:
        spec = await self._with_parents(asset.spec, done)
        h = spec.spec_hash(self.options.placeholder)
        assert h is not None
        first = self._by_hash.get(h)
        if first is not None:  # another asset of this build has the same spec: share its one task
            shared: AssetResult = await first
            return AssetResult(outcome=shared.outcome, name=asset.name, model=spec.model, request=spec.request(),
                               spec_hash=h, reason=f"same spec as {shared.name}", task_id=shared.task_id,
                               files=named_files(asset.name, shared.files), paid=shared.paid)
        mine = self._by_hash[h] = asyncio.get_running_loop().create_future()
        try:
            result = await self._protocol_once(asset, spec, h)
        except BaseException as exc:
            if isinstance(exc, Exception):
                mine.set_exception(exc)
                mine.exception()  # retrieved: nobody may be waiting
            else:
                mine.cancel()
            raise
        mine.set_result(result)
        return result

    async def _protocol_once(self, asset: PlannedAsset, spec: GenerationSpec, h: str) -> AssetResult:
        request = spec.request()
        common = dict(name=asset.name, model=spec.model, request=request, spec_hash=h, reason=asset.reason)
        rec = self.journal.get(h)
        stored = rec is not None and rec.get("state") == STORED
        if stored and not asset.forced and all(self.store.verify(f["sha256"]) for f in rec.get("files", [])):
            return AssetResult(outcome=Outcome.CACHED, files=named_files(asset.name, rec["files"]),
                               task_id=rec.get("task_id"), credits=0.0, paid=rec.get("credits"), **common)
        if rec and rec.get("state") == SUBMITTED:
            self.emit("resume", asset.name, {"task_id": rec["task_id"]})
            try:
                await self.limit.acquire()
                hold = _Hold(self)
                self.limit.success()  # a task the server already holds counts as accepted
                try:
                    files = await self._poll_and_store(h, asset.name, request, rec["task_id"], rec.get("credits"),
                                                       spec.dims, hold=hold, take=spec.take)
                finally:
                    hold.release()
                return AssetResult(outcome=Outcome.RESUMED, files=files, task_id=rec["task_id"],
                                   credits=rec.get("credits") or 0.0, paid=rec.get("credits"), **common)
            except NotFoundError as exc:
                if not self.options.placeholder:
                    self._forget(h)  # gone for good: the next build submits it again
                    raise NotFoundError(f"task {rec['task_id']} of an earlier run has expired before it "
                                        f"could be downloaded; the next build submits it again ({exc})") from None
                self._forget(h)  # placeholders cost nothing: make it again now
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
            task, hold, credits = await self._submit(asset, spec, h, request)
            try:
                files = await self._poll_and_store(h, asset.name, request, task.id, credits, spec.dims,
                                                   first_wait=task.estimated_time, hold=hold, take=spec.take)
                return AssetResult(outcome=Outcome.BUILT, files=files, task_id=task.id,
                                   credits=credits or 0.0, paid=credits, **common)
            except TaskFailedError as exc:
                retryable = exc.code in RETRYABLE_FAILURES
                if retryable and attempts < self.options.retry_failed and not self.stopping:
                    attempts += 1
                    self.emit("retry", asset.name, {"code": exc.code})
                    continue
                raise
            finally:
                hold.release()

    async def _submit(self, asset: PlannedAsset, spec: GenerationSpec, h: str,
                      request: dict) -> tuple[Task, "_Hold", float | None]:
        """Submit under the limits: the task, its concurrency slot (held until the task ends) and the
        credits the API reserved (None when it did not say). A kind of image whose price is unknown
        goes one submission at a time, holding its pessimistic price (engine/prices.py)."""
        kind = price_kind(request)
        # Without a cap there is nothing to protect: no probing, full concurrency from the start.
        probe = await self.prices.claim(kind) if self.budget.limit is not None else False
        try:
            return await self._submit_attempts(asset, spec, h, request, kind)
        finally:
            if probe:
                self.prices.end_probe(kind)

    def _check_go(self) -> None:
        """Stop here when nothing more may be submitted."""
        if self.refusal:
            raise Stop(f"not submitted: {self.refusal}", code="refused")
        if self.halted:
            raise Stop(f"not submitted: {self.halted}", code="journal")
        if self.stopping:
            raise Stop("not submitted: an earlier asset failed and --fail-fast is set")

    def _hold_for(self, kind: tuple, asset: PlannedAsset, spec: GenerationSpec) -> float:
        """A learned price; else the kind's ceiling, or all the budget has left when that is less."""
        learned = self.prices.price(kind)
        if learned is not None:
            return learned
        ceiling = ceiling_credits(spec.api_body(["x"] * len(spec.inputs) or None))
        left = self.budget.left()
        return ceiling if left is None else max(asset.credits, min(ceiling, left))

    def _refuse(self, exc: ApiError) -> None:
        if self.refusal is None:
            what = "the account is out of credits" if isinstance(exc, QuotaError) else "the API refused the key"
            self.refusal = f"{what} ({exc})"

    def _forget(self, h: str) -> None:
        try:
            self.journal.forget(h)
        except StoreError as exc:
            log.warning("%s", exc)

    async def _submit_attempts(self, asset: PlannedAsset, spec: GenerationSpec, h: str, request: dict,
                               kind: tuple) -> tuple[Task, "_Hold", float | None]:
        """Each attempt is a single request, journaled as "submitting" only while it is on the wire: an
        answer that refuses it (429, 5xx) or a server that cannot be reached clears the record and
        frees the slot and the credits before the backoff, so a run killed while waiting leaves
        nothing of unknown outcome, and a 429 really lowers what is in flight. Every path releases
        the slot and the hold it took.
        """
        deadline = time.monotonic() + self.options.task_timeout
        policy = self.client.retry
        failures = rate_limited = 0  # refusals in a row: 5xx or unreachable, and 429
        while True:
            self._check_go()
            await self.limit.acquire()
            held = 0.0
            try:
                await self.rate.wait()
                self._check_go()
                amount = self._hold_for(kind, asset, spec)
                if not self.budget.try_hold(amount):
                    raise Stop(f"not submitted: it would take the credits reserved past max_credits "
                               f"({self.budget.limit:g})", code="budget")
                held = amount
                body = spec.api_body(*await self._input_urls(spec))
                watched = self.tracker.prepare(body)
                self.emit("submit", asset.name, {})
                ledger_id = self.ledger.reserve(asset.name, h, request, asset.credits)  # before the money moves
                self.journal.intend(h, asset.name, request)
            except BaseException as exc:
                self.budget.release(held)
                self.limit.release()
                if isinstance(exc, StoreError) and not self.halted:
                    self.halted = f"the journal cannot be written ({exc})"
                raise
            sending = asyncio.ensure_future(self.client.submit(body))
            try:
                task = await asyncio.shield(sending)
            except (RateLimitError, TransientApiError) as exc:  # refused or never sent: nothing in flight
                refused: TransientApiError | None = exc
            except ApiError as exc:
                if isinstance(exc, UnknownOutcomeError):
                    self.budget.settle(held, None)  # it may have been billed: count it
                    self.ledger.unknown(ledger_id, exc.code or "answer_lost")
                else:  # a definite refusal (400, 401, 402, 403, never sent ...)
                    self._forget(h)
                    self.budget.release(held)
                    self.ledger.refused(ledger_id, exc.code)
                    if isinstance(exc, (AuthError, QuotaError)):
                        self._refuse(exc)
                self.limit.release()
                raise
            except BaseException:
                # Stopped (Ctrl-C, SIGTERM) while the request is on the wire: its answer is still
                # awaited a few seconds, so an accepted task is journaled and resumed next time.
                # Without an answer the outcome is unknown: the "submitting" record stays.
                await self._settle_late(sending, asset, h, request, kind, held, watched, ledger_id)
                raise
            else:
                refused = None
            if refused is not None:
                self.ledger.refused(ledger_id, refused.code or "not_sent")
                self._forget(h)
                self.budget.release(held)
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
                delay = policy.delay(attempt - 1, refused.retry_after, self._rng)
                self.emit("backoff", asset.name, {"delay": delay, "rate_limited": isinstance(refused, RateLimitError)})
                await asyncio.sleep(delay)
                continue
            return self._accepted(asset, h, request, kind, task, held, watched, ledger_id)

    async def _settle_late(self, sending: asyncio.Future, asset: PlannedAsset, h: str, request: dict,
                           kind: tuple, held: float, watched=None, ledger_id: str = "") -> None:
        """Count a submission whose build was stopped while it was on the wire, by its late answer."""
        try:
            await asyncio.wait({sending}, timeout=LATE_ANSWER_SECONDS)
        except asyncio.CancelledError:  # stopped again: no more waiting
            pass
        if sending.done() and not sending.cancelled() and sending.exception() is None:
            self._accepted(asset, h, request, kind, sending.result(), held, watched, ledger_id)[1].release()
            return
        if not sending.done():
            sending.cancel()
        elif not sending.cancelled() and isinstance(sending.exception(), ApiError) and \
                not isinstance(sending.exception(), UnknownOutcomeError):
            self._forget(h)  # refused after all: nothing was billed
            self.budget.release(held)
            self.ledger.refused(ledger_id, sending.exception().code)
            self.limit.release()
            return
        self.budget.settle(held, None)
        self.limit.release()
        self.ledger.unknown(ledger_id, "interrupted")

    def _accepted(self, asset: PlannedAsset, h: str, request: dict, kind: tuple, task: Task,
                  held: float, watched=None, ledger_id: str = "") -> tuple[Task, "_Hold", float | None]:
        """Count and keep an accepted task: its slot and credits first, so nothing below can leak them."""
        if watched is not None:
            self.tracker.accepted(watched, task)
        credits = self.prices.learn(kind, task.credits_reserved)
        self.budget.settle(held, credits)
        self.limit.success()
        slot = _Hold(self)
        try:
            self.journal.submitted(h, asset.name, request, task.id, credits)
        except StoreError as exc:  # the task is ours all the same: poll and download it in this run
            self.halted = self.halted or f"the journal cannot be written ({exc})"
            log.warning("task %s of %s is not journaled (%s); it is still downloaded in this run",
                        task.id, asset.name, exc)
        self.ledger.settle(ledger_id, task.id, credits)
        # Said once the journal holds the task id: a build killed on reading "submitted" resumes it.
        self.journal.then(lambda: self.emit("submitted", asset.name, {
            "task_id": task.id, "credits": credits, "estimated_time": task.estimated_time}))
        return task, slot, credits

    async def _poll_and_store(self, h: str, name: str, request: dict, task_id: str, credits: float | None,
                              dims: tuple[int, int] | None, first_wait: float | None = None,
                              hold: "_Hold | None" = None, take: int | None = None) -> list[dict]:
        task = await self._wait_for(task_id, first_wait)
        if hold is not None:
            hold.release()  # the server is done with it: the next submission may start while we download
        if task.status == "failed":
            self.ledger.failed(name, h, request, task_id, credits, task.error_code)
            self._forget(h)
            raise TaskFailedError(f"task {task_id} failed: {task.error_code}: {task.error_message or 'no message'}",
                                  code=task.error_code)
        files = []
        for url in task.results or ():
            stamp = {"spec_hash": h, "model": str(request.get("model") or "")}
            if take is not None:
                stamp["take"] = str(take)
            files.append(await self._download(url, dims, stamp))
            self.links[files[-1]["sha256"]] = url
        files = named_files(name, files)
        record = {"name": name, "request": request, "task_id": task_id, "credits": credits,
                  "files": files, "placeholder": self.options.placeholder}
        try:
            self.journal.stored(h, record)
        except StoreError as exc:  # the image is in the object store; it is published all the same
            log.warning("%s: %s", name, exc)
        if self.remote is not None:
            self.remote.stored(h, record)
        if self.early is not None:
            self.early.stored(name, files)
        return files

    async def _wait_for(self, task_id: str, first_wait: float | None) -> Task:
        # Polls whose answers drip in slowly end at task_timeout too, not only after a poll returns.
        try:
            async with asyncio.timeout(self.options.task_timeout):
                return await self.tracker.wait(task_id, first_wait, self._look, parse_task,
                                                self.options.task_timeout)
        except TimeoutError:
            raise ApiError(f"task {task_id} did not finish within task_timeout ({self.options.task_timeout:g} s); "
                           "it stays journaled and the next build picks it up again", code="timeout") from None

    async def _look(self, task_id: str) -> Task:
        """One task query; its progress goes to the display."""
        task = await self.client.task(task_id)
        self.emit("progress", "", {"task_id": task_id, "progress": task.progress, "status": task.status})
        return task

    async def _download(self, url: str, dims: tuple[int, int] | None, stamp: dict[str, str] | None = None) -> dict:
        # The image carries where it came from (SPEC.md §8): stamped as it streams in, and stored
        # and hashed as stamped.
        if self._tmp is None:  # made once: the download makes it again should it go missing
            self._tmp = self.store.temp_dir()
        tmp, sha, size = await self.client.download(url, self._tmp,
                                                    transform=(lambda: PngStamp(stamp)) if stamp else None)
        try:
            # A small image is checked at once; a thread hop would cost more than the check.
            info = verify_image(tmp, dims) if size <= INLINE_VERIFY else await asyncio.to_thread(verify_image, tmp, dims)
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
