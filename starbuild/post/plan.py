"""What a build would re-process without generating anything: ``post changed: 12 files, 0 credits``.

Pure: compares each asset's recipe hash and each atlas's settings and members with the lockfile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starbuild.config.project import Project
from starbuild.errors import ConfigError
from starbuild.post.recipe import Recipe, atlas_members, recipe_for
from starbuild.post.schema import EXTENSIONS, jpeg_problem

_FORMAT_OF_EXT = {v: k for k, v in EXTENSIONS.items()}


@dataclass
class PostChanges:
    """Assets whose delivered files are stale although their images are not, and atlases to repack."""

    assets: list[str] = field(default_factory=list)
    files: int = 0
    atlases: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.assets or self.atlases)

    def to_json(self) -> dict[str, Any]:
        return {"assets": self.assets, "files": self.files, "atlases": self.atlases, "credits": 0.0}

    def line(self) -> str:
        """The plan's summary line for processing, or '' when nothing changes."""
        parts = [f"{self.files} files of {len(self.assets)} asset(s)"] if self.assets else []
        if self.atlases:
            parts.append(f"atlas {', '.join(self.atlases)} repacked")
        return f"post changed: {', '.join(parts)}, 0 credits" if parts else ""


def _file_count(recipe: Recipe, entry: dict[str, Any]) -> int:
    per = 1 + (len(recipe.variants.widths) * len(recipe.variant_formats("png")) if recipe.variants else 0)
    return per * max(1, len(entry.get("files") or []))


def post_changes(project: Project, plan, lock) -> PostChanges:
    """Processing a build would redo for assets whose images are up to date; ConfigError for bad atlases."""
    out = PostChanges()
    touched: set[str] = set()
    recipes: dict[str, Recipe] = {}
    for a in plan.assets:
        if a.spec is None:
            continue
        recipe = recipes.get(a.spec.template)
        if recipe is None:
            recipe = recipes[a.spec.template] = recipe_for(project, a.spec.template)
        prev = a.previous or {}
        if a.stale:
            touched.add(a.name)
            continue
        if recipe.key() != prev.get("post") or (recipe.active and "outputs" not in prev):
            out.assets.append(a.name)
            out.files += _file_count(recipe, prev)
            touched.add(a.name)
            if a.reason == "up to date":
                a.reason = "post changed"
    specs = [a.spec for a in plan.assets if a.spec is not None]
    check_outputs(project, specs)
    counts = {s.name: s.n for s in specs}
    for name, atlas in sorted(project.config.atlases.items()):
        members = atlas_members(atlas, list(counts))
        frames = sorted(m if counts[m] == 1 else f"{m}-{i}" for m in members for i in range(1, counts[m] + 1))
        prev = lock.atlases.get(name) or {}
        if prev.get("config") != atlas.canonical() or touched & set(members) or prev.get("frames") != frames:
            out.atlases.append(name)
    out.atlases += sorted(set(lock.atlases) - set(project.config.atlases))  # removed from the config
    return out


def uses_processing(project: Project) -> bool:
    """Whether any image (or the defaults) asks for post steps or variants, or any atlas is declared."""
    fields = [project.config.defaults, *project.config.images.values()]
    return bool(project.config.atlases) or any(f.post or f.variants for f in fields)


def check_outputs(project: Project, specs: list) -> None:
    """Config errors: an export inside output.dir, an atlas that includes nothing, jpeg for a
    transparent image, and a published path that two files would share."""
    issues = _export_issues(project)
    if uses_processing(project):  # else names are unique and each has its own files: nothing can clash
        names = [s.name for s in specs]
        for name, atlas in sorted(project.config.atlases.items()):
            if not atlas_members(atlas, names):
                issues.append(project.issue(("atlases", name, "include"), "matches no asset; patterns are "
                                            "globs over asset names, such as 'icons/*'"))
        for key, image in project.config.images.items():
            recipe = recipe_for(project, key)
            transparent = (image.background or project.config.defaults.background) == "transparent"
            problem = jpeg_problem(list(recipe.steps), recipe.variants, transparent)
            if problem:
                issues.append(project.issue(("images", key), problem, key=True))
        issues += _clash_issues(project, specs)
    if issues:
        raise ConfigError(sorted(issues, key=lambda i: (i.line or 0, i.column or 0))[:20])


def _export_issues(project: Project) -> list:
    export = project.config.output.export
    if not export:
        return []
    out_dir = (project.root / project.config.output.dir).resolve()
    target = (project.root / export).resolve()
    if target == out_dir or out_dir in target.parents or target in out_dir.parents:
        return [project.issue(("output", "export"), f"{export!r} overlaps output.dir; export to a folder "
                              "outside the versioned asset directory")]
    return []


def _clash_issues(project: Project, specs: list) -> list:
    """Two assets whose delivered files or variants would land on one path."""
    suffixes: dict[str, tuple[str, list[str]]] = {}  # per image key: delivered extension, variant suffixes
    for key in project.config.images:
        recipe = recipe_for(project, key)
        ext = recipe.delivered_ext("png")
        widths = recipe.variants.widths if recipe.variants else []
        formats = recipe.variant_formats(_FORMAT_OF_EXT.get(ext, ext))
        suffixes[key] = (ext, [f"-{w}.{EXTENSIONS[f]}" for f in formats for w in widths])
    owner: dict[str, str] = {}
    issues = []
    for spec in specs:
        ext, tails = suffixes[spec.template]
        stems = [spec.name] if spec.n == 1 else [f"{spec.name}-{i}" for i in range(1, spec.n + 1)]
        for path in (p for stem in stems for p in [f"{stem}.{ext}", *(stem + t for t in tails)]):
            other = owner.setdefault(path, spec.name)
            if other != spec.name:
                message = f"{path!r} would be written by both {other!r} and {spec.name!r}; rename one of them"
                issues.append(project.issue(("images", spec.template), message, key=True))
    return issues
