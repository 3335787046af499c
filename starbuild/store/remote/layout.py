"""Where things live under the remote cache's prefix (SPEC.md §7); version 1 of the layout."""

from __future__ import annotations

import re

ROOT = "v1"
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def cas_key(sha: str) -> str:
    """Image bytes by content hash: create-only, verified on every read."""
    return f"{ROOT}/cas/sha256/{sha[:2]}/{sha}"


def ac_key(namespace: str, spec_hash: str) -> str:
    """The result of a spec: which images it made (written after their bytes)."""
    return f"{ROOT}/ac/{namespace}/{spec_hash}.json"


def lease_key(namespace: str, spec_hash: str) -> str:
    """A claim that someone is paying for a spec right now."""
    return f"{ROOT}/lease/{namespace}/{spec_hash}.json"


def alt_key(namespace: str, spec_hash: str, sha: str) -> str:
    """A second result paid for the same spec by a race: kept, never deleted."""
    return f"{ROOT}/alt/{namespace}/{spec_hash}/{sha}.json"


def file_key(name: str) -> str:
    """A small file of another feature (the spend ledger, ...), under ``v1/files/``."""
    if not NAME_RE.match(name) or any(part in (".", "..") for part in name.split("/")):
        raise ValueError(f"{name!r} is not a remote file name: letters, digits, '.', '_', '-' and '/'")
    return f"{ROOT}/files/{name}"
