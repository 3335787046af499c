"""The review commands as library functions: pick, accept, reroll, promote.

``pick`` and ``accept`` change only the lockfile (and publish a version showing the change); they
call no API. ``reroll`` and ``promote`` are builds with review jobs instead of the plan's work.
The gallery's buttons call these same functions.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from starbuild.config.project import Project
from starbuild.engine.build import (BuildOptions, asset_dir, build, cache_dir, export_version, plan_project,
                                    write_version)
from starbuild.engine.outcome import BuildReport
from starbuild.engine.project_lock import project_lock
from starbuild.errors import RefusedError, UsageError
from starbuild.plan.planner import Status
from starbuild.review.entries import STRUCTURAL, candidate, candidates, field_changes
from starbuild.review.identity import stamp
from starbuild.review.jobs import ReviewRequest
from starbuild.store.lockfile import LOCK_NAME, read_lock
from starbuild.store.objects import ObjectStore

log = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{64}$")


def pick(project: Project, name: str, take: int) -> dict[str, Any]:
    """Publish candidate ``take`` of an asset and record the pick; no API call. Returns the pick."""
    with project_lock(project.root, cache_dir(project)):
        lock = read_lock(project.root / LOCK_NAME)
        entry = lock.assets.get(name)
        if entry is None:
            raise UsageError(f"{name!r} is not in starbuild.lock; build it first (`starbuild plan` lists assets)")
        chosen = candidate(entry, take)
        if chosen is None:
            have = ", ".join(str(c["take"]) for c in candidates(entry))
            raise UsageError(f"{name} has no take {take}" + (f" (takes: {have})" if have else
                             "; give it `takes: N` in starbuild.yaml or run `starbuild reroll` first"))
        store = ObjectStore(cache_dir(project))
        files = _checked_files(name, chosen["files"])
        missing = [f["path"] for f in files if not store.has(f["sha256"])]
        if missing and files != entry.get("files"):
            raise RefusedError(f"take {take} of {name} is not in the local cache ({', '.join(missing)}); "
                               "pull it from the team's cache or build it again")
        record = {"take": take, "sha256": chosen["sha256"], **stamp(project.root)}
        new = {**entry, "files": files, "task_id": chosen.get("task_id"),
               "credits": chosen.get("credits") or 0.0, "pick": record}
        new.pop("take", None)
        if take:
            new["take"] = take
        _publish(project, lock, {**lock.assets, name: new}, store)
        return record


def _publish(project: Project, lock, assets: dict[str, dict], store: ObjectStore) -> None:
    """A new version with these lock entries, and the export following it (SPEC.md §8)."""
    folder = asset_dir(project)
    write_version(project, lock, assets, store, folder)
    for note in export_version(project, folder):
        log.warning("%s", note)


def _checked_files(name: str, files: list) -> list[dict]:
    """A candidate's file records, named for the asset (never a path the lockfile made up)."""
    from starbuild.engine.runner import named_files

    good = [f for f in files if isinstance(f, dict) and isinstance(f.get("sha256"), str)
            and _SHA.match(f["sha256"]) and isinstance(f.get("path"), str)]
    if not good or len(good) != len(files):
        raise UsageError(f"the lockfile's candidate of {name} is damaged; build it again")
    exts = [f["path"].rsplit(".", 1)[-1] for f in good]
    exts = [e if re.fullmatch(r"[a-z0-9]{1,5}", e) else "png" for e in exts]
    return named_files(name, [{**f, "path": f"x.{e}"} for f, e in zip(good, exts)])


@dataclass
class Acceptance:
    """What accept did (or would do) for one asset."""

    name: str
    changes: dict[str, tuple[Any, Any]]
    record: dict[str, Any]


def accept(project: Project, patterns: list[str], *, force: bool = False, specs=None,
           tier: str | None = None) -> list[Acceptance]:
    """Keep the current image of each changed asset named, for its new spec; all or nothing."""
    with project_lock(project.root, cache_dir(project)):
        plan = plan_project(project, select=patterns, specs=specs, tier=tier)
        lock = read_lock(project.root / LOCK_NAME)
        done, refusals = [], []
        for asset in plan.assets:
            if asset.spec is None or asset.status == Status.UNCHANGED or \
                    not any(fnmatchcase(asset.name, p) for p in patterns):
                continue
            outcome = _acceptance(asset, force, project)
            if isinstance(outcome, str):
                refusals.append(f"{asset.name}: {outcome}")
            elif outcome is not None:
                done.append(outcome)
        if refusals:
            raise RefusedError("accept refused, nothing recorded:\n" + "\n".join(refusals))
        if done:
            new_assets = dict(lock.assets)
            for a in done:
                entry = new_assets[a.name]
                new_assets[a.name] = {**entry, "spec_hash": a.record["to_spec"],
                                      "accepted": [*(entry.get("accepted") or []), a.record]}
            _publish(project, lock, new_assets, ObjectStore(cache_dir(project)))
        return done


def _acceptance(asset, force: bool, project: Project) -> Acceptance | str | None:
    """What accepting one changed asset records, why it is refused (a str), or None: nothing to accept."""
    why = _refusal(asset, force)
    if why:
        return why
    prev = asset.previous
    to_spec = asset.spec.spec_hash(bool(prev.get("placeholder")))
    if to_spec == prev.get("spec_hash"):
        return None  # only a placeholder to replace, or takes to make: no spec change to accept
    changes = field_changes(prev, asset.spec)
    record = {"from_spec": prev.get("spec_hash"), "to_spec": to_spec, "fields": sorted(changes),
              **stamp(project.root)}
    return Acceptance(asset.name, changes, record)


def _refusal(asset, force: bool) -> str | None:
    prev = asset.previous
    if prev is None or not prev.get("files"):
        return "there is no image to keep; build it"
    if asset.reason == "files missing":
        return "its image is missing from the asset folder and the cache; build it"
    if asset.spec_hash is None:
        return "an @asset input of it is stale; build that input first"
    structural = [f for f in field_changes(prev, asset.spec) if f in STRUCTURAL]
    if structural and not force:
        return (f"{', '.join(structural)} changed, so the image no longer fits the spec; "
                "rebuild it, or accept with --force")
    return None


def reroll(project: Project, patterns: list[str], options: BuildOptions | None = None, **kwargs) -> BuildReport:
    """One more candidate of each asset named (a single matrix cell if named), without editing YAML."""
    options = options or BuildOptions()
    request = ReviewRequest(reroll=tuple(patterns), root=project.root)
    return build(project, dataclasses.replace(options, select=tuple(patterns), review=request), **kwargs)


def promote(project: Project, patterns: list[str], *, to: str | None = None, fresh: bool = False,
            options: BuildOptions | None = None, **kwargs) -> BuildReport:
    """Rebuild each named asset at tier ``to`` (default ``final``): an edit of its draft, or fresh."""
    to = to or "final"
    if to not in project.config.tiers:
        known = ", ".join(sorted(project.config.tiers)) or "none are declared under tiers:"
        raise UsageError(f"there is no tier {to!r} to promote to (tiers: {known}); name one with --to")
    options = options or BuildOptions()
    request = ReviewRequest(promote=tuple(patterns), promote_fresh=fresh, root=project.root)
    return build(project, dataclasses.replace(options, select=tuple(patterns), tier=to, specs=None,
                                              review=request), **kwargs)
