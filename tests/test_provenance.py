"""Generated images carry where they came from (SPEC.md §8), also without any post step."""

from __future__ import annotations

import hashlib

from PIL import Image

from conftest import api_build, matrix_config
from starbuild.engine.outcome import Outcome
from starbuild.post.encode import read_provenance


def test_a_plain_generated_image_carries_spec_hash_model_and_take(project, emulator):
    project.config(matrix_config(1) + "    take: 3\n")
    report = api_build(project, emulator)
    assert report.exit_code == 0 and report.count(Outcome.BUILT) == 1
    entry = project.lock()["assets"]["icons/i0"]
    published = project.root / "assets" / "current" / entry["files"][0]["path"]
    assert read_provenance(published) == {"spec_hash": entry["spec_hash"], "model": "gpt-image-2", "take": "3"}
    # Stamped, then hashed and stored: the lockfile's sha256 is the published file's.
    assert hashlib.sha256(published.read_bytes()).hexdigest() == entry["files"][0]["sha256"]
    with Image.open(published) as img:  # the pixels are the API's, untouched
        assert img.size == (1024, 1024) and img.format == "PNG"


def test_the_same_spec_made_again_gives_the_same_bytes(project, emulator, tmp_path):
    project.config(matrix_config(1))
    api_build(project, emulator)
    first = project.lock()["assets"]["icons/i0"]["files"][0]["sha256"]
    import shutil

    shutil.rmtree(tmp_path / ".cache")  # the store is gone: the image is paid for and stamped again
    api_build(project, emulator, force=("icons/i0",))
    assert project.lock()["assets"]["icons/i0"]["files"][0]["sha256"] == first


def _stream(stamp, data: bytes, sizes) -> bytes:
    out, at = b"", 0
    for size in sizes:
        out += stamp.feed(data[at:at + size])
        at += size
    return out + stamp.feed(data[at:]) + stamp.end()


def test_the_stamp_is_the_same_however_the_download_arrives_in_parts():
    """The stamp goes in as the bytes stream past: parts of any size, even one byte, or all at once."""
    import io
    import random

    from starbuild.engine.verify import PngStamp

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "PNG")
    png = buf.getvalue()
    fields = {"spec_hash": "ab" * 32, "model": "gpt-image-2", "take": "2"}
    whole = PngStamp(fields)
    stamped = _stream(whole, png, [])
    assert whole.stamped and stamped.endswith(png[-12:]) and len(stamped) > len(png)
    with Image.open(io.BytesIO(stamped)) as img:
        img.load()
        assert img.info["starbuild:take"] == "2" and img.getpixel((5, 5)) == (200, 10, 10)
    rng = random.Random(7)
    for sizes in ([1] * len(png), [5, 7, 11], [len(png) - 3], [len(png) - 12, 1, 1],
                  [rng.randint(0, 40) for _ in range(30)]):
        assert _stream(PngStamp(fields), png, sizes) == stamped, sizes


def test_what_is_not_a_whole_png_passes_the_stamp_untouched():
    from starbuild.engine.verify import PngStamp

    buf = __import__("io").BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    for data in (buf.getvalue(), b"\x89PNG\r\n\x1a\n" + b"x" * 30, b"\x89PNG\r\n\x1a\nIEND", b""):
        stamp = PngStamp({"model": "m"})
        assert _stream(stamp, data, [3, 9]) == data and not stamp.stamped
