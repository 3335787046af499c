"""Placeholder images: exact pixel size, deterministic, and clearly marked as placeholders."""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, ImageOps

# Low compression keeps 4K renders fast; placeholders are flat, so they stay small anyway.
PNG_COMPRESS_LEVEL = 1
MAX_PROMPT_LINES = 8
TITLE = "PLACEHOLDER"


def render_placeholder(prompt: str, model: str, width: int, height: int, index: int = 0,
                       mode: str = "full", base: bytes | None = None, *,
                       transparent: bool = False, sample: str = "") -> bytes:
    """A PNG of exactly ``width`` x ``height`` standing in for a generated image.

    The same arguments always give the same bytes; a different ``index`` gives a different
    image. ``mode="plain"`` is a solid colour (fast, for benchmarks); ``"full"`` draws the word
    PLACEHOLDER, the prompt, the model and the size, over a scaled copy of ``base`` when given.
    """
    if width < 1 or height < 1:
        raise ValueError(f"cannot render {width}x{height}")
    digest = _digest(prompt, model, width, height, index, base, sample)
    light, dark = _palette(digest)
    if mode == "plain":
        return _plain(width, height, light, transparent)
    if mode != "full":
        raise ValueError(f"render mode must be 'full' or 'plain', not {mode!r}")
    image = _background(width, height, light, dark, base)
    if transparent:
        image = image.convert("RGBA")
        image.putalpha(0)
    _draw_card(image, prompt, f"{model} | {width}x{height} | image {index + 1}", dark)
    return _png(image)


def _plain(width: int, height: int, colour, transparent: bool) -> bytes:
    """One palette colour: a tenth of the time of an RGB image, and a few kilobytes even at 4K."""
    image = Image.new("P", (width, height), 0)
    image.putpalette(colour)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL, **({"transparency": 0} if transparent else {}))
    return out.getvalue()


def _digest(prompt: str, model: str, width: int, height: int, index: int, base: bytes | None,
            sample: str = "") -> bytes:
    key = [prompt, model, width, height, index, hashlib.sha256(base).hexdigest() if base else None]
    if sample:  # another draw of the same request; no sample keeps the historical bytes
        key.append(sample)
    return hashlib.sha256(json.dumps(key).encode()).digest()


def _palette(digest: bytes) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    hue = int.from_bytes(digest[:2], "big") / 65536
    sat = 0.45 + digest[2] / 255 * 0.3

    def rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
        r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
        return round(r * 255), round(g * 255), round(b * 255)

    return rgb(hue, sat, 0.85), rgb(hue + 0.08, sat + 0.1, 0.35)


def _background(width: int, height: int, light, dark, base: bytes | None) -> Image.Image:
    if base is not None:
        with Image.open(io.BytesIO(base)) as source:
            return ImageOps.fit(source.convert("RGB"), (width, height), Image.Resampling.BILINEAR)
    # A flat backdrop, like a product shot or an icon on a plain ground: chroma_key and trim in post
    # steps then have real work to do on placeholders. The subject is a gradient disc in the middle.
    image = Image.new("RGB", (width, height), light)
    short = min(width, height)
    if short >= 8:
        r = short * 3 // 8
        cx, cy = width // 2, height // 2
        seed = Image.new("RGB", (2, 2))
        seed.putdata([_mix(light, dark, 0.5), _mix(light, dark, 0.75), _mix(light, dark, 0.75), dark])
        disc = seed.resize((2 * r, 2 * r), Image.Resampling.BILINEAR)
        mask = Image.new("L", (2 * r, 2 * r), 0)
        ImageDraw.Draw(mask).ellipse((0, 0, 2 * r - 1, 2 * r - 1), fill=255)
        image.paste(disc, (cx - r, cy - r), mask)
    return image


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap; long words are broken; past ``max_lines`` the last line ends in '...'."""
    # No glyph is narrower than about a fifth of the font size: more text than this cannot show.
    budget = (max_lines + 1) * int(max_width / max(1.0, font.size * 0.2) + 1)
    lines: list[str] = []
    line = ""
    for word in text[:budget].split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= max_width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while len(word) > 1 and len(lines) <= max_lines and font.getlength(word) > max_width:
            cut = max(1, int(len(word) * max_width / font.getlength(word)))
            lines.append(word[:cut])
            word = word[cut:]
        line = word
        if len(lines) > max_lines:
            break
    if line and len(lines) <= max_lines:
        lines.append(line)
    if lines and (len(lines) > max_lines or len(text) > budget):
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "...") > max_width:
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def _draw_card(image: Image.Image, prompt: str, footer: str, dark) -> None:
    width, height = image.size
    short = min(width, height)
    margin = max(4, width // 16)
    text_width = width - 2 * margin
    title_font = _font(max(8, short // 9))
    while title_font.getlength(TITLE) > text_width and title_font.size > 8:
        title_font = _font(int(title_font.size * 0.8))
    body_font = _font(max(6, short // 28))
    prompt_lines = _wrap(prompt, body_font, text_width, MAX_PROMPT_LINES) or [""]
    gap = max(2, body_font.size // 3)
    lines = [(TITLE, title_font)] + [(text, body_font) for text in prompt_lines] + [(footer, body_font)]
    heights = [font.size + gap for _, font in lines]
    block = sum(heights) + gap * 2
    top = max(0, (height - block) // 2)
    box = (margin // 2, top, width - margin // 2, min(height, top + block))
    _shade(image, box, dark)
    draw = ImageDraw.Draw(image)
    frame = max(2, short // 120)
    if box[2] > box[0] and box[3] > box[1]:
        draw.rectangle(box, outline=(255, 255, 255, 255), width=frame)
    y = top + gap
    for (text, font), step in zip(lines, heights):
        x = (width - font.getlength(text)) / 2
        draw.text((x, y), text, font=font, fill=(255, 255, 255, 255))
        y += step


def _shade(image: Image.Image, box: tuple[int, int, int, int], dark) -> None:
    """Darken the text panel only (blending the whole image would cost more at 4K)."""
    if box[2] <= box[0] or box[3] <= box[1]:
        return
    region = image.crop(box)
    fill = Image.new(image.mode, region.size, dark + ((230,) if image.mode == "RGBA" else ()))
    if image.mode == "RGBA":
        image.paste(fill, box)
    else:
        image.paste(Image.blend(region, fill, 0.6), box)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


class RenderCache:
    """Rendered images by key, least recently used dropped first, bounded in count and bytes."""

    def __init__(self, max_items: int = 256, max_bytes: int = 256 * 1024 * 1024):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[object, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_or_render(self, key: object, render: Callable[[], bytes]) -> bytes:
        """The cached image for ``key``, rendering it (outside the lock) on a miss."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = render()
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._bytes += len(data)
            while self._items and (len(self._items) > self.max_items or self._bytes > self.max_bytes):
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)
        return data

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
