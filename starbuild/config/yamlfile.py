"""Safe YAML loading that keeps the line and column of every node and rejects duplicate keys.

Plain scalars such as ``16:9`` stay strings: YAML 1.1's base-60 integers would silently turn an
unquoted aspect ratio into 969, which no user means. Likewise ``yes``, ``no``, ``on`` and ``off``
(any case) stay text, as YAML 1.2 reads them: a matrix value ``no`` (Norway) must not become
``False``. Only ``true`` and ``false`` are booleans.

Hostile documents are refused with a located error before they cost time or memory: nesting
deeper than MAX_DEPTH, recursive aliases, aliases that expand a document past MAX_NODES (the
"billion laughs"), files larger than MAX_BYTES, and characters YAML does not allow.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from starbuild.errors import ConfigError, Issue
from starbuild.safefile import read_text

MAX_BYTES = 16 * 2**20
MAX_DEPTH = 64
# Nodes of the document with every alias expanded: up to ALIAS_SLACK anything goes (an axis list
# shared by fifty images is fine); beyond it aliases may multiply the document at most
# ALIAS_RATIO times, and never past MAX_NODES (the "billion laughs" stops here within a second).
ALIAS_SLACK = 400_000
ALIAS_RATIO = 10
MAX_NODES = 2_000_000
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")

Path_ = tuple  # a path into the document: keys and list indexes

_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""", re.X)
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)


class _Loader(yaml.SafeLoader):
    """SafeLoader without base-60 numbers or YAML 1.1 yes/no/on/off, with nesting capped."""

    def compose_node(self, parent, index):
        depth = getattr(self, "_depth", 0)
        if depth >= MAX_DEPTH:
            raise _TooDeep(self.peek_event().start_mark)
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth


class _TooDeep(Exception):
    def __init__(self, mark: yaml.Mark):
        super().__init__(mark)
        self.mark = mark


_DROPPED = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
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


class _Walk:
    """Counts the nodes of a document as aliases expand it, and the path of nodes being walked."""

    def __init__(self) -> None:
        self.expanded = 0
        self.distinct: set[int] = set()
        self.open: set[int] = set()


def _walk(node: yaml.Node, path: tuple, marks: Marks, file: str, issues: list[Issue],
          state: _Walk | None = None) -> None:
    state = state or _Walk()
    if id(node) in state.open:
        raise ConfigError(Issue(file, *_pos(node.start_mark), ".".join(map(str, path)),
                                "a recursive alias (a node that contains itself) is not allowed"))
    state.expanded += 1
    state.distinct.add(id(node))
    if state.expanded > MAX_NODES or (state.expanded > ALIAS_SLACK and state.expanded > ALIAS_RATIO * len(state.distinct)):
        raise ConfigError(Issue(file, *_pos(node.start_mark), ".".join(map(str, path)),
                                "aliases expand this document too much (an alias bomb?); write the values out"))
    marks.values.setdefault(path, _pos(node.start_mark))
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        state.open.add(id(node))
        try:
            _walk_children(node, path, marks, file, issues, state)
        finally:
            state.open.discard(id(node))


def _walk_children(node: yaml.Node, path: tuple, marks: Marks, file: str, issues: list[Issue],
                   state: _Walk) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            kpos = _pos(key_node.start_mark)
            if key in seen:
                issues.append(Issue(file, *kpos, ".".join(map(str, path + (key,))),
                                    f"duplicate key {key!r} (first at line {seen[key][0]})"))
            seen[key] = kpos
            marks.keys.setdefault(path + (key,), kpos)
            if not isinstance(key_node, yaml.ScalarNode):  # a complex key is walked for its aliases too
                _walk(key_node, path + (key,), Marks(), file, issues, state)
            _walk(value_node, path + (key,), marks, file, issues, state)
    else:
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), marks, file, issues, state)


def load_yaml(text: str, file: str) -> tuple[Any, Marks]:
    """Parse YAML text into plain data and the marks of its nodes; raise ConfigError on any problem."""
    if len(text) > MAX_BYTES:
        raise ConfigError(Issue(file, None, None, "", f"the file is larger than {MAX_BYTES // 2**20} MB"))
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        line, col = _text_position(text, exc.position)
        raise ConfigError(Issue(file, line, col, "", f"the character {_char_name(exc.character)} is not "
                                "allowed in YAML; write it as an escape in a double-quoted string")) from None
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
    except _TooDeep as exc:
        raise ConfigError(Issue(file, *_pos(exc.mark), "", f"nesting deeper than {MAX_DEPTH} levels is not "
                                "allowed")) from None
    except RecursionError:
        raise ConfigError(Issue(file, None, None, "", "the document is nested too deeply")) from None
    except yaml.reader.ReaderError as exc:
        line, col = _text_position(text, exc.position)
        raise ConfigError(Issue(file, line, col, "", f"the character {_char_name(exc.character)} is not "
                                "allowed in YAML")) from None
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


def _text_position(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def _char_name(character: Any) -> str:
    code = character if isinstance(character, int) else ord(str(character)[:1] or "\0")
    return f"U+{code:04X}"


def load_yaml_file(path: Path, display: str | None = None) -> tuple[Any, Marks]:
    """Read and parse a YAML file; unreadable, non-regular, huge or non-UTF-8 files are config errors."""
    display = display or path.name
    try:
        text = read_text(path, MAX_BYTES)
    except FileNotFoundError:
        raise ConfigError(Issue(display, None, None, "", "file not found")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(Issue(display, None, None, "", f"cannot read: {exc}")) from None
    return load_yaml(text, display)
