"""Lock-entry helpers: candidates, picks, what a plan says of an asset under review.

Pure functions over the lockfile's dicts; the planner imports this module, so it imports nothing
above ``plan.spec``.
"""

from __future__ import annotations

from typing import Any

from starbuild.plan.spec import GenerationSpec

# Changing one of these changes what the image is, not how it is described: accept refuses them.
STRUCTURAL = ("model", "size", "resolution", "n", "inputs", "mask")
_COMPARED = ("prompt", "model", "size", "resolution", "quality", "n", "background", "inputs", "mask")


def wanted_takes(spec: GenerationSpec) -> list[int]:
    """The take numbers of an asset's declared candidates: take+1 .. take+takes."""
    return list(range(spec.take + 1, spec.take + spec.takes + 1)) if spec.takes else []


def candidates(entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """An entry's candidates, well-formed ones only, by take."""
    out = [c for c in (entry or {}).get("candidates") or []
           if isinstance(c, dict) and isinstance(c.get("take"), int) and isinstance(c.get("files"), list)]
    return sorted(out, key=lambda c: c["take"])


def candidate(entry: dict[str, Any] | None, take: int) -> dict[str, Any] | None:
    return next((c for c in candidates(entry) if c["take"] == take), None)


def has_pick(entry: dict[str, Any] | None) -> bool:
    """A decision was made: a pick, or a promotion of a picked image."""
    entry = entry or {}
    return isinstance(entry.get("pick"), dict) or isinstance(entry.get("promoted_from"), dict)


def missing_takes(spec: GenerationSpec, entry: dict[str, Any] | None, intent_hash: str | None) -> list[int]:
    """Declared takes the lockfile has no candidate for (all of them when the intent changed)."""
    wanted = wanted_takes(spec)
    if entry is None or intent_hash is None or entry.get("spec_hash") != intent_hash:
        return wanted
    if isinstance(entry.get("promoted_from"), dict):
        return []  # the picked take was promoted; its siblings are history
    have = {c["take"] for c in candidates(entry)}
    return [t for t in wanted if t not in have]


def review_status(spec: GenerationSpec, entry: dict[str, Any] | None, intent_hash: str | None,
                  unchanged: bool) -> tuple[bool, str | None, int]:
    """For an asset with takes: (stale, reason, candidates to make); (unchanged, None, 0) otherwise."""
    if not spec.takes:
        return (not unchanged), None, 0
    missing = missing_takes(spec, entry, intent_hash)
    if unchanged and missing:
        return True, f"takes {', '.join(map(str, missing))} not made yet", len(missing)
    if unchanged:
        return False, None if has_pick(entry) else f"no pick ({len(candidates(entry))} candidates)", 0
    return True, None, len(missing) or spec.takes  # forced, or files lost: every take is made again


def field_changes(entry: dict[str, Any], spec: GenerationSpec) -> dict[str, tuple[Any, Any]]:
    """The fields whose value differs between what was sent for an entry and a spec, old → new."""
    old, new = entry.get("request") or {}, spec.request()
    changes = {}
    for key in _COMPARED:
        if _norm(key, old.get(key)) != _norm(key, new.get(key)):
            changes[key] = (old.get(key), new.get(key))
    if not spec.takes and not entry.get("candidates") and int(entry.get("take") or 0) != spec.take:
        changes["take"] = (int(entry.get("take") or 0), spec.take)
    return changes


def _norm(key: str, value: Any) -> Any:
    if key == "n":
        return value or 1
    if key == "background":
        return None if value in (None, "opaque") else value
    return value


def referenced_shas(entry: dict[str, Any]) -> set[str]:
    """Every image an entry keeps: its files, its candidates' and the draft it was promoted from."""
    shas = {f.get("sha256") for f in entry.get("files") or [] if isinstance(f, dict)}
    for c in candidates(entry):
        shas.update(f.get("sha256") for f in c["files"] if isinstance(f, dict))
    promoted = entry.get("promoted_from")
    if isinstance(promoted, dict):
        shas.add(promoted.get("sha256"))
    return {s for s in shas if isinstance(s, str)}


def unpicked(plan_assets) -> list[str]:
    """Names of planned assets with takes whose lock entry has no pick (``--frozen`` refuses them)."""
    return [a.name for a in plan_assets if a.spec is not None and a.spec.takes and not has_pick(a.previous)]
