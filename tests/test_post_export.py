"""output.export (a plain, safe mirror of current), the ``current`` pointer file, gc of derived files, gallery."""

from __future__ import annotations

import json
import os

from starbuild.store.export import RECORD

CONFIG = """\
version: 1
defaults: {{size: "1:1", quality: low}}
output: {{export: {export}}}
images:
  "icons/{{{{ i }}}}":
    matrix: {{i: {items}}}
    prompt: "icon {{{{ i }}}}"
    post: [chroma_key, trim, {{resize: {{width: 64, height: 64}}}}]
"""


def test_export_mirrors_current_and_removes_only_what_it_wrote(project, tmp_path):
    target = tmp_path / "game" / "Generated"
    project.config(CONFIG.format(export="../game/Generated", items="[a, b]"))
    assert project.run("build", "--offline").exit_code == 0
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        RECORD, "icons/a.png", "icons/b.png", "images.json", "manifest.json"]
    mine = target / "notes.txt"
    mine.write_text("the user's own file")
    (target / "icons" / "b.png").write_bytes(b"edited by hand")      # no longer what export wrote
    outside = tmp_path / "outside.txt"
    outside.write_text("never touched")
    os.symlink(outside, target / "icons" / "a.png.link")
    project.config(CONFIG.format(export="../game/Generated", items="[a, c]"))
    res = project.run("build", "--offline")
    assert res.exit_code == 0, res.stderr
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file() and not p.is_symlink())
    # b was removed from the config, but its file was edited since: it is left alone, like notes.txt.
    assert files == [RECORD, "icons/a.png", "icons/b.png", "icons/c.png", "images.json", "manifest.json", "notes.txt"]
    assert (target / "icons" / "b.png").read_bytes() == b"edited by hand" and mine.read_text() == "the user's own file"
    assert outside.read_text() == "never touched"
    record = json.loads((target / RECORD).read_text())["files"]
    assert "icons/b.png" not in record and "icons/c.png" in record
    current = project.root / "assets" / "current"
    assert (target / "icons" / "c.png").read_bytes() == (current / "icons" / "c.png").read_bytes()
    assert not (target / "icons" / "c.png").is_symlink()


def test_export_never_writes_through_a_symlink(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "out"
    target.mkdir()
    os.symlink(elsewhere, target / "icons")                           # a folder link inside the mirror
    project.config(CONFIG.format(export="../out", items="[a]"))
    res = project.run("build", "--offline")
    assert res.exit_code == 0 and "export skipped 1 file(s) behind symlinks: icons/a.png" in res.stdout
    assert list(elsewhere.iterdir()) == []
    link = tmp_path / "linked"
    os.symlink(elsewhere, link)
    project.config(CONFIG.format(export="../linked", items="[a]"))
    res = project.run("build", "--offline")
    assert res.exit_code == 1 and "is a symlink" in res.stderr and list(elsewhere.iterdir()) == []


def test_current_falls_back_to_a_pointer_file_without_symlinks(project, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError(1, "symbolic links are not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    project.config(CONFIG.format(export="export", items="[a]"))
    assert project.run("build", "--offline").exit_code == 0
    current = project.root / "assets" / "current"
    assert current.is_file() and not current.is_symlink() and current.read_text().strip().endswith("v0001")
    project.config(CONFIG.format(export="export", items="[a, b]"))
    assert project.run("build", "--offline").exit_code == 0
    assert current.read_text().strip().endswith("v0002")
    assert "* v0002" in project.run("versions").stdout
    assert "0 new, 0 changed, 2 unchanged" in project.run("plan", "--offline").stdout
    assert (project.root / "export" / "icons" / "b.png").is_file()
    assert project.run("rollback", "1").exit_code == 0
    assert current.read_text().strip().endswith("v0001") and "* v0001" in project.run("versions").stdout
    assert not (project.root / "export" / "icons" / "b.png").exists()   # the export follows the rollback
    assert project.run("build", "--offline").exit_code == 0                      # back to v0002's content
    assert not (project.root / "assets" / "current").is_symlink()


def test_gc_keeps_published_outputs_and_drops_stale_derived_files(project, tmp_path):
    project.config(CONFIG.format(export="export", items="[a]"))
    assert project.run("build", "--offline").exit_code == 0
    first = project.lock()["assets"]["icons/a"]["outputs"][0]["sha256"]
    project.config(CONFIG.format(export="export", items="[a]").replace("width: 64, height: 64", "width: 32"))
    assert project.run("build", "--offline").exit_code == 0
    second = project.lock()["assets"]["icons/a"]["outputs"][0]["sha256"]
    objects = tmp_path / ".cache" / "objects"
    assert (objects / first[:2] / first).exists() and (objects / second[:2] / second).exists()
    assert project.run("gc").exit_code == 0
    assert (objects / first[:2] / first).exists()                  # v0001 still publishes it
    project.config(CONFIG.format(export="export", items="[a]").replace("width: 64, height: 64", "width: 16")
                   .replace("output: {export: export}", "output: {export: export, keep: 1}"))
    assert project.run("build", "--offline").exit_code == 0        # v0003, and v0001-2 are pruned
    third = project.lock()["assets"]["icons/a"]["outputs"][0]["sha256"]
    assert project.run("gc").exit_code == 0
    assert not (objects / first[:2] / first).exists() and not (objects / second[:2] / second).exists()
    assert (objects / third[:2] / third).exists()
    source = project.lock()["assets"]["icons/a"]["files"][0]["sha256"]
    assert (objects / source[:2] / source).exists()                # the paid source image always stays


def test_gallery_shows_the_delivered_file_and_the_source_and_variants_on_its_page(project):
    from test_gallery import Client

    from starbuild.config.project import load_config
    from starbuild.ui.gallery import GalleryState, create_app

    project.config("version: 1\nimages:\n  hero:\n    prompt: x\n    size: '1:1'\n    quality: low\n"
                   "    post: [{format: {type: webp}}]\n    variants: {widths: [64, 128], formats: [avif]}\n")
    assert project.run("build", "--offline").exit_code == 0
    client = Client(create_app(GalleryState(load_config(project.root / "starbuild.yaml"))))
    index = client.get("/").text
    assert "/thumb/1/hero.webp" in index
    page = client.get("/asset/hero").text
    source = project.lock()["assets"]["hero"]["files"][0]["sha256"]
    assert f"/source/{source}" in page and "hero-64.avif" in page and "hero-128.avif" in page
    img = client.get(f"/source/{source}")
    assert img.status_code == 200 and img.content.startswith(b"\x89PNG")
    assert client.get("/source/" + "0" * 64).status_code == 404
    assert client.get("/source/../../etc/passwd").status_code == 404


def test_a_processing_failure_fails_its_asset_only_and_keeps_its_previous_files(project, tmp_path):
    project.config(CONFIG.format(export="export", items="[a, b]"))
    assert project.run("build", "--offline").exit_code == 0
    before = project.lock()["assets"]
    source = before["icons/a"]["files"][0]["sha256"]
    stored = tmp_path / ".cache" / "objects" / source[:2] / source
    os.chmod(stored, 0o644)
    stored.write_bytes(b"\x89PNG\r\n\x1a\n not an image any more")   # a damaged store
    project.config(CONFIG.format(export="export", items="[a, b]").replace("width: 64, height: 64", "width: 48"))
    res = project.run("build", "--offline")
    assert res.exit_code == 1 and "failed: icons/a:" in res.stdout, res.stdout + res.stderr
    assert "no longer matches its sha256" in res.stdout  # the damaged object is a miss, never processed
    assert "Traceback" not in res.stderr
    after = project.lock()["assets"]
    assert after["icons/a"] == before["icons/a"]                     # its previous delivered file stays
    assert after["icons/b"]["outputs"][0]["width"] == 48
    current = project.root / "assets" / "current"
    assert (current / "icons" / "a.png").is_file() and (current / "icons" / "b.png").is_file()
    rows = json.loads((current / "images.json").read_text())["images"]
    assert rows["icons/a"]["sha256"] == before["icons/a"]["outputs"][0]["sha256"] and rows["icons/b"]["width"] == 48


def test_export_into_the_asset_folder_is_a_config_error(project):
    project.config(CONFIG.format(export="assets/mirror", items="[a]"))
    res = project.run("validate")
    assert res.exit_code == 2 and "output.export: 'assets/mirror' overlaps output.dir" in res.stderr
    assert project.run("build", "--offline").exit_code == 2 and not (project.root / "assets").exists()


def test_an_atlas_frame_larger_than_a_page_is_reported_and_the_rest_is_published(project):
    project.config("""\
        version: 1
        defaults: {size: "1:1", quality: low, post: [{resize: {width: 100, height: 100}}]}
        images:
          "s/{{ i }}": {matrix: {i: [0, 1]}, prompt: "sprite {{ i }}"}
        atlases:
          sheet: {include: ["s/*"], max_size: 64, trim: false}
        """)
    res = project.run("build", "--offline")
    assert res.exit_code == 1 and "atlases/sheet" in res.stdout and "larger than max_size 64" in res.stdout
    assert (project.root / "assets" / "current" / "s" / "0.png").is_file()
    assert not (project.root / "assets" / "current" / "atlases").exists()


def test_a_wiped_cache_reuses_the_published_outputs(project, tmp_path):
    import shutil

    project.config(CONFIG.format(export="export", items="[a, b]").replace(
        "post: [", "variants: {widths: [32], formats: [webp]}\n    post: ["))
    assert project.run("build", "--offline").exit_code == 0
    before = project.lock()
    shutil.rmtree(tmp_path / ".cache")                               # objects, derived index, journal
    res = project.run("build", "--offline")
    assert res.exit_code == 0 and "no new version" in res.stdout and "0 built" in res.stdout, res.stdout
    assert "post: processed" not in res.stdout and project.lock() == before
    project.config(CONFIG.format(export="export", items="[a, b, c]").replace(
        "post: [", "variants: {widths: [32], formats: [webp]}\n    post: ["))
    res = project.run("build", "--offline")                          # a new asset: the others still carry over
    assert res.exit_code == 0 and "1 built" in res.stdout, res.stdout + res.stderr
    lock = project.lock()["assets"]
    assert lock["icons/a"] == before["assets"]["icons/a"]
    assert (project.root / "assets" / "current" / "icons" / "a-32.webp").is_file()


def test_export_rewrites_a_file_edited_in_place_with_the_same_size(project, tmp_path):
    """Kept files are known by the inode, size and mtime recorded when they were written; an edit
    in place changes the mtime, so the edited file is hashed, found changed and written again."""
    target = tmp_path / "game" / "Generated"
    project.config(CONFIG.format(export="../game/Generated", items="[a, b]"))
    assert project.run("build", "--offline").exit_code == 0
    exported = target / "icons" / "a.png"
    original = exported.read_bytes()
    stats = json.loads((target / RECORD).read_text())["stat"]
    assert stats["icons/a.png"] == [exported.stat().st_ino, len(original), exported.stat().st_mtime_ns]
    with exported.open("r+b") as fh:
        fh.seek(60)
        fh.write(b"\x00\xff" * 4)
    project.config(CONFIG.format(export="../game/Generated", items="[a, b, c]"))
    assert project.run("build", "--offline").exit_code == 0
    assert exported.read_bytes() == original
