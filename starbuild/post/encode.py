"""Writing images: formats, provenance metadata, and the tiny placeholder data URL."""

from __future__ import annotations

import base64
import io
from xml.sax.saxutils import escape

from PIL import Image, PngImagePlugin

DEFAULT_QUALITY = {"webp": 82, "avif": 60, "jpeg": 85}
PLACEHOLDER_WIDTH = 16
PNG_LEVEL = 6
AVIF_SPEED = 8  # 0 slowest/best .. 10 fastest; 8 keeps a 1024 px encode well under a second


def prepare(img: Image.Image, fmt: str) -> Image.Image:
    """The mode each format stores: alpha only when some pixel is not opaque, never in JPEG."""
    if img.mode == "RGBA" and (fmt == "jpeg" or img.getchannel("A").getextrema()[0] == 255):
        return img.convert("RGB")
    return img


def xmp_packet(meta: dict[str, str]) -> bytes:
    """An XMP packet with the provenance fields in starbuild's namespace."""
    fields = "".join(f"<starbuild:{k}>{escape(str(v))}</starbuild:{k}>" for k, v in sorted(meta.items()))
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:starbuild="https://starbuild.dev/ns/1.0/">'
            f'{fields}</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


_PLUGINS = {"png": "PngImagePlugin", "webp": "WebPImagePlugin", "jpeg": "JpegImagePlugin", "avif": "AvifImagePlugin"}


def _load_plugin(fmt: str) -> None:
    """Import the one Pillow plugin that writes ``fmt``. Left to itself, a save in a format outside
    Pillow's first five imports every plugin it has (PDF, DDS, ...): 20 ms of every build."""
    import importlib

    try:
        importlib.import_module(f"PIL.{_PLUGINS[fmt]}")
    except (KeyError, ImportError):
        pass  # Pillow finds it its own way


def encode(img: Image.Image, fmt: str, *, quality: int | None = None, lossless: bool = False,
           meta: dict[str, str] | None = None) -> bytes:
    """The image as bytes of ``fmt``; ``meta`` becomes PNG text chunks or XMP, else no metadata at all."""
    img = prepare(img, fmt)
    img.info = {}  # never carry the source's profile or text along: variants strip metadata
    out = io.BytesIO()
    kw: dict = {}
    if fmt == "png":
        kw = {"compress_level": PNG_LEVEL}
        if meta:
            info = PngImagePlugin.PngInfo()
            for k, v in sorted(meta.items()):
                info.add_text(f"starbuild:{k}", str(v))
            kw["pnginfo"] = info
    else:
        kw = {"quality": quality or DEFAULT_QUALITY[fmt]}
        if fmt in ("webp", "avif") and lossless:
            kw["lossless"] = True
        if fmt == "avif":
            # One encoder thread: the process pool already keeps every core busy, and libavif's own
            # threads were slower even alone on a 1024 px image (measured in bench/post.py).
            kw["speed"], kw["max_threads"] = AVIF_SPEED, 1
        if fmt == "webp":
            kw["method"] = 4
        if meta:
            kw["xmp"] = xmp_packet(meta)
    _load_plugin(fmt)
    img.save(out, fmt.upper(), **kw)
    return out.getvalue()


def placeholder_url(img: Image.Image) -> str:
    """A blurred-up stand-in for lazy loading: a few hundred bytes of WebP as a data URL."""
    w, h = img.size
    if img.mode not in ("RGB", "RGBA"):
        alpha = "A" in img.mode or "a" in img.mode or "transparency" in img.info
        img = img.convert("RGBA" if alpha else "RGB")
    factor = min(w, h) // (PLACEHOLDER_WIDTH * 4)
    if factor > 1:
        img = img.reduce(factor)  # averages factor x factor blocks (every pixel counts), faster than one BOX pass
    small = img.resize((PLACEHOLDER_WIDTH, max(1, round(h * PLACEHOLDER_WIDTH / w))), Image.Resampling.BOX)
    data = encode(small, "webp", quality=40)
    return "data:image/webp;base64," + base64.b64encode(data).decode()


def read_provenance(path) -> dict[str, str]:
    """The provenance fields of a file starbuild wrote (PNG text or XMP)."""
    import re

    with Image.open(path) as img:
        img.load()
        text = {k[len("starbuild:"):]: v for k, v in (img.info or {}).items()
                if isinstance(k, str) and k.startswith("starbuild:")}
        if text:
            return text
        xmp = img.info.get("xmp") or b""
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", "replace")
    return dict(re.findall(r"<starbuild:(\w+)>([^<]*)</starbuild:\1>", xmp))
