"""Matrix expansion with GitHub Actions semantics, and axes read from CSV, JSON or YAML files.

Cells come out in a deterministic order: the cartesian product in axis order (the last axis
varies fastest), minus excluded cells, then the cells that ``include`` adds.

Matching (``exclude`` entries, and ``include`` entries against existing cells): a value matches
when it renders to the same text, case-sensitively. So ``1`` matches ``"1"`` (YAML's typing of
a plain value is not something users see in a prompt), but ``Rare`` does not match ``rare``
(the two render different prompts and names). GitHub Actions compares case-insensitively; a
prompt is case-sensitive, so starbuild is too. An ``exclude`` entry that matches no cell is
probably a typo and gets a warning.
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import json
from pathlib import Path
from typing import Any, Callable

from starbuild.config.project import FileAxis
from starbuild.errors import ConfigError
from starbuild.config.yamlfile import MAX_BYTES, load_yaml
from starbuild.safefile import read_text

Cell = dict[str, Any]
# Reports a problem at a path inside the image's matrix: raise ConfigError with its location.
Fail = Callable[[tuple, str], ConfigError]
# Reports a warning at a path inside the image's matrix.
Warn = Callable[[tuple, str], None]


def read_axis_file(root: Path, rel: str, fail: Fail, where: tuple) -> list[Any]:
    """Rows of a CSV file (as mappings) or items of a JSON/YAML list, relative to the project."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise fail(where, f"{rel!r} is outside the project folder")
    try:
        text = read_text(path, MAX_BYTES, encoding="utf-8-sig")
    except FileNotFoundError:
        raise fail(where, f"file {rel!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(where, f"cannot read {rel!r}: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(text, rel, fail, where)
    if suffix == ".json":
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise fail(where, f"{rel}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        except ValueError as exc:
            raise fail(where, f"{rel}: invalid JSON: {exc}") from None
        except RecursionError:
            raise fail(where, f"{rel}: the JSON is nested too deeply") from None
    elif suffix in (".yaml", ".yml"):
        try:
            data, _ = load_yaml(text, rel)
        except ConfigError as exc:  # located in the axis file, reported at the axis in the config
            raise fail(where, "; ".join(str(i) for i in exc.issues)) from None
    else:
        raise fail(where, f"{rel!r}: axis files must be .csv, .json, .yaml or .yml")
    if not isinstance(data, list) or not data:
        raise fail(where, f"{rel!r} must hold a non-empty list")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _csv_rows(text: str, rel: str, fail: Fail, where: tuple) -> list[dict[str, str]]:
    """The data rows of a CSV file as mappings; every row must have the header's number of fields."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if not header:
            raise fail(where, f"{rel}:1: the first line must be a header row naming the columns")
        names = [h.strip() for h in header]
        for i, name in enumerate(names):
            if not name:
                raise fail(where, f"{rel}:1: column {i + 1} of the header has no name")
            if name in names[:i]:
                raise fail(where, f"{rel}:1: the header names {name!r} twice (columns {names.index(name) + 1} "
                                  f"and {i + 1})")
        rows = []
        for row in reader:
            if not row:
                continue  # a blank line
            if len(row) != len(names):
                raise fail(where, f"{rel}:{reader.line_num}: this row has {len(row)} field(s) but the header has "
                                  f"{len(names)} ({', '.join(names)}); quote values that contain commas")
            rows.append(dict(zip(names, row)))
    except csv.Error as exc:
        raise fail(where, f"{rel}:{reader.line_num}: invalid CSV: {exc}") from None
    if not rows:
        raise fail(where, f"{rel!r} has no data rows")
    return rows


def same_value(a: Any, b: Any) -> bool:
    """Matrix matching: scalars match when they render to the same text (case-sensitive)."""
    if isinstance(a, (str, int, float, bool)) and isinstance(b, (str, int, float, bool)):
        return str(a) == str(b)
    return a == b


def _matches(cell: Cell, entry: Cell) -> bool:
    return all(k in cell and same_value(cell[k], v) for k, v in entry.items())


def expand(matrix: dict[str, Any] | None, root: Path, fail: Fail, warn: Warn | None = None) -> list[Cell]:
    """All cells of a matrix (one empty cell when there is none)."""
    if not matrix:
        return [{}]
    axes: dict[str, list[Any]] = {}
    for name, values in matrix.items():
        if name in ("include", "exclude"):
            continue
        if isinstance(values, FileAxis):
            values = read_axis_file(root, values.file, fail, (name, "file"))
        if not values:
            raise fail((name,), f"axis {name!r} has no values")
        axes[name] = values
    exclude = _entries(matrix.get("exclude"), "exclude", fail)
    include = _entries(matrix.get("include"), "include", fail)
    for i, entry in enumerate(exclude):
        for key in entry:
            if key not in axes:
                raise fail(("exclude", i, key), f"{key!r} is not an axis of this matrix")

    cells: list[Cell] = []
    used = [False] * len(exclude)
    if axes:
        for combo in itertools.product(*axes.values()):
            cell = dict(zip(axes, combo))
            hits = [i for i, e in enumerate(exclude) if _matches(cell, e)]
            for i in hits:
                used[i] = True
            if not hits:
                cells.append(cell)
    if warn is not None:
        for i, entry in enumerate(exclude):
            if not used[i]:
                warn(("exclude", i), f"{_entry_text(entry)} matches no cell, so it excludes nothing"
                                     f"{_hint(entry, axes)}")
    original = len(cells)
    for entry in include:
        merged = False
        for cell in cells[:original]:
            # An include entry may add keys to a cell but never overwrite one of its axis values.
            if all(same_value(cell[k], v) for k, v in entry.items() if k in axes):
                cell.update({k: v for k, v in entry.items() if k not in axes})
                merged = True
        if not merged:
            cells.append(dict(entry))
    if not cells:
        raise fail((), "the matrix has no cells left after exclude")
    return cells


def _entries(value: Any, key: str, fail: Fail) -> list[Cell]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise fail((key,), f"{key} must be a list of mappings such as {{item: potion, tier: rare}}")
    for i, entry in enumerate(value):
        if not entry:
            what = "would remove every cell" if key == "exclude" else "adds nothing"
            raise fail((key, i), f"an empty {key} entry {what}; give axis values such as {{item: potion}}")
    return value


def _entry_text(entry: Cell) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in entry.items()) + "}"


def _hint(entry: Cell, axes: dict[str, list[Any]]) -> str:
    """'; did you mean ...' for the first value of the entry that no axis value matches."""
    for key, value in entry.items():
        texts = [str(v) for v in axes.get(key, []) if isinstance(v, (str, int, float, bool))]
        if not texts or any(same_value(v, value) for v in axes.get(key, [])):
            continue
        folded = [t for t in texts if t.casefold() == str(value).casefold()]
        close = folded or difflib.get_close_matches(str(value), texts, n=1)
        if close:
            return f"; did you mean {key}: {close[0]}? (values match as text, case-sensitively)"
        return f"; {key} has no value {value!r}"
    return ""
