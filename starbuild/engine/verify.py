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


class PngStamp:
    """Adds ``starbuild:<key>`` text chunks to a PNG before its IEND chunk while its bytes stream past
    (``feed`` each part, then ``end``); pixels and every other byte stay as the API sent them.

    The last 12 bytes are held back until the end: if the stream began as a PNG and ends in IEND,
    the chunks go in before them and ``stamped`` is True; anything else passes through untouched.
    """

    _HOLD = 12  # an IEND chunk: length, type and CRC

    def __init__(self, fields: dict[str, str]):
        import struct
        import zlib

        self._chunks = b""
        for key, value in sorted(fields.items()):
            body = f"starbuild:{key}".encode("latin-1") + b"\0" + str(value).encode("latin-1", "replace")
            self._chunks += struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
        self._start = b""
        self._tail = b""
        self._total = 0
        self.stamped = False

    def feed(self, data: bytes) -> bytes:
        self._total += len(data)
        if len(self._start) < 8:
            self._start += data[:8 - len(self._start)]
        buf = self._tail + data
        if len(buf) <= self._HOLD:
            self._tail = buf
            return b""
        self._tail = buf[-self._HOLD:]
        return buf[:-self._HOLD]

    def end(self) -> bytes:
        if (self._start == b"\x89PNG\r\n\x1a\n" and self._total >= 20 and self._tail[4:8] == b"IEND"):
            self.stamped = True
            return self._chunks + self._tail
        return self._tail
