"""The content-addressed object store and the versioned asset directory.

Objects live at ``<cache>/objects/ab/<sha256>``. A version is built in a hidden temp folder,
fsynced, renamed to ``vNNNN`` and only then made ``current`` by an atomic symlink swap, so
``current`` always points at a complete version.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starbuild.errors import ConfigError, Issue, StoreError
from starbuild.safefile import in_folder
from starbuild.store.lockcheck import check_assets, is_sha256, parse_json, rel_path_problem
from starbuild.store.lockfile import atomic_write, dump_json

if TYPE_CHECKING:
    from starbuild.store.fileindex import FileIndex

VERSION_RE = re.compile(r"^v(\d{4,})$")
CURRENT = "current"
MANIFEST = "manifest.json"
POINTER_PREFIX = "starbuild-current: "


class ObjectStore:
    """Immutable files named by their sha256."""

    def __init__(self, root: Path):
        self.root = root / "objects"

    def path(self, sha: str) -> Path:
        # A hash from a lockfile, manifest or journal names a file here: never a path elsewhere.
        if not is_sha256(sha):
            raise StoreError(f"{sha!r} is not a sha256; the lockfile or cache may have been edited")
        return self.root / sha[:2] / sha

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def verify(self, sha: str) -> bool:
        """The object is there and its bytes still hash to its name; a corrupt one is removed (a miss)."""
        path = self.path(sha)
        if not path.is_file():
            return False
        if file_sha256(path) == sha:
            return True
        self.remove(sha)
        return False

    def add(self, tmp: Path, sha: str) -> Path:
        """Move a verified temp file into the store (a file already there wins)."""
        dest = self.path(sha)
        if dest.exists():
            tmp.unlink(missing_ok=True)
            return dest
        os.chmod(tmp, 0o444)
        in_folder(dest, lambda: os.replace(tmp, dest))  # the first object under a prefix makes its folder
        return dest

    def temp_dir(self) -> Path:
        d = self.root / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def listing(self) -> set[str]:
        """The hashes of every stored object, read once (for checking many at a time)."""
        try:
            subs = os.listdir(self.root)
        except OSError:
            return set()
        out: set[str] = set()
        for sub in subs:
            if len(sub) == 2:
                try:
                    out.update(n for n in os.listdir(self.root / sub) if is_sha256(n))
                except OSError:
                    pass
        return out

    def remove(self, sha: str) -> None:
        self.path(sha).unlink(missing_ok=True)

    def clean_temp(self) -> int:
        """Delete partial downloads left by killed runs (call it holding the project lock)."""
        removed = 0
        tmp = self.root / "tmp"
        if tmp.is_dir():
            for f in tmp.iterdir():
                try:
                    f.unlink()
                    removed += 1
                except OSError:
                    pass
        return removed


class AssetDir:
    """``output.dir``: immutable version folders and the ``current`` symlink."""

    def __init__(self, root: Path):
        self.root = root

    def versions(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := VERSION_RE.match(p.name)) and p.is_dir())

    def version_path(self, n: int) -> Path:
        return self.root / f"v{n:04d}"

    def current(self) -> int | None:
        """The current version: the target of the ``current`` symlink, or of a pointer file."""
        link = self.root / CURRENT
        try:
            target = os.readlink(link)
        except OSError:
            target = read_pointer(link)
            if target is None:
                return None
        m = VERSION_RE.match(Path(target).name)
        return int(m.group(1)) if m else None

    def current_path(self) -> Path | None:
        """The current version's folder, whether ``current`` is a symlink or a pointer file."""
        number = self.current()
        return self.version_path(number) if number is not None else None

    def manifest(self, n: int) -> dict[str, Any]:
        """A version's manifest ({} when it has none); a malformed one is a located ConfigError."""
        from starbuild.safefile import read_text

        path = self.version_path(n) / MANIFEST
        shown = f"{self.root.name}/{path.parent.name}/{MANIFEST}"
        try:
            text = read_text(path, 512 * 2**20)
        except (OSError, ValueError):
            return {}
        data = parse_json(text, shown, "the manifest")
        if not isinstance(data, dict):
            raise ConfigError(Issue(shown, 1, 1, "", "the manifest is not a mapping"))
        check_assets(data, text, shown, f"restore {shown} or delete version v{n:04d}")
        return data

    def publish(self, number: int, files: list[tuple[str, Path | str] | tuple[str, Path | str, str | None]],
                manifest: dict[str, Any], index: "FileIndex | None" = None) -> Path:
        """Write version ``number`` from (relative path, source file[, sha256]) items, then make it current.

        With an ``index``, a file given with its sha256 is linked from the current version when that
        version holds it untouched (see fileindex.py), else copied and checked against the hash on
        the way; without one every file is copied.
        """
        from starbuild.store.fileindex import link_or_copy

        self.root.mkdir(parents=True, exist_ok=True)
        self.clean_partial()
        base = self.current_path()
        final = self.version_path(number)
        if final.exists():
            raise StoreError(f"{final} already exists; another run may have published it")
        tmp = self.root / f".{final.name}.tmp-{os.getpid()}"
        for rel, *_ in files:
            problem = rel_path_problem(rel)
            if problem:
                raise StoreError(f"cannot publish {problem}")
        try:
            made: set[str] = set()
            top = str(tmp)
            old = str(base) if base is not None else None
            for rel, src, *sha in files:  # plain strings: pathlib costs more per file than it saves
                dest = f"{top}/{rel}"
                parent = os.path.dirname(dest)
                if parent not in made:
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                link_or_copy(f"{old}/{rel}" if old else None, src, dest, sha[0] if sha else None, index)
            atomic_write(tmp / MANIFEST, dump_json(manifest))
            os.rename(tmp, final)
        except (OSError, StoreError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot write version {final}: {exc}") from exc
        if index is not None:
            index.save()
        self.set_current(number)
        return final

    def check_current(self) -> None:
        """Refuse a ``current`` that is not the symlink starbuild keeps (a copy that followed links)."""
        link = self.root / CURRENT
        if (link.exists() or link.is_symlink()) and not link.is_symlink() and read_pointer(link) is None:
            raise StoreError(f"{link} is a real folder or file, not the `current` symlink starbuild keeps "
                             "(was the asset folder copied without its symlinks?); remove it and build again")

    def set_current(self, number: int) -> None:
        self.check_current()
        link = self.root / CURRENT
        tmp = self.root / f".{CURRENT}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        try:
            os.symlink(f"v{number:04d}", tmp)
        except (OSError, NotImplementedError):
            # No symlinks here (Windows without developer mode, some network shares): a small text
            # file naming the version, which current() and every command read the same way.
            atomic_write(tmp, f"{POINTER_PREFIX}v{number:04d}\n".encode())
        os.replace(tmp, link)

    def clean_partial(self) -> None:
        """Remove temp folders and links left by killed runs; refuse a broken ``current`` early."""
        if not self.root.is_dir():
            return
        self.check_current()
        for p in self.root.iterdir():
            if p.name.startswith(".v") and ".tmp-" in p.name:
                shutil.rmtree(p, ignore_errors=True)
            elif p.name.startswith(f".{CURRENT}.tmp-"):
                p.unlink(missing_ok=True)

    def prune(self, keep: int) -> list[int]:
        """Drop the oldest versions beyond ``keep`` (never the current one)."""
        versions = self.versions()
        current = self.current()
        doomed = [v for v in versions[:-keep] if v != current] if len(versions) > keep else []
        for v in doomed:
            shutil.rmtree(self.version_path(v), ignore_errors=True)
        return doomed


def read_pointer(path: Path) -> str | None:
    """The version a ``current`` pointer file names, or None."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 256:
            return None
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text[len(POINTER_PREFIX):] if text.startswith(POINTER_PREFIX) else None


def file_sha256(path: Path) -> str | None:
    """The sha256 of a file's bytes, or None when it cannot be read."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def copy_hashing(src: str | Path, dest: str | Path) -> str:
    """Copy a file, hashing the bytes on the way; their sha256. OSError goes to the caller."""
    import hashlib

    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(1 << 20):
            digest.update(chunk)
            fout.write(chunk)
    return digest.hexdigest()
