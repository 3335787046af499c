"""``output.export``: a plain folder mirroring the current version, for engines that dislike symlinks.

Safe by construction: files are written through temp files in their folder and renamed into place;
only files this mirror wrote before (listed in ``.starbuild-export.json`` there) are ever removed,
and only while they still hold what was written (known from the inode, size and mtime recorded
when they were written, else by hashing them); a symlink anywhere under the folder is never
followed (a file behind one is skipped and reported).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from starbuild.errors import StoreError
from starbuild.store.lockfile import atomic_write

RECORD = ".starbuild-export.json"


@dataclass
class ExportReport:
    written: int = 0
    kept: int = 0
    removed: int = 0
    skipped: list[str] = field(default_factory=list)


def _is_link_or_missing_dir(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _safe_parent(root: Path, rel: str) -> bool:
    """True when no folder between root and the file is a symlink (none is followed)."""
    p = root
    for part in Path(rel).parts[:-1]:
        p = p / part
        if _is_link_or_missing_dir(p):
            return False
    return True


def _sha(path: Path) -> str | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_record(root: Path) -> tuple[dict[str, str], dict[str, list]]:
    """The files this mirror wrote ({path: sha256}) and their stat when written ({path: [ino, size,
    mtime_ns]}): a file whose stat still matches holds what was written, without reading it."""
    try:
        data = json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(data, dict):
        return {}, {}
    files, stats = data.get("files"), data.get("stat")
    return ({k: v for k, v in (files or {}).items() if isinstance(k, str) and isinstance(v, str)},
            stats if isinstance(stats, dict) else {})


def _stat_key(path: Path) -> list | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns] if stat.S_ISREG(st.st_mode) else None


def _holds(path: Path, sha: str, key: list | None, recorded: list | None) -> bool:
    """The file still holds ``sha``: its stat ``key`` is the one recorded when it was written, else its hash."""
    return (key is not None and key == recorded) or _sha(path) == sha


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)  # replaces a symlink itself, never what it points at
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_version(version_dir: Path, root: Path, files: dict[str, str]) -> ExportReport:
    """Mirror ``files`` ({relative path: sha256}) of a version folder into ``root``."""
    if _is_link_or_missing_dir(root):
        raise StoreError(f"output.export {root} is a symlink; export writes only into a real folder")
    report = ExportReport()
    try:
        root.mkdir(parents=True, exist_ok=True)
        before, stats = _read_record(root)
        now: dict[str, str] = {}
        now_stats: dict[str, list] = {}
        for rel, sha in sorted(files.items()):
            dest = root / rel
            if not _safe_parent(root, rel):
                report.skipped.append(rel)
                continue
            key = _stat_key(dest)
            if before.get(rel) == sha and _holds(dest, sha, key, stats.get(rel)):
                report.kept += 1
            else:
                _copy(version_dir / rel, dest)
                report.written += 1
                key = _stat_key(dest)
            now[rel] = sha
            if key is not None:
                now_stats[rel] = key
        for rel, sha in sorted(before.items()):
            if rel in now or not _safe_parent(root, rel):
                continue
            dest = root / rel
            if _holds(dest, sha, _stat_key(dest), stats.get(rel)):  # still ours: the user has not replaced it
                dest.unlink()
                report.removed += 1
                _prune_dirs(root, dest.parent)
        record = {"files": now, "stat": now_stats}
        atomic_write(root / RECORD, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise StoreError(f"cannot export to {root}: {exc}") from exc
    return report


def _prune_dirs(root: Path, folder: Path) -> None:
    """Remove folders left empty by a removal, up to (not including) the export root."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def version_files(version_dir: Path, manifest: dict) -> dict[str, str]:
    """Every file of a version with its sha256: from the manifest's records, the rest hashed."""
    known: dict[str, str] = {}
    for section in ("assets", "atlases"):
        for entry in (manifest.get(section) or {}).values():
            records = entry.get("outputs") if "outputs" in entry else entry.get("files")
            if section == "atlases":
                records = entry.get("files")
            for rec in records or []:
                known[rec["path"]] = rec["sha256"]
    out: dict[str, str] = {}
    for path in sorted(version_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(version_dir).as_posix()
            out[rel] = known.get(rel) or _sha(path) or ""
    return out


def export_current(project_root: Path, target: str, assets) -> ExportReport | None:
    """Mirror the current version into ``output.export`` (relative to the project); None without one."""
    number = assets.current()
    if number is None:
        return None
    version_dir = assets.version_path(number)
    root = Path(target) if Path(target).is_absolute() else project_root / target
    if root.resolve() == version_dir.resolve() or assets.root.resolve() in root.resolve().parents \
            or root.resolve() == assets.root.resolve():
        raise StoreError(f"output.export {target!r} is inside output.dir; choose a folder outside it")
    return export_version(version_dir, root, version_files(version_dir, assets.manifest(number)))
