"""Atlas packing: MaxRects (bottom-left rule), deterministic, more pages when one is full.

Frames are packed largest first (height, then width, then name), so the same images always give
the same pages. Each frame occupies its size plus ``2 * extrude`` plus ``padding``; trimmed frames
remember where they sat in the untrimmed image (TexturePacker's spriteSourceSize).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    def contains(self, o: "Rect") -> bool:
        return self.x <= o.x and self.y <= o.y and o.x + o.w <= self.x + self.w and o.y + o.h <= self.y + self.h

    def intersects(self, o: "Rect") -> bool:
        return not (o.x >= self.x + self.w or o.x + o.w <= self.x or o.y >= self.y + self.h or o.y + o.h <= self.y)


class MaxRects:
    """One page's free space as maximal free rectangles."""

    def __init__(self, width: int, height: int):
        self.free = [Rect(0, 0, width, height)]

    def insert(self, w: int, h: int) -> Rect | None:
        best: tuple | None = None
        for r in self.free:
            if w <= r.w and h <= r.h:
                # Bottom-left: pages are cropped to their content, so keep it low and to the left.
                score = (r.y + h, r.x, min(r.w - w, r.h - h))
                if best is None or score < best[0]:
                    best = (score, Rect(r.x, r.y, w, h))
        if best is None:
            return None
        placed = best[1]
        self._split(placed)
        return placed

    def _split(self, used: Rect) -> None:
        out: list[Rect] = []
        for r in self.free:
            if not r.intersects(used):
                out.append(r)
                continue
            if used.x > r.x:
                out.append(Rect(r.x, r.y, used.x - r.x, r.h))
            if used.x + used.w < r.x + r.w:
                out.append(Rect(used.x + used.w, r.y, r.x + r.w - used.x - used.w, r.h))
            if used.y > r.y:
                out.append(Rect(r.x, r.y, r.w, used.y - r.y))
            if used.y + used.h < r.y + r.h:
                out.append(Rect(r.x, used.y + used.h, r.w, r.y + r.h - used.y - used.h))
        out = [r for r in out if r.w > 0 and r.h > 0]
        self.free = [r for i, r in enumerate(out)
                     if not any(j != i and o.contains(r) and (o != r or j < i) for j, o in enumerate(out))]


@dataclass
class Frame:
    """One image in an atlas: where it is, and where it came from."""

    name: str
    image: Image.Image
    source_w: int
    source_h: int
    offset_x: int = 0      # where the trimmed image sat inside the source
    offset_y: int = 0
    page: int = 0
    x: int = 0
    y: int = 0

    @property
    def w(self) -> int:
        return self.image.width

    @property
    def h(self) -> int:
        return self.image.height

    @property
    def trimmed(self) -> bool:
        return (self.w, self.h) != (self.source_w, self.source_h)


def make_frame(name: str, img: Image.Image, trim: bool) -> Frame:
    img = img.convert("RGBA")
    sw, sh = img.size
    if trim:
        box = img.getchannel("A").getbbox()
        if box is None:
            box = (0, 0, 1, 1)
        if box != (0, 0, sw, sh):
            return Frame(name, img.crop(box), sw, sh, box[0], box[1])
    return Frame(name, img, sw, sh)


class AtlasTooSmall(ValueError):
    """A frame larger than a page."""


def pack(frames: list[Frame], max_size: int, padding: int, extrude: int) -> list[tuple[int, int]]:
    """Place every frame (setting page, x, y); the pages' sizes, tight to their content."""
    order = sorted(frames, key=lambda f: (-f.h, -f.w, f.name))
    pages: list[MaxRects] = []
    margin = 2 * extrude + padding
    extents: list[list[int]] = []
    for f in order:
        need_w, need_h = f.w + margin, f.h + margin
        if f.w + 2 * extrude > max_size or f.h + 2 * extrude > max_size:
            raise AtlasTooSmall(f"frame {f.name!r} is {f.w}x{f.h}, larger than max_size {max_size}")
        for i, page in enumerate(pages):
            spot = page.insert(need_w, need_h)
            if spot:
                break
        else:
            # The page is max_size plus one padding, so frames may touch its right and bottom edges.
            pages.append(MaxRects(max_size + padding, max_size + padding))
            extents.append([0, 0])
            i, spot = len(pages) - 1, pages[-1].insert(need_w, need_h)
        f.page, f.x, f.y = i, spot.x + extrude, spot.y + extrude
        extents[i][0] = max(extents[i][0], f.x + f.w + extrude)
        extents[i][1] = max(extents[i][1], f.y + f.h + extrude)
    return [(w, h) for w, h in extents]


def _pow2(n: int) -> int:
    return 1 << (max(1, n) - 1).bit_length()


def render_pages(frames: list[Frame], sizes: list[tuple[int, int]], extrude: int, pow2: bool) -> list[Image.Image]:
    """The page images: each frame pasted at its place, its edge pixels repeated ``extrude`` times."""
    if pow2:
        sizes = [(_pow2(w), _pow2(h)) for w, h in sizes]
    pages = [Image.new("RGBA", size, (0, 0, 0, 0)) for size in sizes]
    for f in frames:
        page = pages[f.page]
        if extrude:
            _extrude(page, f, extrude)
        page.paste(f.image, (f.x, f.y))
    return pages


def _extrude(page: Image.Image, f: Frame, n: int) -> None:
    img = f.image
    w, h = img.size
    page.paste(img.crop((0, 0, w, 1)).resize((w, n)), (f.x, f.y - n))
    page.paste(img.crop((0, h - 1, w, h)).resize((w, n)), (f.x, f.y + h))
    page.paste(img.crop((0, 0, 1, h)).resize((n, h)), (f.x - n, f.y))
    page.paste(img.crop((w - 1, 0, w, h)).resize((n, h)), (f.x + w, f.y))
    for cx, cy, px, py in ((0, 0, f.x - n, f.y - n), (w - 1, 0, f.x + w, f.y - n),
                           (0, h - 1, f.x - n, f.y + h), (w - 1, h - 1, f.x + w, f.y + h)):
        page.paste(Image.new("RGBA", (n, n), img.getpixel((cx, cy))), (px, py))
