"""The remote cache outside a build: what `plan` and `cache status` show, and `cache push`."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from typing import Any

from starbuild.errors import RefusedError, StarbuildError, UsageError
from starbuild.plan.planner import Plan, PlannedAsset
from starbuild.store.remote.cache import RemoteCache

log = logging.getLogger("starbuild")


def _open(project, env: dict[str, str] | None, require: bool = True) -> RemoteCache:
    from starbuild.store.remote import open_remote

    cache = open_remote(project, env, require=require)
    if cache is None:
        raise UsageError("no remote cache: add cache.remote to the config (SPEC.md §7), or check that its mode "
                         "(or STARBUILD_REMOTE_CACHE) is not off")
    return cache


async def _pinned_in_remote(cache: RemoteCache, asset: PlannedAsset) -> bool:
    """The lockfile names this spec's images and the remote holds every one (a build fetches them by hash)."""
    from starbuild.engine.remote import pinned

    if not pinned(asset):
        return False
    files = (asset.previous or {})["files"]
    return all(await asyncio.gather(*(cache.has_object(f["sha256"]) for f in files)))


async def _available(cache: RemoteCache, asset: PlannedAsset) -> bool:
    """Whether a build would pull this stale asset instead of paying for it."""
    if asset.forced or not asset.spec_hash:
        return False
    return await _pinned_in_remote(cache, asset) or await cache.has_result(asset.spec_hash)


async def _dependent_hits(cache: RemoteCache, todo: list[PlannedAsset], hits: set[str]) -> dict[str, str]:
    """``@asset`` dependents the remote holds once their parents are pulled: name -> the spec hash a
    build gives each when its parents' images are known (as runner._with_parents fills it). A
    dependent of a parent that must be paid for cannot be known before that image exists."""
    from starbuild.plan.spec import InputRef

    by_name = {a.name: a for a in todo}
    hashes = {a.name: a.spec_hash for a in todo if a.name in hits and a.spec_hash}
    images: dict[str, str | None] = {}
    found: dict[str, str] = {}

    async def image(name: str) -> str | None:
        """The sha256 of the first image pulling this parent brings (as RemoteBuild._pull takes it)."""
        if name not in images:
            if await _pinned_in_remote(cache, by_name[name]):
                files = by_name[name].previous["files"]
            else:
                files = ((await cache.find_result(hashes[name])) or {}).get("files") or []
            images[name] = files[0].get("sha256") if files and isinstance(files[0], dict) else None
        return images[name]

    for a in todo:  # parents come before their dependents (order_by_dependencies)
        if a.spec is None or a.spec_hash or a.forced or a.name in hits:
            continue
        refs = a.spec.inputs + ((a.spec.mask,) if a.spec.mask else ())
        parents = {r.ref for r in refs if r.kind == "asset" and r.sha256 is None}
        if not parents or not parents <= hashes.keys():
            continue
        shas = {p: await image(p) for p in sorted(parents)}
        if None in shas.values():
            continue

        def fill(ref: InputRef) -> InputRef:
            return InputRef("asset", ref.ref, shas[ref.ref]) if ref.kind == "asset" and ref.sha256 is None else ref

        spec = a.spec.with_inputs(tuple(fill(r) for r in a.spec.inputs), fill(a.spec.mask) if a.spec.mask else None)
        h = spec.spec_hash(False)
        if h and await cache.has_result(h):
            hashes[a.name] = found[a.name] = h
    return found


def remote_hits(project, plan: Plan, env: dict[str, str] | None) -> set[str]:
    """Names of the stale assets the remote cache holds (empty when it cannot be asked)."""
    try:
        asyncio.get_running_loop()
        return set()  # called from async code: the build itself will look
    except RuntimeError:
        pass
    todo = plan.to_build()
    if not todo or plan.placeholder:
        return set()

    async def go() -> set[str]:
        cache = _open(project, env, require=False)
        try:
            found = await asyncio.gather(*(_available(cache, a) for a in todo))
            hits = {a.name for a, hit in zip(todo, found) if hit}
            hits |= (await _dependent_hits(cache, todo, hits)).keys()
            if cache.failed:
                log.warning("remote cache: %s", cache.stats.last_error)
            return hits
        finally:
            await cache.close()

    try:
        return asyncio.run(go())
    except StarbuildError as exc:
        log.warning("remote cache: %s", exc)
        return set()


async def _status_of(cache: RemoteCache, asset: PlannedAsset) -> dict[str, Any]:
    row = {"name": asset.name, "spec_hash": asset.spec_hash, "credits": 0.0}
    if await _available(cache, asset):
        return {**row, "action": "pull", "detail": "in the remote cache"}
    lease = await cache.find_lease(asset.spec_hash) if asset.spec_hash else None
    if lease is not None and lease.live(cache.wall()):
        left = lease.expires - cache.wall()
        return {**row, "action": "wait", "detail": f"being made by {lease.holder} (lease for {left:.0f} s more)"}
    return {**row, "action": "pay", "credits": asset.credits, "detail": asset.reason}


def remote_status(project, plan: Plan, env: dict[str, str] | None) -> dict[str, Any]:
    """What the next build would pull, wait for, or pay for; and what is up to date here."""
    todo = plan.to_build()

    async def go() -> list[dict]:
        cache = _open(project, env)
        try:
            rows = list(await asyncio.gather(*(_status_of(cache, a) for a in todo)))
            chained = await _dependent_hits(cache, todo, {r["name"] for r in rows if r["action"] == "pull"})
            return [{**r, "spec_hash": chained[r["name"]], "credits": 0.0, "action": "pull",
                     "detail": "in the remote cache"} if r["name"] in chained else r for r in rows]
        finally:
            await cache.close()

    rows = asyncio.run(go())
    chosen = [a for a in plan.assets if a.spec and (plan.selected is None or a.name in plan.selected)]
    local = sum(1 for a in chosen if not a.stale)
    counts = {k: sum(1 for r in rows if r["action"] == k) for k in ("pull", "wait", "pay")}
    return {"assets": rows, "summary": {"local": local, **counts,
                                        "credits": round(sum(r["credits"] for r in rows), 4)}}


def _entries(project, names: tuple[str, ...], env) -> list[tuple[str, str, dict]]:
    """(name, spec_hash, record) of every real image this machine holds: the lockfile's, then the journal's."""
    from starbuild.engine.build import cache_dir
    from starbuild.engine.journal import Journal
    from starbuild.store.lockfile import LOCK_NAME, read_lock

    lock = read_lock(project.root / LOCK_NAME)
    out = []
    for name, entry in sorted(lock.assets.items()):
        if names and not any(fnmatch.fnmatchcase(name, pat) for pat in names):
            continue
        if entry.get("spec_hash") and not entry.get("placeholder"):
            out.append((name, entry["spec_hash"], entry))
    if names:
        return out
    journal = Journal(cache_dir(project, env) / "journal")
    try:
        seen = {h for _, h, _ in out}
        out += [(rec.get("name", "?"), h, rec) for h, rec in journal.stored_items()
                if h not in seen and not rec.get("placeholder")]
    finally:
        journal.close()
    return out


def push_local(project, names: tuple[str, ...], env: dict[str, str] | None) -> dict[str, int]:
    """Upload what the local store (or the current asset version) holds; counts of what happened."""
    from starbuild.engine.build import asset_dir, cache_dir
    from starbuild.engine.remote import BuildRemote
    from starbuild.store.objects import ObjectStore

    entries = _entries(project, names, env)
    store = ObjectStore(cache_dir(project, env))
    assets = asset_dir(project)
    current = assets.current()
    base = assets.version_path(current) if current else None

    async def go() -> dict[str, int]:
        cache = _open(project, env)
        if not cache.settings.writable:
            await cache.close()
            raise RefusedError(f"the remote cache is read-only here ({cache.settings.why}); set "
                               "STARBUILD_REMOTE_CACHE=read-write to push")
        remote = BuildRemote(cache, store, placeholder=False, frozen=False, lease_ttl=0, emit=lambda *a: None)
        counts = {"new": 0, "same": 0, "alt": 0, "missing": 0, "skipped": 0}
        try:
            for _name, spec_hash, record in entries:
                sources = {f["sha256"]: base / f["path"] for f in record.get("files") or []
                           if base is not None and not store.has(f["sha256"])}
                counts[await remote.push_record(spec_hash, record, sources)] += 1
        finally:
            await remote.close()
        counts["uploads"] = cache.stats.uploads
        return counts

    return asyncio.run(go())
