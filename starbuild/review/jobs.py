"""The review hooks of a build: takes become one job per candidate, rerolls and promotions add jobs,
and the jobs' results are folded back into one lock entry per asset.

A job is a PlannedAsset named ``NAME#takeK`` (or ``NAME#promote``): ``#`` is not allowed in asset
names, so a job never collides with an asset, and the runner needs no change to run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from starbuild.engine.outcome import AssetResult, Outcome
from starbuild.errors import FrozenError, UsageError
from starbuild.plan.planner import Plan, PlannedAsset, Status
from starbuild.plan.spec import InputRef
from starbuild.review.entries import candidate, candidates, has_pick, missing_takes, unpicked, wanted_takes
from starbuild.review.identity import now, stamp
from starbuild.store.lockfile import Lock


@dataclass
class ReviewRequest:
    """What a review command asks of a build: rerolls or a promotion of the assets named (or globbed)."""

    reroll: tuple[str, ...] = ()
    promote: tuple[str, ...] = ()
    promote_fresh: bool = False  # promote --reroll: a fresh sample instead of an edit of the draft
    root: Path | None = None  # where ``who`` asks git


@dataclass
class _Job:
    asset: PlannedAsset  # the asset the job belongs to
    kind: str  # "take" | "reroll" | "promote"
    take: int
    job: PlannedAsset


@dataclass
class ReviewRun:
    """One build's review state: the jobs it ran, and the lock entries they make."""

    plan: Plan
    lock: Lock
    request: ReviewRequest = field(default_factory=ReviewRequest)
    _jobs: dict[str, _Job] = field(default_factory=dict)
    _results: dict[str, list[tuple[_Job, AssetResult]]] = field(default_factory=dict)

    # --- before the run ---
    def jobs(self, todo: list[PlannedAsset]) -> list[PlannedAsset]:
        """The work of a build: takes expanded; for a review command, only its own jobs."""
        if self.request.reroll:
            return [self._add(j) for j in self._rerolls()]
        if self.request.promote:
            return [self._add(j) for j in self._promotions()]
        out: list[PlannedAsset] = []
        for asset in todo:
            if asset.spec is None or not asset.spec.takes:
                out.append(asset)
            else:
                out += [self._add(j) for j in self._take_jobs(asset)]
        return out

    def _take_jobs(self, asset: PlannedAsset) -> list[_Job]:
        """One job per declared candidate the lockfile lacks (all of them when forced or files are lost)."""
        takes = missing_takes(asset.spec, asset.previous, asset.spec_hash)
        if asset.forced or not takes:
            takes = wanted_takes(asset.spec)
        price = round(asset.credits / max(1, len(takes)), 4)
        return [self._job(asset, "take", t, price) for t in takes]

    def refuse_frozen(self) -> None:
        """``--frozen`` also refuses assets with takes that nobody has picked yet."""
        names = unpicked(a for a in self.plan.assets if a.status == Status.UNCHANGED)
        if names:
            shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
            raise FrozenError(f"--frozen: {len(names)} asset(s) with takes have no pick ({shown}); "
                              "run `starbuild pick NAME TAKE` and commit starbuild.lock")

    def _job(self, asset: PlannedAsset, kind: str, take: int, credits: float, spec=None) -> _Job:
        spec = spec or replace(asset.spec, take=take, takes=0)
        name = f"{asset.name}#{'promote' if kind == 'promote' else f'take{take}'}"
        job = PlannedAsset(name, Status.CHANGED, asset.reason if kind == "take" else kind, spec,
                           spec.spec_hash(self.plan.placeholder), credits, None, forced=asset.forced)
        return _Job(asset, kind, take, job)

    def _add(self, job: _Job) -> PlannedAsset:
        self._jobs[job.job.name] = job
        return job.job

    def _targets(self, patterns: tuple[str, ...]) -> list[PlannedAsset]:
        return [a for a in self.plan.assets if a.spec is not None and any(fnmatchcase(a.name, p) for p in patterns)]

    def _refuse_placeholder_over_real(self, asset: PlannedAsset) -> None:
        if self.plan.placeholder and asset.previous and not asset.previous.get("placeholder"):
            raise UsageError(f"{asset.name} is a real image; an --offline placeholder would not replace it "
                             "(drop --offline)")

    def _rerolls(self) -> list[_Job]:
        jobs = []
        for asset in self._targets(self.request.reroll):
            self._refuse_placeholder_over_real(asset)
            if asset.stale and asset.spec.takes:
                jobs += self._take_jobs(asset)
            elif asset.stale:
                jobs.append(self._job(asset, "take", asset.spec.take, asset.credits, asset.spec))
            else:
                jobs.append(self._job(asset, "reroll", next_take(asset), asset.credits))
        return jobs

    def _promotions(self) -> list[_Job]:
        jobs = []
        for asset in self._targets(self.request.promote):
            self._refuse_placeholder_over_real(asset)
            prev = asset.previous
            if prev is None or not prev.get("files"):
                raise UsageError(f"{asset.name} has no image to promote; build it first (at the draft tier)")
            if not asset.stale:
                continue  # already built at the target tier
            if self.request.promote_fresh:
                jobs.append(self._job(asset, "promote", next_take(asset), asset.credits))
                continue
            if asset.spec.mask is not None:
                raise UsageError(f"{asset.name} has a mask, so it cannot be promoted as an edit of its draft; "
                                 "use promote --reroll")
            draft = InputRef("asset", asset.name, prev["files"][0]["sha256"])
            spec = asset.spec.with_inputs((draft,) + asset.spec.inputs, None)
            jobs.append(self._job(asset, "promote", asset.spec.take, asset.credits, replace(spec, takes=0)))
        return jobs

    # --- after the run ---
    def fold(self, results: list[AssetResult]) -> list[AssetResult]:
        """One result per asset: a job's result is folded into its asset's."""
        out, folded = [], {}
        for r in results:
            job = self._jobs.get(r.name)
            if job is None:
                out.append(r)
                continue
            self._results.setdefault(job.asset.name, []).append((job, r))
            folded.setdefault(job.asset.name, job.asset)
        for name, asset in folded.items():
            out.append(self._folded(asset, self._results[name]))
        return out

    def _folded(self, asset: PlannedAsset, done: list[tuple[_Job, AssetResult]]) -> AssetResult:
        failed = [(j, r) for j, r in done if not r.outcome.ok]
        ok = [(j, r) for j, r in done if r.outcome.ok]
        if failed:
            outcome = Outcome.FAILED if any(r.outcome == Outcome.FAILED for _, r in failed) else Outcome.SKIPPED
        elif any(r.outcome in (Outcome.BUILT, Outcome.RESUMED) for _, r in ok):
            outcome = Outcome.BUILT
        else:
            outcome = Outcome.CACHED
        errors = "; ".join(f"take {j.take}: {r.error or r.reason}" for j, r in failed) or None
        first = ok[0][1] if ok else done[0][1]
        return AssetResult(asset.name, outcome, reason=asset.reason if not failed else errors or "",
                           spec_hash=asset.spec_hash, model=first.model, request=first.request,
                           credits=round(sum(r.credits for _, r in done), 4),
                           files=_named(asset.name, first.files), error=errors, task_id=first.task_id)

    def finish(self, assets: dict[str, dict]) -> dict[str, dict]:
        """The lock entries of the assets the jobs made, from the previous entry and the new candidates."""
        for name, done in self._results.items():
            made = [(j, r) for j, r in done if r.outcome.ok and r.files]
            if not made:
                continue
            kind = made[0][0].kind
            if kind == "take" and not made[0][0].asset.spec.takes:
                continue  # a plain rebuild: the build's own entry stands
            entry = self._promoted(made[0]) if kind == "promote" else self._with_candidates(name, made)
            if entry is not None:
                assets[name] = entry
        for a in self.plan.assets:  # record the tier an image was made at, for promote and the gallery
            entry = assets.get(a.name)
            if a.spec is not None and a.spec.tier and entry and entry is not a.previous and "tier" not in entry:
                assets[a.name] = {**entry, "tier": a.spec.tier}
        return assets

    def _with_candidates(self, name: str, made: list[tuple[_Job, AssetResult]]) -> dict[str, Any] | None:
        asset = made[0][0].asset
        prev = asset.previous if asset.previous and asset.previous.get("spec_hash") == asset.spec_hash else None
        cands = {c["take"]: c for c in candidates(prev)}
        if prev is not None and not cands and prev.get("files"):
            cands[int(prev.get("take") or 0)] = _candidate_of(prev, int(prev.get("take") or 0), prev.get("spec_hash"))
        for job, r in made:
            cands[job.take] = _candidate_of(_entry_of(r), job.take, r.spec_hash)
        pick = (prev or {}).get("pick")
        rerolled = [j.take for j, _ in made if j.kind == "reroll"]
        if rerolled and not asset.spec.takes:
            pick = {"take": rerolled[-1], "sha256": cands[rerolled[-1]]["sha256"], **stamp(self.request.root)}
        if not (isinstance(pick, dict) and pick.get("take") in cands):
            pick = None
        shown = cands[pick["take"]] if pick else cands[min(cands)]
        entry = {k: v for k, v in (prev or {}).items() if k in ("accepted", "tier")}
        entry.update(spec_hash=asset.spec_hash, request=asset.spec.request(), task_id=shown.get("task_id"),
                     files=shown["files"], credits=shown.get("credits") or 0.0, placeholder=self.plan.placeholder,
                     created=now(), candidates=[cands[t] for t in sorted(cands)])
        if shown["take"]:
            entry["take"] = shown["take"]
        if asset.spec.takes:
            entry["takes"] = asset.spec.takes
        if asset.spec.tier:
            entry["tier"] = asset.spec.tier
        if pick:
            entry["pick"] = pick
        return entry

    def _promoted(self, made: tuple[_Job, AssetResult]) -> dict[str, Any]:
        job, r = made
        asset, prev = job.asset, job.asset.previous or {}
        entry = _entry_of(r)
        entry.update(spec_hash=asset.spec_hash, placeholder=self.plan.placeholder, created=now(),
                     promoted_from={"tier": prev.get("tier"), "spec_hash": prev.get("spec_hash"),
                                    "sha256": prev["files"][0]["sha256"], "take": int(prev.get("take") or 0),
                                    "edit": not self.request.promote_fresh, **stamp(self.request.root)})
        if job.take:
            entry["take"] = job.take
        if asset.spec.tier:
            entry["tier"] = asset.spec.tier
        return entry


def next_take(asset: PlannedAsset) -> int:
    """A take number no candidate, declared take or published image of the asset has used."""
    prev = asset.previous or {}
    used = [asset.spec.take + asset.spec.takes, int(prev.get("take") or 0)]
    used += [c["take"] for c in candidates(prev)]
    return max(used) + 1


def _named(name: str, files: list[dict]) -> list[dict]:
    from starbuild.engine.runner import named_files

    return named_files(name, files)


def _entry_of(r: AssetResult) -> dict[str, Any]:
    base = r.name.split("#", 1)[0]
    return {"request": r.request, "task_id": r.task_id, "files": _named(base, r.files), "credits": r.credits}


def _candidate_of(entry: dict[str, Any], take: int, spec_hash: str | None) -> dict[str, Any]:
    files = entry.get("files") or []
    return {"take": take, "spec_hash": spec_hash, "sha256": files[0]["sha256"] if files else None,
            "credits": entry.get("credits") or 0.0, "task_id": entry.get("task_id"), "files": files}


__all__ = ["ReviewRequest", "ReviewRun", "candidate", "has_pick", "next_take"]
