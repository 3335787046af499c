"""``starbuild.lock``: read it tolerantly, write it atomically (temp file, fsync, replace)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starbuild.errors import ConfigError, Issue, StoreError
from starbuild.store import jsonfast

LOCK_NAME = "starbuild.lock"
LOCKFILE_VERSION = 1
MAX_LOCK_BYTES = 512 * 2**20


@dataclass
class Lock:
    """The lockfile's content: the current asset version and one entry per asset."""

    asset_version: int = 0
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    atlases: dict[str, dict[str, Any]] = field(default_factory=dict)  # published atlas files (SPEC.md §8)

    def to_json(self) -> dict[str, Any]:
        out = {"lockfile_version": LOCKFILE_VERSION, "asset_version": self.asset_version,
               "assets": self.assets}
        if self.atlases:
            out["atlases"] = self.atlases
        return out


def read_lock(path: Path) -> Lock:
    """The lockfile at path, or an empty Lock when there is none."""
    from starbuild.safefile import read_text

    try:
        text = read_text(path, MAX_LOCK_BYTES)
    except FileNotFoundError:
        return Lock()
    except UnicodeDecodeError:
        raise ConfigError(Issue(path.name, None, None, "", "the lockfile is not UTF-8 text")) from None
    except OSError as exc:
        raise ConfigError(Issue(path.name, None, None, "", f"cannot read the lockfile: {exc}")) from None
    from starbuild.store.lockcheck import check_assets, parse_json

    hint = "restore the lockfile from version control or delete it to rebuild everything"
    data = parse_json(text, path.name, "the lockfile")
    if not isinstance(data, dict) or not isinstance(data.get("assets", {}), dict):
        raise ConfigError(Issue(path.name, 1, 1, "", "the lockfile is not a starbuild lockfile"))
    version = data.get("lockfile_version")
    if version != LOCKFILE_VERSION or isinstance(version, bool):
        raise ConfigError(Issue(path.name, 1, 1, "lockfile_version",
                                f"{version!r} is not a lockfile version this starbuild reads "
                                f"({LOCKFILE_VERSION}); upgrade starbuild"))
    check_assets(data, text, path.name, hint)
    atlases = data.get("atlases") if isinstance(data.get("atlases"), dict) else {}
    return Lock(asset_version=data.get("asset_version") or 0, assets=dict(data.get("assets", {})),
                atlases={k: v for k, v in atlases.items() if isinstance(v, dict)})


def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Write bytes so that readers see the old file or the whole new one, never a part.

    ``durable=False`` skips the fsyncs, for caches: after a crash the file may be empty or gone,
    which a cache reads as a miss.

    The file gets the mode a plain ``open()`` would give it (0666 less the umask): mkstemp's
    owner-only temp file would otherwise make a committed lockfile unreadable to the team.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StoreError(f"cannot write {path}: {exc}") from exc
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def dump_json(data: Any) -> bytes:
    """Sorted keys, two-space indentation, trailing newline: the lockfile and manifest format."""
    return jsonfast.pretty(data)


def write_lock(path: Path, lock: Lock) -> None:
    atomic_write(path, dump_json(lock.to_json()))
