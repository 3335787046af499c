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
