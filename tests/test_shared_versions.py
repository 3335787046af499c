"""Versions share unchanged files (hard links between versions, never to the store), safely:
an in-place edit is never carried into a new version, and rollback restores what was recorded."""

from __future__ import annotations

import json
import os

from conftest import matrix_config

from starbuild.store.fileindex import INDEX_NAME


def _ino(path) -> int:
    return path.stat().st_ino


def _build(project, count: int, prompt: str = "icon {{ i }}"):
    project.config(matrix_config(count, prompt=prompt))
    res = project.run("build", "--offline")
    assert res.exit_code == 0, res.stderr + res.stdout
    return res


def _edit_in_place(path) -> None:
    with path.open("r+b") as fh:  # same inode, new bytes: what an image editor saving in place does
        fh.seek(60)
        fh.write(b"\x00\xff" * 8)


def test_a_new_version_links_unchanged_files_and_copies_the_changed_one(project, tmp_path):
    _build(project, 3)
    _build(project, 4)  # one asset added: v0002
    v1, v2 = project.root / "assets" / "v0001", project.root / "assets" / "v0002"
    for i in range(3):
        assert _ino(v1 / "icons" / f"i{i}.png") == _ino(v2 / "icons" / f"i{i}.png")
        sha = project.lock()["assets"][f"icons/i{i}"]["files"][0]["sha256"]
        obj = tmp_path / ".cache" / "objects" / sha[:2] / sha
        assert obj.stat().st_nlink == 1 and _ino(obj) != _ino(v2 / "icons" / f"i{i}.png")  # never the store
    assert (v2 / "icons" / "i3.png").stat().st_nlink == 1
    assert _ino(v1 / "manifest.json") != _ino(v2 / "manifest.json")
    record = json.loads((project.root / ".starbuild" / INDEX_NAME).read_text())
    assert str(_ino(v2 / "icons" / "i3.png")) in record["inodes"]


def test_a_file_edited_in_place_is_not_carried_into_the_next_version(project, tmp_path):
    _build(project, 2)
    current = project.root / "assets" / "current" / "icons" / "i0.png"
    original = current.read_bytes()
    _edit_in_place(current)
    _build(project, 3)
    v2 = project.root / "assets" / "v0002" / "icons" / "i0.png"
    assert v2.read_bytes() == original and _ino(v2) != _ino(project.root / "assets" / "v0001" / "icons" / "i0.png")
    sha = project.lock()["assets"]["icons/i0"]["files"][0]["sha256"]
    assert (tmp_path / ".cache" / "objects" / sha[:2] / sha).read_bytes() == original  # the store untouched
    # i1 was not edited: still shared
    assert _ino(project.root / "assets" / "v0001" / "icons" / "i1.png") == \
        _ino(project.root / "assets" / "v0002" / "icons" / "i1.png")


def test_rollback_restores_a_shared_file_edited_in_a_later_version(project):
    _build(project, 2)
    _build(project, 3)
    v1_file = project.root / "assets" / "v0001" / "icons" / "i0.png"
    original = v1_file.read_bytes()
    _edit_in_place(project.root / "assets" / "current" / "icons" / "i0.png")  # v0002's, shared with v0001
    assert v1_file.read_bytes() != original
    res = project.run("rollback", "1")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.stderr
    assert v1_file.read_bytes() == original
    assert os.readlink(project.root / "assets" / "current") == "v0001"


def test_rollback_warns_when_an_edited_file_cannot_be_restored(project, tmp_path):
    _build(project, 2)
    _build(project, 3)
    sha = project.lock()["assets"]["icons/i0"]["files"][0]["sha256"]
    obj = tmp_path / ".cache" / "objects" / sha[:2] / sha
    os.chmod(obj, 0o644)
    obj.unlink()
    _edit_in_place(project.root / "assets" / "current" / "icons" / "i0.png")
    res = project.run("rollback", "1")
    assert res.exit_code == 0
    assert "v0001/icons/i0.png was edited in place" in res.stderr


def test_an_unreadable_file_record_means_copies_not_errors(project):
    _build(project, 2)
    (project.root / ".starbuild" / INDEX_NAME).write_text("{not json")
    _build(project, 3)
    v1, v2 = project.root / "assets" / "v0001", project.root / "assets" / "v0002"
    assert _ino(v1 / "icons" / "i0.png") != _ino(v2 / "icons" / "i0.png")  # copied, checked
    assert (v2 / "icons" / "i0.png").read_bytes() == (v1 / "icons" / "i0.png").read_bytes()
    _build(project, 4)  # the record was written anew: v0003 links v0002's files again
    assert _ino(v2 / "icons" / "i0.png") == _ino(project.root / "assets" / "v0003" / "icons" / "i0.png")


def test_a_replaced_file_with_the_same_size_and_time_is_not_vouched_for(project):
    """The record is per inode: a file swapped in under the same name (a new inode) is copied, not linked."""
    _build(project, 2)
    current = project.root / "assets" / "current" / "icons" / "i0.png"
    st = current.stat()
    data = bytearray(current.read_bytes())
    data[70] ^= 0xFF
    current.rename(current.with_name("i0.old"))  # kept, so the new file cannot reuse its inode number
    current.write_bytes(bytes(data))
    os.utime(current, ns=(st.st_atime_ns, st.st_mtime_ns))
    _build(project, 3)
    v2 = project.root / "assets" / "v0002" / "icons" / "i0.png"
    sha = project.lock()["assets"]["icons/i0"]["files"][0]["sha256"]
    import hashlib

    assert hashlib.sha256(v2.read_bytes()).hexdigest() == sha
