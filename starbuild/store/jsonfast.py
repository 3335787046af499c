"""JSON through orjson, byte-identical to the json module's output for the formats starbuild writes.

Two formats: the lockfile and manifests (sorted keys, two-space indent, trailing newline) and the
canonical form every hash is taken over (sorted keys, compact). orjson writes the same bytes as
``json.dumps(..., sort_keys=True, ensure_ascii=False)`` except for floats with a negative
exponent (``1e-7`` where json writes ``1e-07``), non-finite floats, integers beyond 64 bits and
keys that are not strings; output that could hold the first falls back to the json module, and the
others make orjson raise, which falls back too. tests/test_jsonfast.py compares both byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the json module still works
    orjson = None

_DIGITS = frozenset(b"0123456789")


def _negative_exponent(out: bytes) -> bool:
    """Whether ``out`` may hold a float such as 1e-07 (a digit, "e-", a digit); bytes.find is fast."""
    i = out.find(b"e-")
    while i != -1:
        if i > 0 and out[i - 1] in _DIGITS and i + 2 < len(out) and out[i + 2] in _DIGITS:
            return True
        i = out.find(b"e-", i + 2)
    return False
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _slow_pretty(data: Any) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def pretty(data: Any) -> bytes:
    """Sorted keys, two-space indentation, trailing newline."""
    if orjson is None:
        return _slow_pretty(data)
    try:
        out = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return _slow_pretty(data)
    return _slow_pretty(data) if _negative_exponent(out) else out


def canonical(data: Any) -> bytes:
    """Sorted-key compact JSON, the bytes every hash is taken over."""
    if orjson is None:
        return _CANONICAL.encode(data).encode()
    try:
        out = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _CANONICAL.encode(data).encode()
    return _CANONICAL.encode(data).encode() if _negative_exponent(out) else out


def loads(data: bytes | str) -> Any:
    """Parse JSON; what orjson refuses (NaN, for one) goes to the json module, which raises its own errors."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)
