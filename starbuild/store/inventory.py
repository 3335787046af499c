"""What is built: ``ls``, ``versions``, ``rollback`` and ``gc``. No API calls here."""

from __future__ import annotations

from typing import Any

from starbuild.engine.build import asset_dir, cache_dir
from starbuild.config.project import Project
from starbuild.errors import UsageError
from starbuild.store.lockfile import LOCK_NAME, Lock, read_lock, write_lock
from starbuild.store.objects import ObjectStore


def list_assets(project: Project) -> dict[str, Any]:
    """The lockfile's assets with their files and provenance."""
    lock = read_lock(project.root / LOCK_NAME)
    out = []
    for name, entry in sorted(lock.assets.items()):
        out.append({"name": name, "spec_hash": entry.get("spec_hash"), "model": (entry.get("request") or {}).get("model"),
                    "task_id": entry.get("task_id"), "created": entry.get("created"),
                    "placeholder": bool(entry.get("placeholder")), "credits": entry.get("credits"),
                    "files": entry.get("files") or [],
                    **({"outputs": entry["outputs"]} if "outputs" in entry else {})})
    return {"asset_version": lock.asset_version, "assets": out}


def list_versions(project: Project) -> list[dict[str, Any]]:
    assets = asset_dir(project)
    current = assets.current()
    rows = []
    for v in assets.versions():
        manifest = assets.manifest(v)
        rows.append({"version": v, "current": v == current, "created": manifest.get("created"),
                     "assets": len(manifest.get("assets") or {})})
    return rows


def rollback(project: Project, version: int) -> None:
    """Make a version current and write the lockfile its manifest records."""
    from starbuild.engine.project_lock import project_lock

    assets = asset_dir(project)
    if version not in assets.versions():
        have = ", ".join(str(v) for v in assets.versions()) or "none"
        raise UsageError(f"there is no version {version} (versions: {have})")
    manifest = assets.manifest(version)
    if not isinstance(manifest.get("assets"), dict):
        raise UsageError(f"version {version} has no readable manifest.json; it cannot be restored")
    with project_lock(cache_dir(project)):
        assets.set_current(version)
        write_lock(project.root / LOCK_NAME, Lock(asset_version=version, assets=manifest["assets"],
                                                  atlases=manifest.get("atlases") or {}))
        if project.config.output.export:  # the engine's copy follows current
            from starbuild.store.export import export_current

            export_current(project.root, project.config.output.export, assets)


def _shas(entry: dict) -> set[str]:
    """Every object an entry needs: its generated files and the processed outputs published from them."""
    return {f["sha256"] for key in ("files", "outputs") for f in entry.get(key) or [] if isinstance(f, dict)}


def collect_garbage(project: Project) -> tuple[int, int]:
    """Delete objects and journal records that no version, lockfile or unfinished task needs."""
    from starbuild.engine.journal import Journal
    from starbuild.engine.project_lock import project_lock

    cache = cache_dir(project)
    store = ObjectStore(cache)
    assets = asset_dir(project)
    with project_lock(cache):
        keep: set[str] = set()
        lock = read_lock(project.root / LOCK_NAME)
        for entry in [*lock.assets.values(), *lock.atlases.values()]:
            keep.update(_shas(entry))
        for v in assets.versions():
            manifest = assets.manifest(v)
            for entry in [*(manifest.get("assets") or {}).values(), *(manifest.get("atlases") or {}).values()]:
                keep.update(_shas(entry))
        assets.clean_partial()
        journal = Journal(cache / "journal")
        try:
            for h, rec in journal.stored_items():
                if not {f["sha256"] for f in rec.get("files", [])} & keep:
                    journal.forget_stored(h)
        finally:
            journal.close()
        removed = freed = 0
        for sha in sorted(store.listing()):
            if sha not in keep:
                freed += store.path(sha).stat().st_size
                store.remove(sha)
                removed += 1
        store.clean_temp()
        from starbuild.store.derived import DerivedIndex

        DerivedIndex(cache, store).prune()
    return removed, freed
