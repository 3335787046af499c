"""Safe YAML loading that keeps the line and column of every node and rejects duplicate keys.

Plain scalars such as ``16:9`` stay strings: YAML 1.1's base-60 integers would silently turn an
unquoted aspect ratio into 969, which no user means.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from starbuild.errors import ConfigError, Issue

Path_ = tuple  # a path into the document: keys and list indexes

_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""", re.X)
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)


class _Loader(yaml.SafeLoader):
    """SafeLoader without base-60 numbers and with duplicate keys refused."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class Marks:
    """Line/column (1-based) of each value and each mapping key, by path."""

    def __init__(self) -> None:
        self.values: dict[tuple, tuple[int, int]] = {}
        self.keys: dict[tuple, tuple[int, int]] = {}

    def find(self, path: tuple, *, key: bool = False) -> tuple[int, int] | None:
        """The closest known position of a path: itself, else its nearest ancestor."""
        table = self.keys if key else self.values
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), None)


def _pos(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def _walk(node: yaml.Node, path: tuple, marks: Marks, file: str, issues: list[Issue]) -> None:
    marks.values[path] = _pos(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            kpos = _pos(key_node.start_mark)
            if key in seen:
                issues.append(Issue(file, *kpos, ".".join(map(str, path + (key,))),
                                    f"duplicate key {key!r} (first at line {seen[key][0]})"))
            seen[key] = kpos
            marks.keys[path + (key,)] = kpos
            _walk(value_node, path + (key,), marks, file, issues)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), marks, file, issues)


def load_yaml(text: str, file: str) -> tuple[Any, Marks]:
    """Parse YAML text into plain data and the marks of its nodes; raise ConfigError on any problem."""
    loader = _Loader(text)
    marks = Marks()
    issues: list[Issue] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, marks
        _walk(node, (), marks, file, issues)
        if issues:
            raise ConfigError(issues)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _pos(mark) if mark else (None, None)
        problem = exc.problem or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            problem = f"{problem.strip()}: tags that build objects are not allowed"
        raise ConfigError(Issue(file, line, col, "", problem)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(Issue(file, None, None, "", f"invalid YAML: {exc}")) from None
    finally:
        loader.dispose()
    return data, marks


def load_yaml_file(path: Path, display: str | None = None) -> tuple[Any, Marks]:
    """Read and parse a YAML file; unreadable or non-UTF-8 files are config errors."""
    display = display or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(Issue(display, None, None, "", "file not found")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(Issue(display, None, None, "", f"cannot read: {exc}")) from None
    return load_yaml(text, display)
