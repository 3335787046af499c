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


def stamp_provenance(path: Path, fields: dict[str, str]) -> tuple[str, int] | None:
    """Add ``starbuild:<key>`` text chunks to a PNG in place, before its IEND chunk; pixels and every
    other byte stay as the API sent them. The stamped file's (sha256, size), hashed from the bytes
    in hand; None (file untouched) when it is not a PNG ending in IEND."""
    import hashlib
    import struct
    import zlib

    data = path.read_bytes()
    iend = data.rfind(b"IEND")
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or iend < 12 or iend + 8 != len(data):
        return None
    chunks = b""
    for key, value in sorted(fields.items()):
        body = f"starbuild:{key}".encode("latin-1") + b"\0" + str(value).encode("latin-1", "replace")
        chunks += struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    stamped = data[:iend - 4] + chunks + data[iend - 4:]
    tmp = path.with_name(path.name + ".stamp")
    tmp.write_bytes(stamped)
    tmp.replace(path)
    return hashlib.sha256(stamped).hexdigest(), len(stamped)
