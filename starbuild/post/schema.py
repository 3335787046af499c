"""The config models of ``post``, ``variants`` and ``atlases`` (SPEC.md §8), and their canonical form.

Only pydantic here (no Pillow), so the config loader can validate steps with file:line errors. A
step is a one-key mapping (``- resize: {width: 256}``) or a bare name (``- trim``); unknown steps
and unknown parameters are ``extra="forbid"`` errors located by the YAML marks.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Bump when a step's output changes for the same input: every derived file is then made again.
PROCESSING_VERSION = 1
FORMATS = ("png", "webp", "avif", "jpeg")
Format = Literal["png", "webp", "avif", "jpeg"]
EXTENSIONS = {"png": "png", "webp": "webp", "avif": "avif", "jpeg": "jpg"}
_COLOR_RE = re.compile(r"^#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


def _color(v: Any, allow_auto: bool = False) -> Any:
    if v is None or (allow_auto and v == "auto") or v == "transparent":
        return v
    if not isinstance(v, str) or not _COLOR_RE.match(v):
        extra = ", 'auto'" if allow_auto else ""
        raise ValueError(f"{v!r} is not a colour; write '#rrggbb', '#rrggbbaa', 'transparent'{extra}")
    return v.lower()


class Trim(_Strict):
    """Cut away a flat border: transparent pixels, or the colour of the corners on opaque images."""

    padding: int = Field(0, ge=0, le=4096, description="pixels kept around the content")
    tolerance: int = Field(8, ge=0, le=255, description="how far from the border colour still counts as border")


class Crop(_Strict):
    """A fixed rectangle (clipped to the image)."""

    x: int = Field(0, ge=0)
    y: int = Field(0, ge=0)
    width: int = Field(ge=1, le=16384)
    height: int = Field(ge=1, le=16384)


class Resize(_Strict):
    """Scale to a box; ``fit`` says how the aspect ratio is kept (as in sharp)."""

    width: int | None = Field(None, ge=1, le=16384)
    height: int | None = Field(None, ge=1, le=16384)
    fit: Literal["cover", "contain", "fill", "inside", "outside"] = "contain"
    background: str = Field("transparent", description="fill of contain's letterbox")
    upscale: bool = Field(True, description="false keeps images smaller than the box at their size")

    _bg = field_validator("background")(classmethod(lambda cls, v: _color(v)))

    @model_validator(mode="after")
    def _box(self) -> "Resize":
        if self.width is None and self.height is None:
            raise ValueError("resize needs width, height or both")
        return self


class Pad(_Strict):
    """Grow the canvas: to a size, to a multiple of N, or to the next powers of two."""

    to: str | None = Field(None, description="pow2, or a size WxH")
    multiple: int | None = Field(None, ge=2, le=4096)
    color: str = "transparent"
    square: bool = Field(False, description="with pow2 or multiple, make both sides equal")

    _c = field_validator("color")(classmethod(lambda cls, v: _color(v)))

    @field_validator("to")
    @classmethod
    def _to(cls, v: str | None) -> str | None:
        if v is None or v == "pow2":
            return v
        m = _SIZE_RE.match(str(v))
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            raise ValueError(f"{v!r}: write 'pow2' or a size such as '256x256'")
        return f"{int(m.group(1))}x{int(m.group(2))}"

    @model_validator(mode="after")
    def _one(self) -> "Pad":
        if (self.to is None) == (self.multiple is None):
            raise ValueError("pad needs exactly one of to (pow2 or WxH) or multiple")
        return self


class ChromaKey(_Strict):
    """Make a flat background colour transparent."""

    color: str = Field("auto", description="'auto' (the border's colour) or '#rrggbb'")
    tolerance: int = Field(40, ge=0, le=441, description="colour distance counted as background")
    softness: int = Field(16, ge=0, le=255, description="distance over which alpha ramps up after tolerance")

    _c = field_validator("color")(classmethod(lambda cls, v: _color(v, allow_auto=True)))


class Defringe(_Strict):
    """Remove the key colour's halo from semi-transparent edges."""

    erode: int = Field(1, ge=0, le=16, description="pixels of edge alpha to remove")
    color: str = Field("auto", description="the key colour; auto takes the last chroma_key's")

    _c = field_validator("color")(classmethod(lambda cls, v: _color(v, allow_auto=True)))


class Flatten(_Strict):
    """Composite onto an opaque colour (drops transparency)."""

    color: str = "#ffffff"

    _c = field_validator("color")(classmethod(lambda cls, v: _color(v)))


class Pixelate(_Strict):
    """Blocks of N x N pixels."""

    size: int = Field(8, ge=2, le=512)


class Quantize(_Strict):
    """Pixel art: snap to a grid, reduce to a palette, make alpha binary."""

    colors: int = Field(16, ge=2, le=256)
    palette: list[str] | None = Field(None, min_length=1, max_length=256, description="fixed colours '#rrggbb'")
    grid: int | None = Field(None, ge=2, le=512, description="cell size in pixels; the image is snapped to it")
    alpha: Literal["binary", "keep"] = "binary"
    alpha_threshold: int = Field(128, ge=1, le=255)
    dither: bool = False

    @field_validator("palette")
    @classmethod
    def _palette(cls, v):
        return None if v is None else [_color(c) for c in v]


class FormatStep(_Strict):
    """The delivered file's format."""

    type: Format
    quality: int | None = Field(None, ge=1, le=100)
    lossless: bool = False

    @model_validator(mode="after")
    def _combo(self) -> "FormatStep":
        if self.type in ("png",) and self.quality is not None:
            raise ValueError("png is lossless; quality applies to webp, avif and jpeg")
        if self.type in ("png", "jpeg") and self.lossless:
            raise ValueError(f"lossless applies to webp and avif, not {self.type}")
        return self


STEPS: dict[str, type[_Strict]] = {
    "trim": Trim, "crop": Crop, "resize": Resize, "pad": Pad, "chroma_key": ChromaKey,
    "defringe": Defringe, "flatten": Flatten, "pixelate": Pixelate, "quantize": Quantize, "format": FormatStep,
}


def _step_schema(schema: dict[str, Any]) -> None:
    """In JSON Schema, a step is a bare name or a mapping with exactly one of the step keys."""
    mapping = {k: v for k, v in schema.items() if k not in ("title", "description")}
    mapping.update(minProperties=1, maxProperties=1)
    description = schema.get("description")
    schema.clear()
    schema.update(description=description, anyOf=[{"type": "string", "enum": list(STEPS)}, mapping])


class Step(_Strict):
    """One step: a mapping with exactly one key, the step's name."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True, json_schema_extra=_step_schema)

    trim: Trim | None = None
    crop: Crop | None = None
    resize: Resize | None = None
    pad: Pad | None = None
    chroma_key: ChromaKey | None = None
    defringe: Defringe | None = None
    flatten: Flatten | None = None
    pixelate: Pixelate | None = None
    quantize: Quantize | None = None
    format: FormatStep | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = {v: {}}
        if not isinstance(v, dict) or len(v) != 1:
            raise ValueError("a step is one name with its parameters, e.g. '- resize: {width: 256}' or '- trim'")
        ((name, params),) = v.items()
        return {name: {} if params is None else params}

    @property
    def name(self) -> str:
        return next(k for k in STEPS if getattr(self, k) is not None)

    @property
    def params(self) -> _Strict:
        return getattr(self, self.name)

    def canonical(self) -> dict[str, Any]:
        """The step with every default written out: what the derived file's key hashes."""
        return {self.name: self.params.model_dump(mode="json")}


class Variants(_Strict):
    """Extra widths and formats of the delivered image, for srcset; never upscaled."""

    widths: list[int] = Field(min_length=1, max_length=32, description="pixel widths")
    formats: list[Format] | None = Field(None, min_length=1, description="default: the delivered file's format")
    quality: int | None = Field(None, ge=1, le=100, description="for webp, avif and jpeg")

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 or w > 16384 for w in v):
            raise ValueError("widths are between 1 and 16384 pixels")
        return sorted(set(v))


class Atlas(_Strict):
    """Images packed into pages with engine metadata."""

    include: list[str] = Field(min_length=1, description="asset-name globs")
    max_size: int = Field(2048, ge=16, le=16384, description="page width and height at most; more pages when full")
    padding: int = Field(2, ge=0, le=256, description="pixels between frames")
    extrude: int = Field(0, ge=0, le=32, description="edge pixels repeated around each frame")
    trim: bool = Field(True, description="pack frames without their transparent border")
    pow2: bool = Field(False, description="round page sizes up to powers of two")
    exports: list[Literal["texturepacker", "phaser3", "godot"]] = Field(
        default_factory=lambda: ["texturepacker"], description="metadata files written beside the pages")

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def may_have_alpha(steps: list[Step], transparent_source: bool = False) -> tuple[bool, str]:
    """Whether the image can carry transparency after the steps, and the step that made it so."""
    alpha, why = transparent_source, "background: transparent"
    for i, step in enumerate(steps):
        p = step.params
        if step.name == "chroma_key" or (step.name in ("pad",) and p.color == "transparent") or (
                step.name == "resize" and p.fit == "contain" and p.background == "transparent"):
            alpha, why = True, f"{step.name} (step {i + 1})"
        elif step.name == "flatten":
            alpha = False
    return alpha, why


def delivered_format(steps: list[Step]) -> FormatStep | None:
    """The last format step, which names the delivered file's type."""
    for step in reversed(steps):
        if step.name == "format":
            return step.params
    return None


def jpeg_problem(steps: list[Step] | None, variants: Variants | None, transparent: bool) -> str | None:
    """Why the steps would write transparency into a JPEG, or None."""
    steps = steps or []
    for i, step in enumerate(steps):
        if step.name == "format" and step.params.type == "jpeg":
            alpha, why = may_have_alpha(steps[:i], transparent)
            if alpha:
                return (f"format jpeg cannot hold the transparency made by {why}; "
                        "add '- flatten: {color: \"#ffffff\"}' before it or use png, webp or avif")
    if variants and "jpeg" in (variants.formats or []):
        alpha, why = may_have_alpha(steps, transparent)
        if alpha:
            return (f"variants format jpeg cannot hold the transparency made by {why}; "
                    "add a flatten step or use png, webp or avif")
    return None
