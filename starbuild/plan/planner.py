"""make_plan: compare resolved specs with the lockfile and say what a build would do, and why."""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from starbuild.config.project import Project
from starbuild.errors import ConfigError, UsageError
from starbuild.store.lockfile import Lock
from starbuild.models import estimate_credits, learnable_credits, price_kind
from starbuild.config.resolve import resolve_specs
from starbuild.plan.spec import GenerationSpec, InputRef
from starbuild.post.plan import post_changes
from starbuild.review.entries import review_status


class Status(str, enum.Enum):
    """What a plan says of an asset."""

    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    REMOVED = "removed"


@dataclass
class PlannedAsset:
    """One asset of a plan: its resolved spec, its status, the reason, and the estimated credits."""

    name: str
    status: Status
    reason: str
    spec: GenerationSpec | None
    spec_hash: str | None
    credits: float
    previous: dict[str, Any] | None = None
    forced: bool = False  # regenerate even when a stored result for the same spec exists
    from_cache: bool = False  # stale, but the cache holds this spec's image: 0 credits

    @property
    def stale(self) -> bool:
        return self.status in (Status.NEW, Status.CHANGED)

    @property
    def replaces_placeholder(self) -> bool:
        """Changed only because an offline placeholder is to be replaced by a real image."""
        return self.status == Status.CHANGED and self.reason == PLACEHOLDER_REASON

    def to_json(self) -> dict[str, Any]:
        source = self.spec.request() if self.spec else (self.previous or {}).get("request")
        model = self.spec.model if self.spec else (source or {}).get("model")
        files = (self.previous or {}).get("files", []) if self.status == Status.UNCHANGED else []
        return {"name": self.name, "status": self.status.value, "reason": self.reason,
                "spec_hash": self.spec_hash, "model": model, "request": source,
                "credits": self.credits if self.stale else 0.0, "files": files, "error": None,
                "from_cache": self.from_cache, "replaces_placeholder": self.replaces_placeholder}


@dataclass
class Plan:
    """Every asset in config order, then the removed ones."""

    assets: list[PlannedAsset]
    placeholder: bool = False
    selected: set[str] | None = None  # names a build runs; None means all
    post: Any = None  # PostChanges: processing to redo at 0 credits (SPEC.md §8)
    by_name: dict[str, PlannedAsset] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {a.name: a for a in self.assets}

    def to_build(self) -> list[PlannedAsset]:
        """Stale assets the build would submit, in dependency-friendly config order."""
        return [a for a in self.assets if a.stale and (self.selected is None or a.name in self.selected)]

    @property
    def credits(self) -> float:
        return round(sum(a.credits for a in self.to_build()), 4)

    def shown(self) -> list[PlannedAsset]:
        """The assets a plan lists: all, or the selected ones (``plan NAME_OR_GLOB``)."""
        return self.assets if self.selected is None else [a for a in self.assets if a.name in self.selected]

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for a in self.shown() if a.status == s) for s in Status}

    def to_json(self) -> dict[str, Any]:
        shown = self.shown()
        summary = {"total": sum(1 for a in shown if a.status != Status.REMOVED),
                   "credits": self.credits, **self.counts(),
                   "from_cache": sum(1 for a in shown if a.stale and a.from_cache),
                   "placeholders": sum(1 for a in shown if a.replaces_placeholder)}
        if self.post:
            summary["post"] = self.post.to_json()
        return {"assets": [a.to_json() for a in shown], "summary": summary}


_SCALARS = ("model", "size", "resolution", "quality", "n", "background")
PLACEHOLDER_REASON = "replace placeholder"


def change_reason(spec: GenerationSpec, prev: dict[str, Any], placeholder: bool) -> str:
    """Why a locked asset no longer matches its spec, in words."""
    old = prev.get("request") or {}
    new = spec.request()
    reasons = []
    if old.get("prompt") != new.get("prompt"):
        reasons.append("prompt changed")
    for key in _SCALARS:
        before, after = old.get(key), new.get(key)
        if before != after:
            reasons.append(f"{key} {before if before is not None else '(none)'} → {after if after is not None else '(none)'}")
    if not spec.takes and int(prev.get("take", 0)) != spec.take:
        reasons.append(f"take {prev.get('take', 0)} → {spec.take}")
    reasons.extend(_input_reasons(old.get("inputs") or [], spec.inputs, "input"))
    old_mask = old.get("mask")
    if (old_mask or None) != (spec.mask.describe() if spec.mask else None):
        reasons.append("mask changed")
    if prev.get("placeholder") and not placeholder:
        reasons.append(PLACEHOLDER_REASON)
    return ", ".join(reasons) or "spec changed"


def _input_reasons(old: list[dict], new: tuple[InputRef, ...], word: str) -> list[str]:
    if len(old) != len(new):
        return [f"inputs {len(old)} → {len(new)}"]
    out = []
    for before, ref in zip(old, new):
        if before != ref.describe():
            out.append(f"{word} {ref.label()} changed")
    return out


def learned_prices(lock: Lock) -> dict[tuple, float]:
    """Credits the API actually reserved, by what prices an image; placeholders say nothing."""
    seen: dict[tuple, float] = {}
    for entry in lock.assets.values():
        req = entry.get("request")
        credits = learnable_credits(entry.get("credits"))  # never 0 from a cache hit, never NaN
        if entry.get("placeholder") or credits is None or not isinstance(req, dict):
            continue
        key = _price_key(req)
        seen[key] = max(credits, seen.get(key, 0.0))
    return seen


def _price_key(req: dict[str, Any]) -> tuple:
    return price_kind(req)


def make_plan(project: Project, lock: Lock, *, placeholder: bool = False, force: Iterable[str] = (),
              select: Iterable[str] = (), have: Callable[[dict[str, Any]], bool] | None = None,
              specs: list[GenerationSpec] | None = None, cached: Callable[[str], str | None] | None = None) -> Plan:
    """The plan for a project against its lockfile: pure apart from reading the files it names.

    ``have(entry)`` tells whether a locked asset's files are still on disk; a missing one is rebuilt.
    ``cached(spec_hash)`` says whether the cache holds that spec's image ("stored") or a paid task
    for it ("submitted"): a build takes either for 0 credits.
    """
    specs = order_by_dependencies(project, resolve_specs(project) if specs is None else specs)
    observed = learned_prices(lock)
    force = list(force)
    assets: list[PlannedAsset] = []
    by_name: dict[str, PlannedAsset] = {}
    for spec in specs:
        spec = _fill_asset_inputs(spec, by_name)
        h = spec.spec_hash(placeholder)
        prev = lock.assets.get(spec.name)
        # An offline build keeps a real image whose spec is unchanged rather than making a placeholder.
        if placeholder and prev is not None and prev.get("spec_hash") not in (None, h) and \
                prev.get("spec_hash") == spec.spec_hash(False):
            h = prev["spec_hash"]
        if prev is None:
            status, reason = Status.NEW, "not built yet"
        elif h is not None and prev.get("spec_hash") == h:
            status, reason = Status.UNCHANGED, "up to date"
            if have is not None and not have(prev):
                status, reason = Status.CHANGED, "files missing"
        else:
            status, reason = Status.CHANGED, change_reason(spec, prev, placeholder)
        forced = any(fnmatch.fnmatchcase(spec.name, pat) for pat in force)
        if forced and status == Status.UNCHANGED:
            status, reason = Status.CHANGED, "forced"
        status, reason, copies = _review(spec, prev, h, status, reason)
        request = spec.request()
        price_key = _price_key(request)
        credits = observed.get(price_key)
        if credits is None:
            credits = observed[price_key] = estimate_credits(spec.api_body(["x"] * len(spec.inputs) or None))
        credits = round(credits * copies, 4)
        asset = PlannedAsset(spec.name, status, reason, spec, h, credits, prev, forced=forced)
        assets.append(asset)
        by_name[spec.name] = asset
    for name, prev in sorted(lock.assets.items()):
        if name not in by_name:
            assets.append(PlannedAsset(name, Status.REMOVED, "no longer in the config", None,
                                       prev.get("spec_hash"), 0.0, prev))
    if cached is not None:
        _mark_cached(assets, lock, cached)
    plan = Plan(assets, placeholder=placeholder)
    plan.post = post_changes(project, plan, lock)
    if select:
        plan.selected = _select(plan, list(select))
    return plan


def _review(spec: GenerationSpec, prev: dict | None, h: str | None, status: Status,
            reason: str) -> tuple[Status, str, int]:
    """Takes: an asset is stale while a declared candidate is missing; says "no pick" until one is made."""
    if not spec.takes:
        return status, reason, 1
    stale, why, count = review_status(spec, prev, h, status == Status.UNCHANGED)
    if status == Status.UNCHANGED:
        status = Status.CHANGED if stale else status
        reason = why or reason
    return status, reason, max(count, 1) if status != Status.UNCHANGED else 1


def mark_in_remote(plan: Plan, names: set[str]) -> None:
    """Stale assets the shared remote cache holds: a build pulls them for 0 credits."""
    for a in plan.assets:
        if a.name in names and a.stale and not (a.spec is not None and a.spec.takes):  # takes: made take by take
            a.reason, a.credits, a.from_cache = "in the remote cache", 0.0, True


def _mark_cached(assets: list[PlannedAsset], lock: Lock, cached: Callable[[str], str | None]) -> None:
    """Stale assets whose image the cache already holds cost nothing; say so, and name a rename."""
    removed = {a.spec_hash: a for a in assets if a.status == Status.REMOVED and a.spec_hash}
    for a in assets:
        takes = a.spec is not None and a.spec.takes  # its candidates are priced take by take
        kind = cached(a.spec_hash) if a.stale and not a.forced and a.spec_hash and not takes else None
        if kind is None:
            continue
        a.credits, a.from_cache = 0.0, True
        old = removed.pop(a.spec_hash, None)
        source = "restore from cache" if kind == "stored" else "resume the task already paid for"
        if a.status == Status.NEW and old is not None:
            a.reason = f"renamed from {old.name}"
            old.reason = f"renamed to {a.name}"
        elif a.status == Status.NEW:
            a.reason = source
        else:
            a.reason = f"{source} ({a.reason})"


def _parents(spec: GenerationSpec) -> list[str]:
    refs = spec.inputs + ((spec.mask,) if spec.mask else ())
    return [r.ref for r in refs if r.kind == "asset"]


def order_by_dependencies(project: Project, specs: list[GenerationSpec]) -> list[GenerationSpec]:
    """Specs with every ``@asset`` parent before its dependents, else in config order; cycles are errors."""
    if not any(_parents(s) for s in specs):
        return specs
    by_name = {s.name: s for s in specs}
    done: set[str] = set()
    out: list[GenerationSpec] = []
    for spec in specs:
        stack: list[tuple[GenerationSpec, int]] = [(spec, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if node.name in done:
                continue
            parents = _parents(node)
            if i == 0:
                if node.name in path:
                    cycle = " → ".join(path[path.index(node.name):] + [node.name])
                    raise ConfigError(project.issue(("images", node.template, "inputs"),
                                                    f"@asset inputs form a cycle: {cycle}"))
                path.append(node.name)
            if i < len(parents):
                stack.append((node, i + 1))
                stack.append((by_name[parents[i]], 0))
            else:
                path.pop()
                done.add(node.name)
                out.append(node)
    return out


def _fill_asset_inputs(spec: GenerationSpec, by_name: dict[str, PlannedAsset]) -> GenerationSpec:
    """Give ``@asset`` inputs the sha256 of their parent's image when the parent is up to date."""
    refs = spec.inputs + ((spec.mask,) if spec.mask else ())
    if not any(r.kind == "asset" for r in refs):
        return spec

    def fill(ref: InputRef) -> InputRef:
        if ref.kind != "asset":
            return ref
        parent = by_name.get(ref.ref)
        files = (parent.previous or {}).get("files") if parent and parent.status == Status.UNCHANGED else None
        return InputRef("asset", ref.ref, files[0]["sha256"] if files else None)

    return spec.with_inputs(tuple(fill(r) for r in spec.inputs), fill(spec.mask) if spec.mask else None)


def _select(plan: Plan, patterns: list[str]) -> set[str]:
    """Names matching the patterns, plus every asset they depend on through ``@asset`` inputs."""
    chosen: set[str] = set()
    for pat in patterns:
        hits = [a.name for a in plan.assets if a.spec and fnmatch.fnmatchcase(a.name, pat)]
        if not hits:
            raise UsageError(f"no asset matches {pat!r}; `starbuild plan` lists the asset names")
        chosen.update(hits)
    todo = list(chosen)
    while todo:
        asset = plan.by_name[todo.pop()]
        for ref in asset.spec.inputs + ((asset.spec.mask,) if asset.spec.mask else ()):
            if ref.kind == "asset" and ref.ref not in chosen:
                chosen.add(ref.ref)
                todo.append(ref.ref)
    return chosen
