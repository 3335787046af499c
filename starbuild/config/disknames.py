"""Asset names that would collide on disk, or that no file system can hold.

An asset ``x`` with ``n: 2`` writes ``x-1.png`` and ``x-2.png``, so an asset named ``x-1`` beside
it would overwrite a paid image; an asset ``a`` writes the file ``a.png`` where an asset
``a.png/b`` needs a folder. The image format (so the extension) is known only after download,
and common file systems (macOS, Windows) ignore case, so names are compared case-insensitively
against every extension an image may get. Each path component must fit in 255 bytes.
"""

from __future__ import annotations

from typing import Iterable, Protocol

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "gif")
# Files every version folder holds besides the assets.
RESERVED = ("manifest.json", "images.json")
MAX_COMPONENT_BYTES = 255
LONGEST_SUFFIX = max(len(f".{e}") for e in IMAGE_EXTS)


class _Named(Protocol):
    name: str
    n: int


def file_stems(name: str, n: int) -> list[str]:
    """The paths (without extension) of an asset's files: NAME, or NAME-1 ... NAME-n."""
    return [name] if n <= 1 else [f"{name}-{i}" for i in range(1, n + 1)]


def _too_long(stem: str) -> str | None:
    parts = stem.split("/")
    for i, part in enumerate(parts):
        room = MAX_COMPONENT_BYTES - (LONGEST_SUFFIX if i == len(parts) - 1 else 0)
        if len(part.encode()) > room:
            return (f"the path component {part[:40]!r}... is {len(part.encode())} bytes; file systems allow "
                    f"{MAX_COMPONENT_BYTES} bytes per component (with the extension), so use at most {room}")
    return None


def disk_problems(specs: Iterable[_Named]) -> list[tuple[_Named, str]]:
    """(spec, message) for every asset whose files cannot be written beside the others'."""
    problems: list[tuple[_Named, str]] = []
    files: dict[str, tuple[str, str]] = {}    # folded stem -> (asset, stem)
    folders: dict[str, str] = {}              # folded folder path -> asset
    ordered = list(specs)
    for spec in ordered:
        stems = file_stems(spec.name, spec.n)
        long = next((p for p in map(_too_long, stems) if p), None)
        if long:
            problems.append((spec, long))
            continue
        clash = next(((s, files[s.casefold()]) for s in stems if s.casefold() in files), None)
        if clash:
            stem, (other, other_stem) = clash
            problems.append((spec, f"its file {stem}.<ext> is also a file of asset {other!r} ({other_stem}.<ext>); "
                                   "one would overwrite the other (names are compared ignoring case)"))
            continue
        for s in stems:
            files[s.casefold()] = (spec.name, s)
        parts = spec.name.split("/")
        for i in range(1, len(parts)):
            folders.setdefault("/".join(parts[:i]).casefold(), spec.name)
    for spec in ordered:
        problem = _file_vs_folder(spec, folders)
        if problem:
            problems.append((spec, problem))
    return problems


def _file_vs_folder(spec: _Named, folders: dict[str, str]) -> str | None:
    top = spec.name.split("/")[0]
    if "/" in spec.name and top.casefold() in RESERVED:
        return f"the folder {top!r} would replace the version's own {top}; rename it"
    ext = spec.name.rsplit(".", 1)[-1].lower() if "." in spec.name.split("/")[-1] else ""
    if ext in IMAGE_EXTS and spec.name.casefold() in folders:
        # 'a.png' is written as a.png.png, but whoever named it means the file a.png.
        return (f"{spec.name!r} names a file, and it is also the folder of asset "
                f"{folders[spec.name.casefold()]!r}; a file and a folder of one name cannot both exist "
                "(asset names take no extension: it comes from the image format)")
    for stem in file_stems(spec.name, spec.n):
        for ext in IMAGE_EXTS:
            other = folders.get(f"{stem}.{ext}".casefold())
            if other is not None:
                return (f"its file {stem}.{ext} would be the folder {stem}.{ext}/ of asset {other!r}; "
                        "a file and a folder of one name cannot both exist")
    return None
