"""GenerationSpec: one fully resolved image request, its canonical form and its spec_hash.

The hash covers exactly what changes the image (SPEC.md §5): model, rendered prompt, size,
resolution, quality, n, background, take, the content of every input and mask, and whether it is
a placeholder. Not the asset's name, key order, comments or concurrency. Effective values are
hashed, so writing out a model default (``quality: medium`` on gpt-image-2) changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from starbuild.store import jsonfast
from starbuild.models import GPT2_RATIOS, GPT_IMAGE_2, RULES, dimensions

HASH_FORMAT = 1


def canonical_json(data: Any) -> bytes:
    """Sorted-key compact JSON, the bytes every hash is taken over (orjson, byte-identical to json)."""
    return jsonfast.canonical(data)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class InputRef:
    """A reference image: a local file (by content hash), a URL, or another asset (``@name``)."""

    kind: str  # "file" | "url" | "asset"
    ref: str  # project-relative path, URL, or asset name
    sha256: str | None = None  # content of the file, or of the asset's image once known

    def identity(self) -> str | None:
        """What the hash sees: content for files and assets, the URL itself for URLs."""
        return self.ref if self.kind == "url" else self.sha256

    def describe(self) -> dict[str, str]:
        if self.kind == "file":
            return {"path": self.ref, "sha256": self.sha256 or ""}
        if self.kind == "asset":
            return {"asset": self.ref, "sha256": self.sha256 or ""}
        return {"url": self.ref}

    def label(self) -> str:
        return f"@{self.ref}" if self.kind == "asset" else self.ref


@dataclass(frozen=True)
class GenerationSpec:
    """Everything needed to make (and recognise) one asset."""

    name: str
    model: str
    prompt: str
    size: str
    resolution: str | None
    quality: str
    n: int
    background: str | None
    take: int = 0
    inputs: tuple[InputRef, ...] = ()
    mask: InputRef | None = None
    template: str = field(default="", compare=False)  # the image key it was expanded from

    @classmethod
    def effective(cls, *, name: str, model: str, prompt: str, size: str | None, resolution: str | None,
                  quality: str | None, n: int | None, background: str | None, take: int | None,
                  inputs: tuple[InputRef, ...] = (), mask: InputRef | None = None,
                  template: str = "") -> "GenerationSpec":
        """A spec with the model's defaults filled in and spellings normalised."""
        rules = RULES[model]
        size = (size or rules.default_size).replace("×", "x").replace("X", "x")
        if model == GPT_IMAGE_2 and size in GPT2_RATIOS:
            resolution = (resolution or "1K").upper()
        else:
            resolution = resolution.upper() if resolution else None
        if model == GPT_IMAGE_2:
            background = background or "opaque"
        return cls(name=name, model=model, prompt=prompt, size=size, resolution=resolution,
                   quality=quality or rules.default_quality, n=n or 1, background=background,
                   take=take or 0, inputs=tuple(inputs), mask=mask, template=template)

    @property
    def dims(self) -> tuple[int, int] | None:
        """Planned pixel size; None for ``auto``."""
        return dimensions(self.model, self.size, self.resolution)

    def hash_payload(self, placeholder: bool) -> dict[str, Any]:
        return {
            "format": HASH_FORMAT, "model": self.model, "prompt": self.prompt, "size": self.size,
            "resolution": self.resolution, "quality": self.quality, "n": self.n,
            "background": self.background, "take": self.take,
            "inputs": [i.identity() for i in self.inputs],
            "mask": self.mask.identity() if self.mask else None,
            "placeholder": placeholder,
        }

    def spec_hash(self, placeholder: bool = False) -> str | None:
        """sha256 of the canonical spec; None while an ``@asset`` input's image is not yet known."""
        if any(i.identity() is None for i in self.inputs) or (self.mask and self.mask.identity() is None):
            return None
        return sha256_hex(canonical_json(self.hash_payload(placeholder)))

    def request(self) -> dict[str, Any]:
        """What is sent, as the lockfile and plan show it (inputs by path and content hash)."""
        req: dict[str, Any] = {"model": self.model, "prompt": self.prompt, "size": self.size,
                               "quality": self.quality}
        if self.resolution:
            req["resolution"] = self.resolution
        if self.n != 1:
            req["n"] = self.n
        if self.background and self.background != "opaque":
            req["background"] = self.background
        if self.inputs:
            req["inputs"] = [i.describe() for i in self.inputs]
        if self.mask:
            req["mask"] = self.mask.describe()
        return req

    def api_body(self, image_urls: list[str] | None = None, mask_url: str | None = None) -> dict[str, Any]:
        """The JSON body of ``POST /v1/images/generations``."""
        body = {k: v for k, v in self.request().items() if k not in ("inputs", "mask")}
        if image_urls:
            body["image_urls"] = list(image_urls)
        if mask_url:
            body["mask_url"] = mask_url
        return body

    def with_inputs(self, inputs: tuple[InputRef, ...], mask: InputRef | None) -> "GenerationSpec":
        return replace(self, inputs=inputs, mask=mask)
