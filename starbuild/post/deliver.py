"""deliver(): from the lock entries of a build to the files a version publishes.

Reads as steps: work out what each asset needs (cache hits from the derived index cost nothing),
run the missing work in the pool, record the outputs in the entries, pack the atlases, write
images.json. Source images stay in the object store; only what ``outputs`` lists is published.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starbuild.config.project import Project
from starbuild.post.recipe import Recipe, delivered_path, recipe_for, stem, variant_path
from starbuild.post.schema import EXTENSIONS, PROCESSING_VERSION
from starbuild.post.work import Job, JobResult, run_jobs
from starbuild.store.derived import DerivedIndex, derivation_key
from starbuild.store.objects import ObjectStore

IMAGES_JSON = "images.json"
MIME = {"png": "image/png", "webp": "image/webp", "avif": "image/avif", "jpeg": "image/jpeg"}


@dataclass
class Delivery:
    """What a version publishes, and what went wrong on the way."""

    entries: dict[str, dict[str, Any]]
    atlases: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[tuple[str, Path, str]] = field(default_factory=list)  # (path, source, sha256)
    images: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    processed: int = 0
    temp_dir: Path | None = None

    def images_file(self, version: int) -> tuple[str, Path]:
        """images.json of a version as a (path, file) pair to publish; the file is a temp file of the store
        (cleaned with the store's temp folder), since nothing but the version needs it."""
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=self.temp_dir, suffix=".json")
        with open(fd, "wb") as fh:
            fh.write(images_json(self, version))
        return IMAGES_JSON, Path(tmp)


@dataclass
class _Unit:
    """One source file of one asset on its way to outputs."""

    asset: str
    recipe: Recipe
    source: dict[str, Any]
    source_path: Path | None
    meta: dict[str, str]
    delivered: dict[str, Any] | None = None
    variants: dict[tuple, dict[str, Any] | None] = field(default_factory=dict)
    placeholder: str | None = None
    job: Job | None = None
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)  # last outputs of the same recipe, by path


class Deliverer:
    """Holds the store, the derived index and the previous version while one delivery is made."""

    def __init__(self, project: Project, store: ObjectStore, cache: Path, base: Path | None):
        self.project, self.store, self.base = project, store, base
        self.index = DerivedIndex(cache, store)
        self.stored = store.listing()
        self._paths: dict[str, Path] = {}  # stored objects' paths, each made once (asked for twice per file)
        self.previous_rows = _read_rows(base)
        self.previous_images = {str(r.get("sha256")): r["placeholder"] for r in self.previous_rows.values()
                                if isinstance(r.get("placeholder"), str)}

    # --- where bytes are ---
    def object_path(self, record: dict[str, Any]) -> Path | None:
        """A stored object, else the previous version's file of the same path and content."""
        sha = record.get("sha256", "")
        known = self._paths.get(sha)
        if known is not None:
            return known
        if sha in self.stored or self.store.has(sha):
            path = self._paths[sha] = self.store.path(sha)
            return path
        if self.base is not None and (self.base / record.get("path", "")).is_file():
            candidate = self.base / record["path"]
            if candidate.stat().st_size == record.get("bytes"):
                from starbuild.plan.spec import sha256_hex

                if sha256_hex(candidate.read_bytes()) == record["sha256"]:
                    return candidate
        return None

    # --- the units ---
    def units(self, entries: dict[str, dict], templates: dict[str, str]) -> list[_Unit]:
        out = []
        recipes: dict[str, Recipe] = {}
        for name, entry in entries.items():
            template = templates.get(name)
            if template is not None and template not in recipes:
                recipes[template] = recipe_for(self.project, template)
            recipe = recipes[template] if template is not None else Recipe()
            meta = {"spec_hash": entry.get("spec_hash") or "", "model": (entry.get("request") or {}).get("model", ""),
                    "take": str(entry.get("take", 0))}
            for f in entry.get("files") or []:
                if not _safe(f):  # a hand-edited lockfile: never a path outside the version
                    continue
                unit = _Unit(name, recipe, f, self.object_path(f), {**meta, "source": f["sha256"]})
                if recipe.active and entry.get("post") == recipe.key():
                    unit.previous = {o["path"]: o for o in entry.get("outputs") or [] if _safe(o)}
                self.plan_unit(unit)
                out.append(unit)
        return out

    def plan_unit(self, u: _Unit) -> None:
        steps = u.recipe.canonical_steps()
        if not steps:
            u.delivered = dict(u.source)
        else:
            rec = self.index.get(self._dkey(u))
            u.delivered = rec["files"][0] if rec else self._reuse(u, u.recipe.delivered_ext(u.source.get("format", "png")))
        missing = []
        for width, fmt, quality in self._wanted(u):
            if u.delivered is not None:
                if width > u.delivered["width"]:
                    u.variants[(width, fmt)] = None
                    continue
                rec = self.index.get(self._vkey(u.delivered["sha256"], width, fmt, quality))
                reused = None if rec else self._reuse(u, EXTENSIONS[fmt], width)
                if rec or reused:
                    u.variants[(width, fmt)] = rec["files"][0] if rec else reused
                    continue
            missing.append((width, fmt, quality))
        if u.delivered is not None:
            sha = u.delivered["sha256"]
            u.placeholder = (self.previous_images.get(sha)
                             or (self.index.get(placeholder_key(sha)) or {}).get("placeholder"))
        if u.delivered is None or missing or u.placeholder is None:
            delivered_obj = self.object_path(u.delivered) if u.delivered and steps else None
            source = delivered_obj or u.source_path
            if source is None:
                return  # reported by finish(): the source is gone
            w, h = u.source.get("width") or 1024, u.source.get("height") or 1024
            job_steps = tuple(steps) if steps and not delivered_obj else ()
            pixels = w * h
            if not job_steps and not missing:
                # Only a placeholder: decoding is the work, and it follows the file's size (a flat
                # image of a megapixel decodes in microseconds, too little to start a pool for).
                pixels = min(pixels, 4 * int((u.delivered or u.source).get("bytes") or pixels))
            u.job = Job(source=str(source), steps=job_steps, meta=tuple(sorted(u.meta.items())),
                        variants=tuple(missing), placeholder=True, tmp_dir=str(self.store.temp_dir()),
                        pixels=pixels)

    def _reuse(self, u: _Unit, ext: str, width: int | None = None) -> dict[str, Any] | None:
        """The same recipe's output in the previous version (a wiped cache is not a reason to fail or redo)."""
        main = delivered_path(u.source["path"], ext if width is None else
                              u.recipe.delivered_ext(u.source.get("format", "png")))
        rec = u.previous.get(main if width is None else variant_path(main, width, ext))
        if rec is None or self.object_path(rec) is None:
            return None
        return {k: rec[k] for k in ("sha256", "bytes", "width", "height", "format") if k in rec}

    def _wanted(self, u: _Unit) -> list[tuple[int, str, int | None]]:
        v = u.recipe.variants
        if v is None:
            return []
        ext_fmt = _format_of_ext(u.recipe.delivered_ext(u.source.get("format", "png")))
        return [(w, fmt, v.quality) for fmt in u.recipe.variant_formats(ext_fmt) for w in v.widths]

    def _dkey(self, u: _Unit) -> str:
        return derivation_key({"v": PROCESSING_VERSION, "kind": "delivered", "source": u.source["sha256"],
                               "steps": u.recipe.canonical_steps(), "meta": u.meta})

    @staticmethod
    def _vkey(sha: str, width: int, fmt: str, quality: int | None) -> str:
        return derivation_key({"v": PROCESSING_VERSION, "kind": "variant", "source": sha, "width": width,
                               "format": fmt, "quality": quality})

    # --- results ---
    def absorb(self, u: _Unit, r: JobResult) -> int:
        """Store a job's files and index them; how many files were made."""
        made = 0
        if r.delivered is not None:
            u.delivered = self._keep(r.delivered)
            self.index.put(self._dkey(u), {"files": [u.delivered]})
            made += 1
        sha = u.delivered["sha256"]
        for (width, fmt, quality), rec in zip(u.job.variants, r.variants):
            if rec is None:
                u.variants[(width, fmt)] = None
                continue
            u.variants[(width, fmt)] = self._keep(rec)
            self.index.put(self._vkey(sha, width, fmt, quality), {"files": [u.variants[(width, fmt)]]})
            made += 1
        if r.placeholder:
            u.placeholder = r.placeholder
            self.index.put(placeholder_key(sha), {"placeholder": r.placeholder, "files": []})
        return made

    def _keep(self, rec: dict[str, Any]) -> dict[str, Any]:
        self.store.add(Path(rec["tmp"]), rec["sha256"])
        self.stored.add(rec["sha256"])
        return {k: rec[k] for k in ("sha256", "bytes", "width", "height", "format")}


def placeholder_key(sha: str) -> str:
    """The derived index's key of an image's placeholder."""
    return derivation_key({"v": PROCESSING_VERSION, "kind": "placeholder", "source": sha})


def _format_of_ext(ext: str) -> str:
    return {v: k for k, v in EXTENSIONS.items()}.get(ext, ext)


def _read_rows(base: Path | None) -> dict[str, dict]:
    """The previous version's images.json rows: their placeholders cost nothing to reuse."""
    if base is None:
        return {}
    from starbuild.store.jsonfast import loads

    try:
        data = loads((base / IMAGES_JSON).read_bytes())
    except (OSError, ValueError):
        return {}
    rows = data.get("images") if isinstance(data, dict) else None
    return {k: v for k, v in (rows or {}).items() if isinstance(v, dict)}


def deliver_version(project: Project, plan, lock, entries: dict[str, dict], store: ObjectStore,
                    base: Path | None) -> Delivery:
    """The build's publish step: process against the previous lock and version folder."""
    templates = {a.name: a.spec.template for a in plan.assets if a.spec is not None}
    return deliver(project, entries, templates, store, store.root.parent, base, lock.atlases,
                   previous=lock.assets)


def deliver(project: Project, entries: dict[str, dict], templates: dict[str, str], store: ObjectStore,
            cache: Path, base: Path | None, previous_atlases: dict[str, dict] | None = None,
            workers: int | None = None, previous: dict[str, dict] | None = None) -> Delivery:
    """Process what changed, and list every file the next version holds."""
    from starbuild.post.pack import pack_atlases

    d = Deliverer(project, store, cache, base)
    units = d.units(entries, templates)
    todo = [u for u in units if u.job is not None]
    results = run_jobs([u.job for u in todo], workers)
    delivery = Delivery(entries=dict(entries), temp_dir=store.temp_dir())  # entries copied where changed
    for u, r in zip(todo, results):
        if not r.error:
            delivery.processed += d.absorb(u, r)
        elif u.recipe.active:
            delivery.failures.setdefault(u.asset, f"post-processing failed: {r.error}")
    for u in units:
        # An asset without processing is published as it is, with or without a placeholder.
        if u.recipe.active and (u.delivered is None or u.placeholder is None):
            delivery.failures.setdefault(u.asset, "the source image is missing from the object store; "
                                                  f"rebuild it with `starbuild build --force {u.asset}`")
    _record(delivery, units, previous or {}, d.previous_rows)
    pack_atlases(project, delivery, d, previous_atlases or {})
    _publish_list(delivery, d)
    return delivery


def _record(delivery: Delivery, units: list[_Unit], previous: dict[str, dict], rows: dict[str, dict]) -> None:
    """Write ``outputs`` and ``post`` into each processed asset's entry, and its images.json rows.

    An asset whose processing failed keeps its previous entry (and so its previous files).
    """
    by_asset: dict[str, list[_Unit]] = {}
    for u in units:
        by_asset.setdefault(u.asset, []).append(u)
    for name, group in by_asset.items():
        entry = delivery.entries[name]
        recipe = group[0].recipe
        failed = name in delivery.failures
        if not recipe.active:
            if "outputs" in entry or "post" in entry:
                entry = delivery.entries[name] = dict(entry)  # the caller's entries stay as they were
                entry.pop("outputs", None)
                entry.pop("post", None)
        else:
            entry = delivery.entries[name] = dict(entry)
            entry["post"] = None if failed else recipe.key()
            entry["outputs"] = [] if failed else [o for u in group for o in _outputs(u)]
        if failed:
            if name in previous:
                delivery.entries[name] = previous[name]
                keys = [name] if len(group) == 1 else [f"{name}-{i}" for i in range(1, len(group) + 1)]
                delivery.images.update({k: rows[k] for k in keys if k in rows})
            continue
        for u in group:
            key = name if len(group) == 1 else stem(_outputs(u)[0]["path"])
            delivery.images[key] = _image_row(u)


def _outputs(u: _Unit) -> list[dict[str, Any]]:
    ext = u.recipe.delivered_ext(u.source.get("format", "png"))
    main = {**u.delivered, "path": delivered_path(u.source["path"], ext), "role": "delivered"}
    out = [main]
    for (width, fmt), rec in sorted(u.variants.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if rec is not None:
            out.append({**rec, "path": variant_path(main["path"], width, EXTENSIONS[fmt]), "role": "variant"})
    return out


def _image_row(u: _Unit) -> dict[str, Any]:
    outs = _outputs(u)
    main = outs[0]
    srcset: dict[str, list[str]] = {}
    for o in outs[1:]:
        srcset.setdefault(o["format"], []).append(f"{o['path']} {o['width']}w")
    return {"src": main["path"], "width": main["width"], "height": main["height"], "sha256": main["sha256"],
            "type": MIME.get(main["format"], "application/octet-stream"),
            "srcset": {fmt: ", ".join(items) for fmt, items in srcset.items()}, "placeholder": u.placeholder}


_SAFE_PATH = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def _safe(rec: Any) -> bool:
    """A record from the lockfile names a relative path inside the version and a real sha256."""
    if not isinstance(rec, dict) or not isinstance(rec.get("path"), str) or not isinstance(rec.get("sha256"), str):
        return False
    path = rec["path"]
    return bool(_SAFE_PATH.match(path) and _SHA.match(rec["sha256"])) and \
        not any(part in (".", "..") for part in path.split("/"))


def _publish_list(delivery: Delivery, d: Deliverer) -> None:
    groups = [e["outputs"] if "outputs" in e else e.get("files") or [] for e in delivery.entries.values()]
    groups += [a.get("files") or [] for a in delivery.atlases.values()]
    for records in groups:
        for rec in records:
            path = d.object_path(rec) if _safe(rec) else None
            if path is not None:
                delivery.files.append((rec["path"], path, rec["sha256"]))


def images_json(delivery: Delivery, version: int) -> bytes:
    """The web manifest: per asset src, size, sha256, srcset per format and a placeholder data URL."""
    from starbuild.store.jsonfast import pretty

    return pretty({"version": version, "images": delivery.images})
