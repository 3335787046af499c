"""What is built: ``ls``, ``versions``, ``rollback`` and ``gc``. No API calls here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from starbuild.engine.build import asset_dir, cache_dir, export_version
from starbuild.config.project import Project
from starbuild.errors import UsageError
from starbuild.store.fileindex import FileIndex, restore_version
from starbuild.store.lockfile import LOCK_NAME, Lock, read_lock, write_lock
from starbuild.store.objects import ObjectStore

log = logging.getLogger(__name__)


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


def rollback(project: Project, version: int) -> list[str]:
    """Make a version current and write the lockfile its manifest records; the paths of files that
    were edited in place and could not be restored (their object is gone from the store too)."""
    from starbuild.engine.project_lock import LOCK_DIR, project_lock

    assets = asset_dir(project)
    if version not in assets.versions():
        have = ", ".join(f"v{v:04d}" for v in assets.versions()) or "none"
        raise UsageError(f"there is no version v{version:04d} (versions: {have})")
    manifest = assets.manifest(version)
    if not isinstance(manifest.get("assets"), dict):
        raise UsageError(f"version {version} has no readable manifest.json; it cannot be restored")
    from starbuild.engine.publishing import check_output

    with project_lock(project.root, cache_dir(project)):
        check_output(project, assets)  # a `current` copied into a real folder is repaired or refused
        index = FileIndex.load(project.root / LOCK_DIR)
        lost = restore_version(assets.version_path(version), manifest, ObjectStore(cache_dir(project)), index)
        index.save(prune=False)
        assets.set_current(version)
        write_lock(project.root / LOCK_NAME, Lock(asset_version=version, assets=manifest["assets"],
                                                  atlases=manifest.get("atlases") or {}))
        for note in export_version(project, assets):  # the engine's copy follows current
            log.warning("%s", note)
    return lost


def _shas(entry: dict) -> set[str]:
    """Every object an entry needs: its generated files and the processed outputs published from them,
    its candidates and the draft it was promoted from."""
    from starbuild.review.entries import referenced_shas

    return {f["sha256"] for key in ("files", "outputs") for f in entry.get(key) or [] if isinstance(f, dict)} \
        | referenced_shas(entry)


@dataclass
class Garbage:
    """What gc removes (or, with --dry-run, would remove)."""

    objects: list[tuple[str, int]] = field(default_factory=list)  # (sha256, bytes)
    records: list[str] = field(default_factory=list)  # journal names of published results nobody needs
    kept_unpublished: int = 0  # paid results no version has published yet: never dropped

    @property
    def freed(self) -> int:
        return sum(size for _, size in self.objects)


def collect_garbage(project: Project, *, dry_run: bool = False) -> Garbage:
    """Delete objects and journal records that no version, lockfile or unfinished task needs.

    A stored result that no version has published yet (a killed or failed publish, a task adopted
    after its asset was edited away) is a paid image nobody has: it and its objects are kept.
    """
    from starbuild.engine.journal import Journal
    from starbuild.engine.project_lock import LOCK_DIR, project_lock

    cache = cache_dir(project)
    store = ObjectStore(cache)
    assets = asset_dir(project)
    garbage = Garbage()
    with project_lock(project.root, cache):
        keep = _referenced(project, assets)
        if not dry_run:
            assets.clean_partial()
        journal = Journal(cache / "journal")
        try:
            doomed, seen_published = [], set()
            for h, rec in journal.stored_items():
                files = rec.get("files") if isinstance(rec.get("files"), list) else []
                shas = {f.get("sha256") for f in files if isinstance(f, dict)}
                if not rec.get("published") and shas & keep:
                    seen_published.add(h)  # in a version now (a record of an earlier starbuild)
                elif not rec.get("published"):
                    keep |= shas
                    garbage.kept_unpublished += 1
                elif not shas & keep:
                    doomed.append((h, rec))
            garbage.records = [str(rec.get("name") or h) for h, rec in doomed]
            if not dry_run:
                journal.mark_published(seen_published)
                for h, _ in doomed:
                    journal.forget_stored(h)
        finally:
            journal.close()
        for sha in sorted(store.listing()):
            if sha not in keep:
                try:
                    garbage.objects.append((sha, store.path(sha).stat().st_size))
                except OSError:
                    continue
                if not dry_run:
                    store.remove(sha)
        if not dry_run:
            store.clean_temp()
            from starbuild.store.derived import DerivedIndex

            DerivedIndex(cache, store).prune()
    return garbage


def _referenced(project: Project, assets) -> set[str]:
    keep: set[str] = set()
    lock = read_lock(project.root / LOCK_NAME)
    for entry in [*lock.assets.values(), *lock.atlases.values()]:
        keep.update(_shas(entry))
    for v in assets.versions():
        manifest = assets.manifest(v)
        for entry in [*(manifest.get("assets") or {}).values(), *(manifest.get("atlases") or {}).values()]:
            keep.update(_shas(entry))
    return keep
