"""Safety checks around publishing: the output folder before anything is paid, the sources after.

``check_output`` runs under the project lock before any submission: ``output.dir`` must be a
folder (or not exist yet), and ``current`` must be the symlink starbuild keeps. A ``current`` that
became a real folder (``cp -rL``, an unzipped archive, a CI artifact) is repaired when it is an
intact copy of a version (every file matches its manifest's sha256); otherwise the build stops
with a located error, exit 2, before paying for anything.

``corrupt_assets`` names the assets whose stored image no longer hashes to its recorded sha256 and
has no intact copy in the current version either. A corrupt object is a miss (removed from the
store); such an asset is left out of the version, never published from damaged bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from starbuild.config.project import Project
from starbuild.errors import ConfigError
from starbuild.store.fileindex import FileIndex
from starbuild.store.objects import CURRENT, MANIFEST, AssetDir, ObjectStore, file_sha256, read_pointer


def check_output(project: Project, assets: AssetDir) -> None:
    """Refuse (exit 2) or repair an output folder a version could not be published into."""
    raw = project.config.output.dir
    path = project.root
    for part in Path(raw).parts:
        path = path / part
        if path.exists() and not path.is_dir():
            raise ConfigError(project.issue(("output", "dir"), f"{raw!r}: {path.relative_to(project.root)} is a "
                                            "file, not a folder; move it away or choose another output.dir"))
    current = assets.root / CURRENT
    if current.is_symlink() or not os.path.lexists(current) or read_pointer(current) is not None:
        return  # the symlink, or the pointer file used where symlinks cannot be made
    if current.is_dir() and _repair_copied_current(assets, current):
        return
    kind = "a folder" if current.is_dir() else "a file"
    raise ConfigError(project.issue(("output", "dir"), (
        f"{raw}/{CURRENT} is {kind}, not the symlink to a version that starbuild keeps (copied with "
        "cp -rL, unzipped, or restored from a CI artifact?), and it is not an intact copy of a version; "
        f"move {raw}/{CURRENT} out of the way and build again")))


def _repair_copied_current(assets: AssetDir, current: Path) -> bool:
    """Turn an intact copy of version N back into vN + the symlink; False when it is not one."""
    try:
        manifest = json.loads((current / MANIFEST).read_text())
        number = int(manifest["asset_version"])
        entries = manifest["assets"]
        files = [f for e in entries.values() for f in e.get("files") or []]
        intact = number > 0 and all(file_sha256(current / f["path"]) == f["sha256"] for f in files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    if not intact:
        return False
    version = assets.version_path(number)
    if version.exists():
        shutil.rmtree(current)  # an exact copy of a version that is still there
    else:
        os.rename(current, version)  # the only copy of that version: it becomes the version again
    assets.set_current(number)
    return True


def _intact_source(f: dict, store: ObjectStore, base: Path | None) -> Path | None:
    sha = f.get("sha256", "")
    if store.verify(sha):
        return store.path(sha)
    if base is not None and (base / f["path"]).is_file() and file_sha256(base / f["path"]) == sha:
        return base / f["path"]
    return None


def corrupt_assets(new_assets: dict[str, dict[str, Any]], store: ObjectStore, base: Path | None,
                   index: FileIndex | None = None) -> list[str]:
    """The assets whose stored image no longer hashes to its name, with no intact copy in the
    current version either. The bad object is removed on the way (a miss, never published). An
    object that is simply missing is not corruption: the publish step reuses what it can. Only
    files the current version does not hold untouched are read (see store/fileindex.py)."""
    bad = []
    top = str(base) if base is not None and index is not None else None  # without an index every file is read
    for name, entry in new_assets.items():
        for f in entry.get("files") or []:
            sha = f.get("sha256", "")
            if top is not None and index.vouch(f"{top}/{f.get('path')}", sha) is not None:
                continue  # the current version holds it untouched: nothing to read
            if store.has(sha) and _intact_source(f, store, base) is None:
                bad.append(name)
                break
    return bad
