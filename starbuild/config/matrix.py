"""Matrix expansion with GitHub Actions semantics, and axes read from CSV, JSON or YAML files.

Cells come out in a deterministic order: the cartesian product in axis order (the last axis
varies fastest), minus excluded cells, then the cells that ``include`` adds.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path
from typing import Any, Callable

from starbuild.config.project import FileAxis
from starbuild.errors import ConfigError
from starbuild.config.yamlfile import load_yaml

Cell = dict[str, Any]
# Reports a problem at a path inside the image's matrix: raise ConfigError with its location.
Fail = Callable[[tuple, str], ConfigError]


def read_axis_file(root: Path, rel: str, fail: Fail, where: tuple) -> list[Any]:
    """Rows of a CSV file (as mappings) or items of a JSON/YAML list, relative to the project."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise fail(where, f"{rel!r} is outside the project folder")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise fail(where, f"file {rel!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(where, f"cannot read {rel!r}: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows:
            raise fail(where, f"{rel!r} has no data rows")
        return rows
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise fail(where, f"{rel}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    elif suffix in (".yaml", ".yml"):
        data, _ = load_yaml(text, rel)
    else:
        raise fail(where, f"{rel!r}: axis files must be .csv, .json, .yaml or .yml")
    if not isinstance(data, list) or not data:
        raise fail(where, f"{rel!r} must hold a non-empty list")
    return data


def _matches(cell: Cell, entry: Cell) -> bool:
    return all(k in cell and cell[k] == v for k, v in entry.items())


def expand(matrix: dict[str, Any] | None, root: Path, fail: Fail) -> list[Cell]:
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
    if axes:
        for combo in itertools.product(*axes.values()):
            cell = dict(zip(axes, combo))
            if not any(_matches(cell, e) for e in exclude):
                cells.append(cell)
    original = len(cells)
    for entry in include:
        merged = False
        for cell in cells[:original]:
            # An include entry may add keys to a cell but never overwrite one of its axis values.
            if all(cell[k] == v for k, v in entry.items() if k in axes):
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
    return value
