"""Which published files are still exactly as starbuild wrote them, known without reading them.

Versions share unchanged files: a new version hard-links each file it has in common with the
current version instead of copying it from the object store, so a one-asset change in a project
of 10,000 assets writes one file, not 10,000, and keeping N versions does not cost N copies.

A link is only made from a file starbuild can vouch for. ``.starbuild/published-files.json`` (in
the project, beside the build lock) records, per inode, the size, modification time and sha256 a file had when starbuild wrote it or
last hashed it (as git's index does). A published file edited in place gets a new mtime, so it is no
longer vouched for: the next version copies that file from the store again, checked against its
sha256, and ``rollback`` puts the recorded bytes back into the version it restores. The store itself
is never linked into a version, so no edit of a published file can reach it.

The record is a cache: when it is missing, unreadable or from another device, files are copied
and hashed as before, and the record is written anew. What it cannot see is an edit made on
purpose to look like no edit: other bytes of the same size written into the same inode with the
modification time set back to the nanosecond. ctime would catch even that, but every link and
every pruned version changes a shared file's ctime, which would make the record useless.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from starbuild.errors import StoreError
from starbuild.store.lockfile import atomic_write
from starbuild.store.objects import copy_hashing, file_sha256

INDEX_NAME = "published-files.json"
FORMAT = 1
SLACK = 1000  # entries of older versions' files kept beyond the newest version's own


class FileIndex:
    """inode -> [size, mtime_ns, sha256] of the files in an asset folder's versions (kept as read:
    string keys, list values, so that loading 10,000 entries converts nothing)."""

    def __init__(self, folder: Path, dev: int | None = None, inodes: dict[str, list] | None = None):
        self.path = folder / INDEX_NAME
        self.dev = dev
        self.inodes = inodes or {}
        self.current: set[str] = set()  # inodes of the version being written

    @classmethod
    def load(cls, folder: Path) -> "FileIndex":
        """The record kept in ``folder`` (the project's ``.starbuild``); empty when there is none."""
        from starbuild.store.jsonfast import loads

        try:
            data = loads(Path(folder / INDEX_NAME).read_bytes())
            if data.get("format") != FORMAT or not isinstance(data["inodes"], dict):
                raise ValueError("another format")
            return cls(folder, int(data["dev"]), data["inodes"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return cls(folder)

    def vouch(self, path: str, sha: str) -> os.stat_result | None:
        """The file's stat when it is a regular file recorded with exactly this content, else None."""
        st, state = self.state(path, sha)
        return st if state == "ok" else None

    def state(self, path: str, sha: str) -> tuple[os.stat_result | None, str]:
        """"ok" (recorded with this content), "changed" (recorded, since edited or replaced),
        "unknown" (never recorded: a file this index has not seen) or "missing"."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return None, "missing"
        if not stat.S_ISREG(st.st_mode):
            return st, "changed"
        rec = self.inodes.get(str(st.st_ino)) if st.st_dev == self.dev else None
        if rec is None:
            return st, "unknown"
        return st, "ok" if rec == [st.st_size, st.st_mtime_ns, sha] else "changed"

    def note(self, path: str, sha: str) -> None:
        """Record a file just written (or hashed) with this content."""
        st = os.stat(path, follow_symlinks=False)
        if self.dev != st.st_dev:
            self.dev, self.inodes = st.st_dev, {}
        self.inodes[str(st.st_ino)] = [st.st_size, st.st_mtime_ns, sha]
        self.current.add(str(st.st_ino))

    def keep(self, st: os.stat_result) -> None:
        """A vouched-for file is part of the version being written."""
        self.current.add(str(st.st_ino))

    def save(self, prune: bool = True) -> None:
        """Write the record; older versions' entries are kept while they are few (for rollback)."""
        from starbuild.store.jsonfast import canonical

        if self.dev is None:
            return
        older = [i for i in self.inodes if i not in self.current]
        if prune and len(older) > len(self.current) + SLACK:
            for i in older:
                del self.inodes[i]
        data = {"format": FORMAT, "dev": self.dev, "inodes": self.inodes}
        try:
            atomic_write(self.path, canonical(data), durable=False)
        except StoreError:
            pass  # only a cache: the next version copies instead of linking


def copy_checked(src: str | Path, dest: str, sha: str | None) -> None:
    """Copy a file; with ``sha``, hash the bytes on the way and refuse a source that does not match."""
    if sha is None:
        import shutil

        shutil.copyfile(src, dest)
        return
    if copy_hashing(src, dest) != sha:
        os.unlink(dest)
        raise StoreError(f"{src} no longer hashes to {sha[:12]}… (damaged on disk); it was not published. "
                         "Build again: the damaged copy is treated as missing")


def link_or_copy(base_file: str | None, src: str | Path, dest: str, sha: str | None, index: FileIndex | None) -> bool:
    """Put one file of a new version in place: a hard link to the current version's file when the
    index vouches for it, else a checked copy of ``src``. True when it was linked."""
    if index is not None and sha is not None and base_file is not None:
        st = index.vouch(base_file, sha)
        if st is not None:
            try:
                os.link(base_file, dest)
                index.keep(st)
                return True
            except OSError:
                pass  # too many links, another filesystem, no hard links here: copy instead
    copy_checked(src, dest, sha)
    if index is not None and sha is not None:
        index.note(dest, sha)
    return False


def version_records(manifest: dict) -> list[dict]:
    """Every file record a version's manifest lists: generated files, processed outputs, atlas pages."""
    groups = [e.get("outputs") if "outputs" in e else e.get("files") for e in (manifest.get("assets") or {}).values()
              if isinstance(e, dict)]
    groups += [a.get("files") for a in (manifest.get("atlases") or {}).values() if isinstance(a, dict)]
    return [r for g in groups if isinstance(g, list) for r in g
            if isinstance(r, dict) and isinstance(r.get("path"), str) and isinstance(r.get("sha256"), str)]


def restore_version(folder: Path, manifest: dict, store, index: FileIndex) -> list[str]:
    """Make a version's files hold their recorded bytes again before it becomes current.

    Versions share unchanged files, so a file edited in place in one version is edited in the
    others that share it. Each file whose recorded size or mtime changed (or that is gone) is
    hashed; one that no longer matches is replaced by a checked copy from the store (which no edit
    can reach). Returns the paths that could not be restored (their object is gone too)."""
    from starbuild.store.lockcheck import rel_path_problem

    lost = []
    for rec in version_records(manifest):
        rel, sha = rec["path"], rec["sha256"]
        if rel_path_problem(rel):
            continue
        path = folder / rel
        _, state = index.state(str(path), sha)
        if state in ("ok", "unknown"):
            continue  # as recorded, or a copy of its own (published before versions shared files)
        if state == "changed" and file_sha256(path) == sha:
            index.note(str(path), sha)
            continue
        if not store.verify(sha):
            lost.append(rel)
            continue
        tmp = f"{path}.restore-{os.getpid()}"
        try:
            copy_checked(store.path(sha), tmp, sha)
            os.replace(tmp, path)  # a new inode: the edited one stays only where it was edited
        except (OSError, StoreError):
            Path(tmp).unlink(missing_ok=True)
            lost.append(rel)
            continue
        index.note(str(path), sha)
    return lost
