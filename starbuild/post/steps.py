"""The processing steps, applied with Pillow to an RGBA image (SPEC.md §8).

Each step is a pure function ``(image, params, state) -> image``; ``state`` carries what a later
step needs from an earlier one (the key colour chroma_key found, for defringe).
"""

from __future__ import annotations

from typing import Any, Callable

from PIL import Image, ImageChops, ImageFilter, ImageMath, ImageOps

from starbuild.post import schema as s

RGBA = "RGBA"
_RESAMPLE = Image.Resampling.LANCZOS


def parse_color(text: str) -> tuple[int, int, int, int]:
    """'#rrggbb', '#rrggbbaa' or 'transparent' as an RGBA tuple."""
    if text == "transparent":
        return (0, 0, 0, 0)
    h = text.lstrip("#")
    rgb = tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))
    alpha = int(h[6:8], 16) if len(h) == 8 else 255
    return (*rgb, alpha)  # type: ignore[return-value]


def border_color(img: Image.Image) -> tuple[int, int, int]:
    """The flat background's colour: the average of the most common shade of the outermost pixel ring.

    Shades are buckets of 8 levels per channel, so sensor noise or JPEG ringing on a plain ground
    still gives one clear winner.
    """
    w, h = img.size
    rgb = img.convert("RGB")
    ring = [rgb.crop((0, 0, w, 1)), rgb.crop((0, h - 1, w, h)), rgb.crop((0, 0, 1, h)), rgb.crop((w - 1, 0, w, h))]
    counts: dict[tuple, list[int]] = {}
    for part in ring:
        for n, (r, g, b) in part.getcolors(maxcolors=part.width * part.height + 1) or []:
            acc = counts.setdefault((r >> 3, g >> 3, b >> 3), [0, 0, 0, 0])
            acc[0] += n
            acc[1] += r * n
            acc[2] += g * n
            acc[3] += b * n
    n, r, g, b = max(counts.values(), key=lambda acc: (acc[0], acc[1:]))
    return round(r / n), round(g / n), round(b / n)


def _distance_mask(img: Image.Image, key: tuple[int, int, int]) -> Image.Image:
    """Per pixel, the largest channel difference from ``key`` (an 'L' image)."""
    rgb = img.convert("RGB")
    diff = ImageChops.difference(rgb, Image.new("RGB", img.size, key))
    r, g, b = diff.split()
    return ImageChops.lighter(ImageChops.lighter(r, g), b)


def trim(img: Image.Image, p: s.Trim, state: dict) -> Image.Image:
    alpha = img.getchannel("A")
    fill: tuple[int, ...] = (0, 0, 0, 0)
    if alpha.getextrema()[0] < 255:
        box = alpha.point(lambda a: 255 if a > p.tolerance else 0).getbbox()
    else:  # opaque: the border is the corners' colour, and the padding is made of it too
        ground = border_color(img)
        fill = (*ground, 255)
        box = _distance_mask(img, ground).point(lambda d: 255 if d > p.tolerance else 0).getbbox()
    if box is None:  # nothing but background: keep one pixel of it rather than fail
        return Image.new(RGBA, (1, 1), fill)
    left, top, right, bottom = box
    pad = p.padding
    out = Image.new(RGBA, (right - left + 2 * pad, bottom - top + 2 * pad), fill)
    out.paste(img.crop(box), (pad, pad))
    return out


def crop(img: Image.Image, p: s.Crop, state: dict) -> Image.Image:
    w, h = img.size
    box = (min(p.x, w - 1), min(p.y, h - 1), min(p.x + p.width, w), min(p.y + p.height, h))
    return img.crop(box)


def _box(img: Image.Image, p: s.Resize) -> tuple[int, int]:
    w, h = img.size
    if p.width is None:
        return max(1, round(w * p.height / h)), p.height
    if p.height is None:
        return p.width, max(1, round(h * p.width / w))
    return p.width, p.height


def resize(img: Image.Image, p: s.Resize, state: dict) -> Image.Image:
    w, h = img.size
    bw, bh = _box(img, p)
    if not p.upscale and w <= bw and h <= bh:
        return img
    if p.width is None or p.height is None or p.fit == "fill":
        return img.resize((bw, bh), _RESAMPLE)
    if p.fit == "cover":
        return ImageOps.fit(img, (bw, bh), _RESAMPLE)
    scale = min(bw / w, bh / h) if p.fit in ("contain", "inside") else max(bw / w, bh / h)
    scaled = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), _RESAMPLE)
    if p.fit != "contain":
        return scaled
    out = Image.new(RGBA, (bw, bh), parse_color(p.background))
    out.alpha_composite(scaled, ((bw - scaled.width) // 2, (bh - scaled.height) // 2))
    return out


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def pad(img: Image.Image, p: s.Pad, state: dict) -> Image.Image:
    w, h = img.size
    if p.to == "pow2":
        tw, th = _pow2(w), _pow2(h)
    elif p.to:
        tw, th = (int(x) for x in p.to.split("x"))
        tw, th = max(tw, w), max(th, h)
    else:
        m = p.multiple
        tw, th = -(-w // m) * m, -(-h // m) * m
    if p.square:
        tw = th = max(tw, th)
    out = Image.new(RGBA, (tw, th), parse_color(p.color))
    out.paste(img, ((tw - w) // 2, (th - h) // 2), img if p.color != "transparent" else None)
    return out


def chroma_key(img: Image.Image, p: s.ChromaKey, state: dict) -> Image.Image:
    key = border_color(img) if p.color == "auto" else parse_color(p.color)[:3]
    state["key"] = key
    dist = _distance_mask(img, key)
    lo, soft = p.tolerance, max(1, p.softness)
    ramp = dist.point(lambda d: 0 if d <= lo else min(255, (d - lo) * 255 // soft))
    out = img.copy()
    out.putalpha(ImageChops.multiply(img.getchannel("A"), ramp))
    return out


def defringe(img: Image.Image, p: s.Defringe, state: dict) -> Image.Image:
    """Take the key colour back out of semi-transparent edge pixels, then erode the edge."""
    key = state.get("key") if p.color == "auto" else parse_color(p.color)[:3]
    out = img
    if key is not None:
        out = _unmix(img, key)
    if p.erode:
        alpha = out.getchannel("A").filter(ImageFilter.MinFilter(2 * p.erode + 1))
        out = out.copy()
        out.putalpha(alpha)
    return out


def _unmix(img: Image.Image, key: tuple[int, int, int]) -> Image.Image:
    """colour = (observed - (1 - a) * key) / a for every partly transparent pixel."""
    r, g, b, a = img.split()

    def band(v: Image.Image, k: int) -> Image.Image:
        return ImageMath.lambda_eval(
            lambda e: e["convert"](e["max"](e["min"]((e["v"] * 255 - (255 - e["a"]) * k) / e["max"](e["a"], 1), 255),
                                            0), "L"), v=v, a=a)

    opaque = a.point(lambda v: 255 if v == 255 else 0)
    bands = [Image.composite(v, band(v, k), opaque) for v, k in zip((r, g, b), key)]
    return Image.merge(RGBA, (*bands, a))


def flatten(img: Image.Image, p: s.Flatten, state: dict) -> Image.Image:
    out = Image.new(RGBA, img.size, parse_color(p.color)[:3] + (255,))
    out.alpha_composite(img)
    return out


def pixelate(img: Image.Image, p: s.Pixelate, state: dict) -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, w // p.size), max(1, h // p.size)), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.NEAREST)


def quantize(img: Image.Image, p: s.Quantize, state: dict) -> Image.Image:
    w, h = img.size
    work = img
    if p.grid:
        work = img.resize((max(1, w // p.grid), max(1, h // p.grid)), Image.Resampling.BOX)
    alpha = work.getchannel("A")
    if p.alpha == "binary":
        alpha = alpha.point(lambda v: 255 if v >= p.alpha_threshold else 0)
    dither = Image.Dither.FLOYDSTEINBERG if p.dither else Image.Dither.NONE
    rgb = work.convert("RGB")
    if p.palette:
        pal = Image.new("P", (1, 1))
        flat = [c for colour in p.palette for c in parse_color(colour)[:3]]
        pal.putpalette(flat + flat[:3] * (256 - len(p.palette)))
        reduced = rgb.quantize(palette=pal, dither=dither)
    else:
        reduced = rgb.quantize(colors=p.colors, method=Image.Quantize.MEDIANCUT, dither=dither)
    out = reduced.convert(RGBA)
    out.putalpha(alpha)
    if p.grid:
        out = out.resize((out.width * p.grid, out.height * p.grid), Image.Resampling.NEAREST)
    return out


def format_(img: Image.Image, p: s.FormatStep, state: dict) -> Image.Image:
    state["format"] = p
    return img


APPLY: dict[str, Callable[[Image.Image, Any, dict], Image.Image]] = {
    "trim": trim, "crop": crop, "resize": resize, "pad": pad, "chroma_key": chroma_key, "defringe": defringe,
    "flatten": flatten, "pixelate": pixelate, "quantize": quantize, "format": format_,
}


def apply_steps(img: Image.Image, steps: list[s.Step]) -> tuple[Image.Image, dict]:
    """The image after every step, and the state the steps left (the chosen format, the key colour)."""
    state: dict = {}
    img = img.convert(RGBA) if img.mode != RGBA else img
    for step in steps:
        img = APPLY[step.name](img, step.params, state)
    return img, state
