"""orjson output is byte-identical to the json module's for the lockfile, manifests and spec hashes."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from conftest import matrix_config
from starbuild.plan.spec import GenerationSpec, InputRef
from starbuild.store import jsonfast

TRICKY = ["", "plain", "é漢字🙂", "\x00\x1f\x7f\x80\x9f", "\u2028\u2029", '"\\/', "\t\n\r\b\f", "a" * 5000,
          "3e-5 apples", "</script>"]
NUMBERS = [0, -1, 2**63 - 1, -(2**63), 2**64, 0.1, 2.5, 1e16, 1e-7, 123456789.123, -0.0, 1.5e300, 5e-324]


def _pretty(data) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _canonical(data) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice(TRICKY)
    if kind == 1:
        return rng.choice(NUMBERS)
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if kind == 4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(TRICKY + ["k", "Z", "b", "ä"]): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


@pytest.mark.parametrize("seed", range(30))
def test_random_documents_are_byte_identical(seed):
    doc = _random_value(random.Random(seed))
    assert jsonfast.pretty(doc) == _pretty(doc)
    assert jsonfast.canonical(doc) == _canonical(doc)


@pytest.mark.parametrize("value", TRICKY + NUMBERS + [{1: "int key"}, {"nested": {"": [], "x": {}}}])
def test_edge_values_are_byte_identical(value):
    doc = {"v": value, "list": [value]}
    assert jsonfast.pretty(doc) == _pretty(doc)
    assert jsonfast.canonical(doc) == _canonical(doc)


def test_spec_hashes_are_those_of_the_json_module():
    spec = GenerationSpec.effective(name="a/b", model="gpt-image-2", prompt="Ünïcode \u2028 \"quoted\" 🙂",
                                    size="16:9", resolution="2k", quality=None, n=2, background=None, take=3,
                                    inputs=(InputRef("url", "https://x/y.png"), InputRef("file", "in.png", "ab" * 32)))
    for placeholder in (False, True):
        expected = hashlib.sha256(_canonical(spec.hash_payload(placeholder))).hexdigest()
        assert spec.spec_hash(placeholder) == expected


def test_lockfile_and_manifest_bytes_are_those_of_the_json_module(project):
    project.config(matrix_config(3, prompt="ïcon {{ i }} \u2028"))
    assert project.run("build", "--offline").exit_code == 0
    lock_bytes = (project.root / "starbuild.lock").read_bytes()
    assert lock_bytes == _pretty(json.loads(lock_bytes))
    manifest = (project.root / "assets" / "current" / "manifest.json").read_bytes()
    assert manifest == _pretty(json.loads(manifest))


def test_loads_reads_what_json_reads():
    assert jsonfast.loads(b'{"a": NaN}')["a"] != jsonfast.loads(b'{"a": NaN}')["a"]  # NaN, via json
    assert jsonfast.loads('{"a": [1, 2.5, "é"]}') == {"a": [1, 2.5, "é"]}
    with pytest.raises(ValueError):
        jsonfast.loads(b"{")
