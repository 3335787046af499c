"""What processing an asset asks for, as plain data: no Pillow, so the planner can use it.

An asset's *recipe* is its steps and variants with every default written out; its hash, stored in
the lock entry as ``post``, tells the plan whether the delivered files are still what the config
asks for. ``post`` and ``variants`` in an image replace those in ``defaults`` (``post: []`` turns
the defaults' steps off).
"""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from starbuild.config.project import Project
from starbuild.plan.spec import canonical_json, sha256_hex
from starbuild.post.schema import EXTENSIONS, PROCESSING_VERSION, Atlas, Step, Variants, delivered_format


@dataclass(frozen=True)
class Recipe:
    """One asset's processing: steps (may be empty) and variants (may be None)."""

    steps: tuple[Step, ...] = ()
    variants: Variants | None = None

    @property
    def active(self) -> bool:
        return bool(self.steps or self.variants)

    def canonical_steps(self) -> list[dict[str, Any]]:
        return [s.canonical() for s in self.steps]

    def key(self) -> str | None:
        """The hash the lock entry records as ``post``; None for an asset without processing."""
        return self._key

    @cached_property
    def _key(self) -> str | None:
        if not self.active:
            return None
        variants = self.variants.model_dump(mode="json") if self.variants else None
        return sha256_hex(canonical_json({"v": PROCESSING_VERSION, "steps": self.canonical_steps(),
                                          "variants": variants}))

    def delivered_ext(self, source_format: str) -> str:
        fmt = delivered_format(list(self.steps))
        if fmt is not None:
            return EXTENSIONS[fmt.type]
        if self.steps:
            return "png"
        return EXTENSIONS.get(source_format, source_format)

    def variant_formats(self, delivered: str) -> list[str]:
        if self.variants is None:
            return []
        return list(self.variants.formats or [delivered])


def recipe_for(project: Project, template: str) -> Recipe:
    """The recipe of the image key ``template`` (its own post/variants, else the defaults')."""
    image = project.config.images.get(template)
    defaults = project.config.defaults
    steps = image.post if image is not None and image.post is not None else defaults.post
    variants = image.variants if image is not None and image.variants is not None else defaults.variants
    return Recipe(tuple(steps or ()), variants)


def stem(path: str) -> str:
    """A file's path without its extension: ``icons/sword.png`` -> ``icons/sword``."""
    root, _ = posixpath.splitext(path)
    return root


def delivered_path(source_path: str, ext: str) -> str:
    return f"{stem(source_path)}.{ext}"


def variant_path(delivered: str, width: int, ext: str) -> str:
    return f"{stem(delivered)}-{width}.{ext}"


def atlas_members(atlas: Atlas, names: list[str]) -> list[str]:
    """The asset names an atlas includes, sorted."""
    return sorted(n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in atlas.include))


def atlas_key(name: str, atlas: Atlas, frames: list[tuple[str, str]]) -> str:
    """What an atlas's files depend on: its settings and its frames' names and contents."""
    return sha256_hex(canonical_json({"v": PROCESSING_VERSION, "name": name, "atlas": atlas.canonical(),
                                      "frames": sorted(frames)}))
