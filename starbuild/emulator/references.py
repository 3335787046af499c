"""Reference images (image_urls, mask_url) that point at files the emulator itself serves.

The real service accepts a submission whose URLs are well formed and fetches the images while
the task runs, so an input that is gone, expired or not an image fails the *task* with
``image_processing_error`` (the submission is still billed), and a mask that is not a PNG with
alpha of the input's size fails it with ``image_dimension_mismatch``. The emulator decides this
at submission, for the moment processing would start. URLs on other hosts are taken on trust:
the emulator cannot fetch them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image
from starlette.concurrency import run_in_threadpool

REFERENCE_FORMATS = ("JPEG", "PNG", "WEBP")


@dataclass(frozen=True)
class Reference:
    """An image the emulator serves: how to read it and when it can be read."""

    load: Callable[[], bytes]
    available_from: float
    expires_at: float


class Missing:
    """A URL on the emulator's own host that serves nothing (unknown file or result)."""


MISSING = Missing()
Resolve = Callable[[str], "Reference | Missing | None"]
Failure = tuple[str, str]


@dataclass(frozen=True)
class Probe:
    format: str
    size: tuple[int, int]
    has_alpha: bool


def probe_image(data: bytes) -> Probe | None:
    """Format, size and alpha of an image from its header; None when Pillow cannot read it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
            return Probe(image.format or "", image.size, alpha)
    except Exception:  # any undecodable content is simply "not an image"
        return None


async def _read(ref: Reference | Missing, at: float) -> bytes | None:
    if isinstance(ref, Missing) or not ref.available_from <= at < ref.expires_at:
        return None
    return await run_in_threadpool(ref.load)


async def check_references(body: dict, resolve: Resolve, at: float) -> tuple[Failure | None, bytes | None]:
    """(why the task fails or None, the first input's bytes when the emulator serves it)."""
    first: Probe | None = None
    base: bytes | None = None
    for i, url in enumerate(body.get("image_urls") or ()):
        ref = resolve(url)
        if ref is None:
            continue
        data = await _read(ref, at)
        if data is None:
            return ("image_processing_error", f"image_urls[{i}] could not be fetched (missing or expired): {url}"), None
        probe = probe_image(data)
        if probe is None or probe.format not in REFERENCE_FORMATS:
            return ("image_processing_error", f"image_urls[{i}] is not a jpeg, png or webp image: {url}"), None
        if i == 0:
            first, base = probe, data
    mask_url = body.get("mask_url")
    ref = resolve(mask_url) if mask_url else None
    if ref is None:
        return None, base
    data = await _read(ref, at)
    if data is None:
        return ("image_processing_error", f"mask_url could not be fetched (missing or expired): {mask_url}"), base
    probe = probe_image(data)
    if probe is None or probe.format != "PNG" or not probe.has_alpha:
        return ("image_dimension_mismatch", "the mask must be a PNG with an alpha channel"), base
    if first is not None and probe.size != first.size:
        w, h = probe.size
        return ("image_dimension_mismatch",
                f"the mask is {w}x{h} but the first image is {first.size[0]}x{first.size[1]}"), base
    return None, base
