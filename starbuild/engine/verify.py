"""Verify a downloaded image: it decodes, it is not a decompression bomb, and it has the planned size."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from starbuild.errors import VerifyError
from starbuild.models import MAX_PIXELS

_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str  # png | jpeg | webp | gif
    ext: str


def verify_image(path: Path, dims: tuple[int, int] | None) -> ImageInfo:
    """Check a file decodes as an image of the planned size (any size within limits for auto)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                fmt = img.format or ""
                if width * height > MAX_PIXELS * 1.1:
                    raise VerifyError(f"the result is {width}x{height}, larger than any size the API makes; refused")
                img.verify()
    except VerifyError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise VerifyError("the result is a decompression bomb (too many pixels); refused") from None
    except Exception as exc:
        raise VerifyError(f"the result does not decode as an image: {exc}") from None
    if fmt not in _EXT:
        raise VerifyError(f"the result is a {fmt or 'unknown'} file, not PNG, JPEG or WebP")
    if dims is not None and (width, height) != tuple(dims):
        raise VerifyError(f"the result is {width}x{height}, the plan says {dims[0]}x{dims[1]}")
    return ImageInfo(width, height, fmt.lower().replace("jpeg", "jpeg"), _EXT[fmt])
