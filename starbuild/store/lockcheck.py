"""Checks of what starbuild reads back from disk: the lockfile and version manifests.

Both are JSON that a person (or a merge, or an attacker's pull request) may have edited. A
``sha256`` names a file in the object store and a ``path`` names a file in a version folder, so
both are checked before use: ``"sha256": "../../proc/self/environ"`` must not publish a private
file, and ``"path": "../../x"`` must not write outside the project. Wrong types and NaN give a
located error (file, line, field) instead of a traceback somewhere later.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starbuild.errors import ConfigError, Issue

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and bool(SHA256_RE.match(value))


def rel_path_problem(value: Any) -> str | None:
    """Why a path from a lockfile or manifest may not be used inside a version folder, or None."""
    if not isinstance(value, str) or not value:
        return f"{value!r} is not a path"
    if not _PATH_CHARS.match(value) or any(p in (".", "..") for p in value.split("/")):
        return f"{value!r} is not a relative path inside the version folder"
    return None


def _no_constant(name: str) -> Any:
    return _NonFinite(name)


class _NonFinite(float):
    """NaN or Infinity as read, kept so that the check can say where it was."""

    def __new__(cls, name: str) -> "_NonFinite":
        value = super().__new__(cls, {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}[name])
        value.name = name
        return value


def _non_finite_paths(data: Any, path: tuple = ()) -> list[tuple[tuple, str]]:
    if isinstance(data, _NonFinite):
        return [(path, data.name)]
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _non_finite_paths(v, path + (k,))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _non_finite_paths(v, path + (i,))]
    return []


def parse_json(text: str, file: str, what: str) -> Any:
    """Strict JSON (no NaN or Infinity) or a located ConfigError."""
    import orjson  # fast and as strict; the json module below only locates what it refused

    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError):
        pass
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(Issue(file, exc.lineno, exc.colno, "", f"{what} is not valid JSON ({exc.msg})")) from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(Issue(file, None, None, "", f"{what} is not valid JSON ({exc})")) from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _file_problems(f: Any) -> list[tuple[tuple, str]]:
    if not isinstance(f, dict):
        return [((), f"{type(f).__name__} is not a file record (a mapping)")]
    out: list[tuple[tuple, str]] = []
    problem = rel_path_problem(f.get("path"))
    if problem:
        out.append((("path",), problem))
    if not is_sha256(f.get("sha256")):
        out.append((("sha256",), f"{f.get('sha256')!r} is not a sha256 (64 lowercase hex digits)"))
    for key in ("bytes", "width", "height"):
        if key in f and not (_is_int(f[key]) and f[key] >= 0):
            out.append(((key,), f"{f[key]!r} is not a whole number >= 0"))
    if "format" in f and not isinstance(f["format"], str):
        out.append((("format",), f"{f['format']!r} is not text"))
    return out


def entry_problems(entry: Any) -> list[tuple[tuple, str]]:
    """(field path, message) for each malformed value of one asset entry."""
    if not isinstance(entry, dict):
        return [((), f"{type(entry).__name__} is not an asset entry (a mapping)")]
    out: list[tuple[tuple, str]] = []
    if entry.get("spec_hash") is not None and not is_sha256(entry["spec_hash"]):
        out.append((("spec_hash",), f"{entry['spec_hash']!r} is not a sha256"))
    for key, kind in (("request", dict), ("task_id", str), ("created", str)):
        if entry.get(key) is not None and not isinstance(entry[key], kind):
            out.append(((key,), f"{entry[key]!r} is not {'a mapping' if kind is dict else 'text'}"))
    if entry.get("credits") is not None and not (_is_number(entry["credits"]) and entry["credits"] >= 0):
        out.append((("credits",), f"{entry['credits']!r} is not a finite number >= 0"))
    if "placeholder" in entry and not isinstance(entry["placeholder"], bool):
        out.append((("placeholder",), f"{entry['placeholder']!r} is not true or false"))
    if "take" in entry and not (_is_int(entry["take"]) and entry["take"] >= 0):
        out.append((("take",), f"{entry['take']!r} is not a whole number >= 0"))
    files = entry.get("files", [])
    if not isinstance(files, list):
        out.append((("files",), f"{files!r} is not a list"))
    else:
        for i, f in enumerate(files):
            out.extend((("files", i) + p, m) for p, m in _file_problems(f))
    return out


def check_assets(data: dict, text: str, file: str, hint: str) -> None:
    """Raise a located ConfigError for every malformed value of ``data['assets']`` and asset_version."""
    issues: list[Issue] = []

    def add(path: tuple, message: str) -> None:
        issues.append(Issue(file, locate(text, path), None, ".".join(map(str, path)), f"{message}; {hint}"))

    # NaN and Infinity can only have been read (by the json module) from text that spells them.
    for path, name in (_non_finite_paths(data)[:20] if "NaN" in text or "Infinity" in text else ()):
        add(path, f"{name} is not a number JSON allows")
    if issues:
        raise ConfigError(issues)

    version = data.get("asset_version", 0)
    if not (_is_int(version) and version >= 0):
        add(("asset_version",), f"{version!r} is not a whole number >= 0")
    assets = data.get("assets", {})
    if not isinstance(assets, dict):
        add(("assets",), "is not a mapping of asset names")
        raise ConfigError(issues)
    for name, entry in assets.items():
        if rel_path_problem(name):
            add(("assets", name), f"{name!r} is not a valid asset name")
        for path, message in entry_problems(entry):
            add(("assets", name) + path, message)
        if len(issues) >= 20:
            break
    if issues:
        raise ConfigError(issues)


def locate(text: str, path: tuple) -> int | None:
    """The line of a value in JSON text written by starbuild (indented): found key by key.

    A list index ``i`` skips ``i`` occurrences of the key that follows it (each item has the key).
    """
    pos, skip = 0, 0
    for part in path:
        if isinstance(part, int):
            skip = part
            continue
        needle = json.dumps(part, ensure_ascii=False) + ":"
        for _ in range(skip + 1):
            found = text.find(needle, pos)
            if found < 0:
                return None
            pos = found + 1
        skip = 0
    return text.count("\n", 0, max(pos - 1, 0)) + 1 if path else 1
