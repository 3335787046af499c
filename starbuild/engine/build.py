"""build()/abuild(): load → plan → run → publish → lock.

Reads top to bottom as the list of steps; each step is a named function below.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from starbuild.config.project import Project
from starbuild.errors import BudgetError, ConfigError, FrozenError, MissingKeyError, UsageError
from starbuild.store.lockfile import LOCK_NAME, Lock, read_lock, write_lock
from starbuild.engine.outcome import AssetResult, BuildReport, Outcome
from starbuild.plan.planner import Plan, PlannedAsset, Status, make_plan
from starbuild.engine.project_lock import LOCK_DIR, project_lock
from starbuild.engine.publishing import check_output, corrupt_assets
from starbuild.store.fileindex import FileIndex
from starbuild.models import learnable_credits
from starbuild.plan.nogc import paused_gc
from starbuild.store.objects import AssetDir, ObjectStore

if TYPE_CHECKING:  # the runner and its HTTP stack load only when there is something to send
    from starbuild.engine.runner import Emit

OFFLINE_BASE_URL = "http://starmagic.emulator"
OFFLINE_FILES_URL = "http://files.starmagic.emulator"  # the emulator's file service, a host of its own


@dataclass
class BuildOptions:
    """Everything a build may be told from the command line."""

    offline: bool = False
    frozen: bool = False
    force: tuple[str, ...] = ()
    select: tuple[str, ...] = ()
    max_credits: float | None = None
    concurrency: int | None = None
    retry_failed: int = 0
    retry_unknown: bool = False
    fail_fast: bool = False
    wait: bool = False
    poll_base: float = 0.5
    poll_cap: float = 10.0
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    specs: list | None = None  # already resolved specs, to skip resolving again
    tier: str | None = None  # build every image at this tier (``--tier``)
    review: Any = None  # a review.jobs.ReviewRequest: reroll or promote instead of a plain build
    retry: Any = None  # a RetryPolicy for the client; None for the default
    uploads: Any = None  # an UploadCache to share across builds (watch); None for a new one
    require_remote: bool = False  # remote cache errors are fatal instead of skipped
    pull_only: bool = False  # `cache pull`: restore lock-pinned images from the remote, never pay


def cache_dir(project: Project, env: dict[str, str] | None = None) -> Path:
    """The cache, journal and object store folder (STARBUILD_CACHE_DIR moves it)."""
    env = os.environ if env is None else env
    override = env.get("STARBUILD_CACHE_DIR")
    return Path(override).resolve() if override else project.root / ".starbuild"


def asset_dir(project: Project) -> AssetDir:
    """The versioned asset directory; refused (exit 2) when it leaves the project or goes through a symlink."""
    from starbuild.config.resolve import output_dir_problem

    problem = output_dir_problem(project)
    if problem:
        raise ConfigError(project.issue(("output", "dir"), problem))
    return AssetDir(project.root / project.config.output.dir)


def plan_project(project: Project, *, placeholder: bool = False, force=(), select=(), env=None,
                 specs=None, tier: str | None = None, remote: bool = True) -> Plan:
    """The plan for a project against its own lockfile, what is on disk, and the remote cache if any."""
    from starbuild.engine.known import cached_specs

    if specs is None and tier is not None:
        from starbuild.config.resolve import resolve_specs

        specs = resolve_specs(project, tier)
    with paused_gc():
        lock = read_lock(project.root / LOCK_NAME)
        cache = cache_dir(project, env)
        store = ObjectStore(cache)
        have = _have_files(store, asset_dir(project))
        with cached_specs(cache, store) as cached:
            plan = make_plan(project, lock, placeholder=placeholder, force=force, select=select, have=have,
                             specs=specs, cached=cached)
    if project.config.cache.remote is not None and remote and not placeholder:
        from starbuild.engine.remote_ops import remote_hits
        from starbuild.plan.planner import mark_in_remote

        mark_in_remote(plan, remote_hits(project, plan, env))
    return plan


def _have_files(store: ObjectStore, assets: AssetDir) -> Callable[[dict], bool]:
    current = assets.current()
    base = assets.version_path(current) if current else None
    stored = store.listing()  # one directory read per prefix instead of a stat per file

    def have(entry: dict) -> bool:
        # A processed asset publishes its outputs, not its source: the folder's file of the source's
        # path is another image, so only the delivered outputs there stand in for a missing source.
        records = entry.get("files") or []
        if "outputs" in entry and not all(f.get("sha256") in stored for f in records):
            records = entry["outputs"] or records
        for f in records:
            if not (f.get("sha256") in stored or (base is not None and (base / f.get("path", "")).is_file())):
                return False
        return True

    return have


def build(project: Project, options: BuildOptions | None = None, **kwargs: Any) -> BuildReport:
    """Synchronous wrapper of abuild."""
    out: list[BuildReport] = []

    from starbuild.engine.interrupt import stop_requested, stoppable

    async def main() -> None:
        # The report stays out of the coroutine's return value: asyncio.run formats the main task
        # (and so its result) when it restores the Ctrl-C handler, which costs seconds for a big one.
        with stoppable():
            out.append(await abuild(project, options, **kwargs))

    import asyncio  # here, not at the top: `plan` imports this module and needs no event loop

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        if stop_requested():  # SIGTERM: the same ending as Ctrl-C
            raise KeyboardInterrupt from None
        raise
    return out[0]


async def abuild(project: Project, options: BuildOptions | None = None, *, transport=None,
                 emit: Emit | None = None, emulator=None) -> BuildReport:
    """Build what is new or changed; publish a version and write the lockfile when anything changed."""
    options = options or BuildOptions()
    started = time.monotonic()
    cache = cache_dir(project, options.env)
    limit = _max_credits(project, options)
    with project_lock(project.root, cache, wait=options.wait):
        lock = read_lock(project.root / LOCK_NAME)
        store, assets = ObjectStore(cache), asset_dir(project)
        check_output(project, assets)  # before anything is paid for
        # Under the lock no other build of this cache is running: any temp file is a dead run's.
        store.clean_temp()
        assets.clean_partial()
        from starbuild.engine.journal import Journal
        from starbuild.engine.known import journal_lookup
        from starbuild.review.jobs import ReviewRequest, ReviewRun

        specs = options.specs
        if options.tier is not None and (specs is None or any(s.tier != options.tier for s in specs)):
            from starbuild.config.resolve import resolve_specs

            specs = resolve_specs(project, options.tier)
            import dataclasses

            options = dataclasses.replace(options, specs=specs)  # a re-plan after a pull keeps the tier
        journal = Journal(cache / "journal")
        remote = None
        try:
            try:
                with paused_gc():
                    plan = make_plan(project, lock, placeholder=options.offline, force=options.force,
                                     select=options.select, have=_have_files(store, assets), specs=specs,
                                     cached=journal_lookup(journal, store))
                remote = await _open_remote(project, options, store, emit)
                request = options.review or ReviewRequest(root=project.root)
                todo = plan.to_build()
                if emit:
                    emit("plan", "", {"total": len(todo), "offline": options.offline})
                pulled = []
                if not (request.reroll or request.promote):  # a review command makes only its own jobs
                    plan, pulled, todo = await _pull_plain(project, options, lock, plan, todo, store, assets,
                                                           remote, journal)
                review = ReviewRun(plan, lock, request)
                todo = review.jobs(todo)
                _refuse_frozen(options, todo)
                if options.frozen:
                    review.refuse_frozen()
                if options.pull_only:
                    report = BuildReport(results=_unpulled(todo))
                else:
                    _refuse_budget(limit, todo, journal, store)
                    report = await _run(project, options, todo, journal, store, transport, emulator, emit, lock,
                                        remote, pulled)
                report.results = review.fold(report.results) + pulled
                report.offline = options.offline
                order = {a.name: i for i, a in enumerate(plan.assets)}
                report.results = sorted(report.results + _unbuilt(plan, report), key=lambda r: order.get(r.name, 0))
                with paused_gc():  # the version's tens of thousands of dicts, walked for nothing otherwise
                    report.version = publish(project, lock, plan, report.results, store, assets, report.notes,
                                             finish=review.finish)
                if report.version is not None:
                    _mark_published(journal, project, report)
            finally:
                journal.close()
        finally:
            if remote is not None:
                if not options.offline:  # the team's ledger: this cache's lines, pushed whole
                    from starbuild.errors import StarbuildError
                    from starbuild.spend.remote import push_ledger

                    try:
                        await push_ledger(remote.cache, cache)
                    except StarbuildError:  # --require-remote: the failure is already the build's
                        pass
                await remote.close()  # pushes still under way finish here, after the publish
        report.notes += export_version(project, assets)
        if remote is not None:
            report.notes += remote.report_lines()
            report.remote_failed = options.require_remote and remote.cache.failed
    report.elapsed = time.monotonic() - started
    return report


async def _open_remote(project: Project, options: BuildOptions, store: ObjectStore, emit):
    """The shared remote cache of this build (None without one); --require-remote checks it first."""
    if project.config.cache.remote is None and not options.require_remote:
        return None
    from starbuild.engine.remote import open_build_remote

    remote = open_build_remote(project, options, store, emit)
    if remote is not None and options.require_remote:
        try:
            await remote.cache.probe()
        except BaseException:
            await remote.close()
            raise
    return remote


async def _pull(project, options, lock, plan, todo, store, assets, remote, journal):
    """(plan, pulled results, assets still to build) after pulling what the remote cache holds.

    A dependent's hash names its parent's image, so it is unknown while the parent is missing:
    once parents are pulled, the plan is made again and their dependents are pulled in turn.
    """
    pulled: list[AssetResult] = []
    while remote is not None:
        got, todo = await remote.pull_stale(todo)
        pulled += got
        if not got or all(a.spec_hash for a in todo):
            break
        done = {r.name for r in pulled}
        from starbuild.engine.known import journal_lookup

        plan = make_plan(project, lock, placeholder=options.offline, force=options.force, select=options.select,
                         have=_have_files(store, assets), specs=options.specs, cached=journal_lookup(journal, store))
        todo = [a for a in plan.to_build() if a.name not in done]
    return plan, pulled, todo


async def _pull_plain(project, options, lock, plan, todo, store, assets, remote, journal):
    """_pull for the assets without takes: an asset with takes is made take by take, never pulled whole."""
    has_takes = {a.name for a in todo if a.spec is not None and a.spec.takes}
    plan, pulled, rest = await _pull(project, options, lock, plan, [a for a in todo if a.name not in has_takes],
                                     store, assets, remote, journal)
    return plan, pulled, [a for a in rest if a.name not in has_takes] + \
        [a for a in plan.to_build() if a.name in has_takes]


def _unpulled(todo: list[PlannedAsset]) -> list[AssetResult]:
    """`cache pull` never pays: what it could not pull is reported."""
    from starbuild.engine.remote import pinned

    out = []
    for a in todo:
        common = dict(spec_hash=a.spec_hash, model=a.spec.model if a.spec else None,
                      request=a.spec.request() if a.spec else None)
        if pinned(a):
            out.append(AssetResult(a.name, Outcome.FAILED, a.reason, error="missing everywhere: not in the local "
                                   "store, the asset folder or the remote cache", **common))
        else:
            out.append(AssetResult(a.name, Outcome.SKIPPED, f"{a.reason}; not in the lockfile's images, run "
                                   "`starbuild build`", **common))
    return out


def _refuse_frozen(options: BuildOptions, todo: list[PlannedAsset]) -> None:
    if options.frozen and todo:
        names = ", ".join(a.name for a in todo[:5]) + (" ..." if len(todo) > 5 else "")
        raise FrozenError(f"--frozen: {len(todo)} asset(s) are stale ({names}); run `starbuild build` "
                          "and commit starbuild.lock")


def _max_credits(project: Project, options: BuildOptions) -> float | None:
    """The budget: --max-credits, else provider.max_credits; a finite number >= 0 or None."""
    if options.max_credits is not None:
        if not math.isfinite(options.max_credits) or options.max_credits < 0:
            raise UsageError(f"--max-credits {options.max_credits}: must be a finite number of credits, 0 or more")
        return float(options.max_credits)
    limit = project.config.provider.max_credits
    if limit is not None and not math.isfinite(limit):
        raise ConfigError(project.issue(("provider", "max_credits"), f"{limit} is not a finite number of credits"))
    return limit


def _refuse_budget(limit: float | None, todo: list[PlannedAsset], journal, store: ObjectStore) -> None:
    if limit is None:
        return
    # Tasks already journaled as submitted cost nothing more, nor do stored results that will be
    # reused (not forced); every other spec counts once, however many assets share it.
    fresh, seen = [], set()
    for a in todo:
        if a.spec_hash is not None and a.spec_hash in seen:
            continue
        seen.add(a.spec_hash)
        rec = journal.get(a.spec_hash) if a.spec_hash else None
        state = rec.get("state") if rec else None
        if state == "submitted" or (state == "stored" and not a.forced and
                                    all(store.has(f.get("sha256", "")) for f in rec.get("files") or [])):
            continue
        fresh.append(a)
    estimate = round(sum(a.credits for a in fresh), 4)
    if estimate > limit + 1e-9:
        raise BudgetError(f"the build would reserve about {estimate:g} credits for {len(fresh)} image task(s), "
                          f"over max_credits {limit:g}; raise --max-credits or build fewer assets by name")


def _api_key(project: Project, options: BuildOptions) -> str:
    var = project.config.provider.api_key_env
    key = options.env.get(var, "").strip()
    if not key:
        raise MissingKeyError(f"no API key: set the environment variable {var}, or run "
                              "`starbuild build --offline` to use the built-in emulator")
    return key


async def _run(project, options, todo, journal, store, transport, emulator, emit, lock, remote=None,
               pulled=()) -> BuildReport:
    provider = project.config.provider
    # Paid tasks of earlier runs that are no longer planned are still fetched (never with --frozen,
    # which makes no request at all).
    planned = {a.spec_hash for a in todo}
    orphans = [] if options.frozen else [
        (h, rec) for h, rec in journal.inflight() if rec.get("state") == "submitted" and h not in planned]
    _ledger_pulled(project, options, pulled)
    if not todo and not orphans:
        return BuildReport(results=[])
    import asyncio

    from starbuild.api.client import StarMagicClient
    from starbuild.engine.prices import PriceBook
    from starbuild.engine.runner import RunOptions, Runner
    from starbuild.plan.planner import learned_prices

    if options.offline:
        if transport is None:
            from starbuild.api.client import in_process_transport
            from starbuild.emulator import Emulator, EmulatorConfig

            emulator = emulator or Emulator(EmulatorConfig(public_url=OFFLINE_BASE_URL,
                                                           files_url=OFFLINE_FILES_URL, fresh_samples=True))
            transport = in_process_transport(emulator)
        base_url, files_url = OFFLINE_BASE_URL, OFFLINE_FILES_URL
        key = "offline"
    else:
        from starbuild.config.urls import api_urls

        key = _api_key(project, options)
        base_url, files_url = api_urls(provider.base_url, provider.files_url, options.env)
        from starbuild.engine.preflight import check_sendable

        check_sendable(project, options.env, key)  # what cannot be sent is refused before paying
    run_opts = RunOptions(
        # Placeholders are free and local: an offline build does not wait for rate_limit.
        concurrency=options.concurrency or provider.concurrency,
        rate_per_second=None if options.offline else provider.submissions_per_second(),
        max_credits=_max_credits(project, options), task_timeout=provider.task_timeout,
        retry_failed=options.retry_failed, fail_fast=options.fail_fast, placeholder=options.offline,
        retry_unknown=options.retry_unknown, poll_base=options.poll_base, poll_cap=options.poll_cap)
    # No single request may outlast the time a whole task is given.
    deadlines = dict(deadline=min(60.0, provider.task_timeout), download_deadline=min(300.0, provider.task_timeout))
    async with contextlib.AsyncExitStack() as stack:
        if provider.callback is not None and not options.offline:  # SPEC.md §11
            from starbuild.api.callbacks import CallbackHub

            run_opts.callbacks = await stack.enter_async_context(CallbackHub(provider.callback))
        client = await stack.enter_async_context(
            StarMagicClient(base_url, key, files_url=files_url, transport=transport, retry=options.retry,
                            **deadlines))
        emit = emit or (lambda *a: None)
        runner = Runner(client, journal, store, project.root, run_opts, remote.events(emit) if remote else emit)
        runner.prices = PriceBook(learned_prices(lock))
        runner.remote = remote
        if options.uploads is not None:
            runner.uploads = options.uploads
        if not options.offline:  # placeholders cost nothing: only paid builds are on the ledger
            from starbuild.spend.ledger import open_ledger

            runner.ledger = open_ledger(cache_dir(project, options.env), project.root, options.env)
        from starbuild.post.early import EarlyPlaceholders

        runner.early = EarlyPlaceholders(project, store, {a.name: a.spec.template for a in todo if a.spec})
        try:
            adopted = [asyncio.create_task(runner.adopt(h, rec)) for h, rec in orphans]
            results = await runner.run(todo, pulled)
            kept = sum(await asyncio.gather(*adopted))
            await runner.early.finish()
        finally:
            runner.ledger.close()
            runner.early.close()
        return BuildReport(results=results, credits_reserved=runner.budget.reserved, requests=client.requests,
                           adopted=kept, stopped=runner.stop_reason(results))


def _ledger_pulled(project: Project, options: BuildOptions, pulled) -> None:
    """Images pulled from the remote cache instead of paid for are cache hits on the ledger, worth
    what they cost whoever paid (a --frozen build or `cache pull` would never have paid: none)."""
    if not pulled or options.offline or options.frozen or options.pull_only:
        return
    from starbuild.spend.ledger import open_ledger

    ledger = open_ledger(cache_dir(project, options.env), project.root, options.env)
    try:
        for result in pulled:
            ledger.asset_result(result, 0.0)
    finally:
        ledger.close()


def _unbuilt(plan: Plan, report: BuildReport) -> list[AssetResult]:
    """Results for the assets the run did not touch: unchanged, removed, or not selected."""
    ran = {r.name for r in report.results}
    out = []
    for a in plan.assets:
        if a.name in ran:
            continue
        if a.status == Status.REMOVED:
            if plan.selected is None:
                out.append(AssetResult(a.name, Outcome.REMOVED, a.reason, a.spec_hash))
            continue
        prev = a.previous or {}
        common = dict(spec_hash=a.spec_hash, model=a.spec.model if a.spec else None,
                      request=a.spec.request() if a.spec else None)
        if a.status == Status.UNCHANGED:
            out.append(AssetResult(a.name, Outcome.CACHED, "up to date", files=prev.get("files", []), **common))
        else:
            out.append(AssetResult(a.name, Outcome.SKIPPED, "not selected", **common))
    return out


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(result: AssetResult, placeholder: bool, take: int) -> dict[str, Any]:
    # ``credits`` is what the API reserved for the task that made the image (what prices are
    # learned from): null when it never said, never 0 for a cache hit, never NaN.
    entry = {"spec_hash": result.spec_hash, "request": result.request, "task_id": result.task_id,
             "files": result.files, "credits": learnable_credits(result.paid), "placeholder": placeholder,
             "created": _now()}
    if take:
        entry["take"] = take
    return entry


def next_lock(plan: Plan, lock: Lock, results: list[AssetResult]) -> dict[str, dict]:
    """The lockfile's assets after this build: successes replace, failures keep what was there."""
    by_name = {r.name: r for r in results}
    assets: dict[str, dict] = {}
    for a in plan.assets:
        r = by_name.get(a.name)
        if a.status == Status.REMOVED:
            if r is None or r.outcome != Outcome.REMOVED:
                assets[a.name] = lock.assets[a.name]
            continue
        if r is not None and r.outcome == Outcome.PULLED and (a.previous or {}).get("spec_hash") == r.spec_hash:
            assets[a.name] = lock.assets[a.name]  # lock-pinned images restored: the entry stays as it was
        elif r is not None and r.outcome in (Outcome.BUILT, Outcome.RESUMED, Outcome.PULLED) or (
                r is not None and r.outcome == Outcome.CACHED and a.stale):
            assets[a.name] = _entry(r, plan.placeholder, a.spec.take if a.spec else 0)
        elif a.name in lock.assets:
            assets[a.name] = lock.assets[a.name]
    return assets


def _fail_processing(results: list[AssetResult], failures: dict[str, str]) -> None:
    """An asset (or atlas) whose processing failed is a failed result, whatever its generation did."""
    by_name = {r.name: r for r in results}
    for name, reason in failures.items():
        if name in by_name:
            by_name[name].outcome, by_name[name].reason, by_name[name].error = Outcome.FAILED, reason, reason
        else:
            results.append(AssetResult(name, Outcome.FAILED, reason, error=reason))


def publish(project: Project, lock: Lock, plan: Plan, results: list[AssetResult], store: ObjectStore,
            assets: AssetDir, notes: list[str] | None = None,
            finish: Callable[[dict], dict] | None = None) -> int | None:
    """Write a new version and the lockfile when anything changed; the version number, or None."""
    new_assets = next_lock(plan, lock, results)
    if finish is not None:
        new_assets = finish(new_assets)
    current = assets.current()
    if new_assets == lock.assets and not plan.post and (current == lock.asset_version or not new_assets):
        return None
    return write_version(project, lock, new_assets, store, assets, plan=plan, results=results, notes=notes)


def write_version(project: Project, lock: Lock, new_assets: dict[str, dict], store: ObjectStore,
                  assets: AssetDir, *, plan: Plan | None = None, results: list[AssetResult] | None = None,
                  notes: list[str] | None = None) -> int | None:
    """Publish ``new_assets`` (processed by their post steps) as the next version and write the
    lockfile; the version number, or None when nothing changed. Without a plan (a pick, an accept)
    the post steps come from the config."""
    from starbuild.post.deliver import deliver, deliver_version

    current = assets.current()
    base = assets.version_path(current) if current else None
    index = FileIndex.load(project.root / LOCK_DIR)
    corrupt = corrupt_assets(new_assets, store, base, index)
    for name in corrupt:  # never published: the next build makes it again
        if notes is not None:
            notes.append(f"{name}: its stored image no longer matches its sha256 (edited or damaged on disk); "
                         "it is left out of this version and the next build makes it again")
        if not (lock.assets.get(name) or {}).get("outputs"):
            del new_assets[name]  # (with processed files, processing finds no source and keeps them)
    if plan is not None:
        delivery = deliver_version(project, plan, lock, new_assets, store, base)
    else:
        delivery = deliver(project, new_assets, _templates(project), store, store.root.parent, base, lock.atlases,
                           previous=lock.assets)
    _fail_processing(results if results is not None else [], delivery.failures)
    new_assets = delivery.entries
    if delivery.processed and notes is not None:
        notes.append(f"post: processed {delivery.processed} file(s), 0 credits")
    if new_assets == lock.assets and delivery.atlases == lock.atlases and (
            current == lock.asset_version or not new_assets):
        return None
    number = max([lock.asset_version, *assets.versions()], default=0) + 1
    if new_assets == lock.assets and lock.asset_version and lock.asset_version not in assets.versions():
        number = lock.asset_version  # a fresh clone restored as locked: same version, same lockfile
    manifest = {"asset_version": number, "created": _now(), "assets": new_assets}
    if delivery.atlases:
        manifest["atlases"] = delivery.atlases
    images = delivery.images_file(number)
    try:
        assets.publish(number, delivery.files + [images], manifest, index)
    finally:
        images[1].unlink(missing_ok=True)
    write_lock(project.root / LOCK_NAME, Lock(asset_version=number, assets=new_assets, atlases=delivery.atlases))
    assets.prune(project.config.output.keep)
    return number


def _templates(project: Project) -> dict[str, str]:
    """Each asset's image template, for the post steps of a version written outside a build."""
    from starbuild.config.resolve import resolve_specs

    return {spec.name: spec.template for spec in resolve_specs(project)}


def export_version(project: Project, assets: AssetDir) -> list[str]:
    """Mirror the current version into output.export (a plain folder for engines), if set: after
    every command that changes ``current`` (build, pick, accept, rollback). Notes for the user."""
    if not project.config.output.export:
        return []
    from starbuild.store.export import export_current

    exported = export_current(project.root, project.config.output.export, assets)
    if exported and exported.skipped:
        return [f"export skipped {len(exported.skipped)} file(s) behind symlinks: " + ", ".join(exported.skipped[:5])]
    return []


def _mark_published(journal, project: Project, report: BuildReport) -> None:
    from starbuild.errors import StoreError

    try:
        journal.mark_published({r.spec_hash for r in report.results if r.spec_hash and r.outcome.ok})
    except StoreError as exc:  # gc then keeps these images a while longer: safe
        report.notes.append(str(exc))
