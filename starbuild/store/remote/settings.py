"""How this build uses the remote cache: the mode and namespace from config and environment."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from starbuild.config.cache import MODES, NAMESPACE_PATTERN, RemoteConfig
from starbuild.errors import UsageError

MAIN_BRANCHES = ("main", "master")
# Where CI services name the branch being built; a pull request's head branch comes first.
BRANCH_VARS = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "CI_COMMIT_BRANCH",
               "CI_COMMIT_REF_NAME", "BUILDKITE_BRANCH", "CIRCLE_BRANCH", "BITBUCKET_BRANCH", "BRANCH_NAME",
               "GIT_BRANCH")


@dataclass(frozen=True)
class RemoteSettings:
    """The resolved remote cache of one run."""

    url: str
    endpoint: str | None
    mode: str  # read-write | read-only
    why: str  # how the mode was chosen, for messages
    namespace: str
    read_namespaces: tuple[str, ...]
    lease_wait: float

    @property
    def writable(self) -> bool:
        return self.mode == "read-write"

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Where results are looked up: this build's namespace first."""
        return (self.namespace, *[n for n in self.read_namespaces if n != self.namespace])


def _truthy(value: str | None) -> bool:
    return bool(value) and value.strip().lower() not in ("0", "false", "no", "off")


def ci_branch(env: dict[str, str], root: Path) -> str | None:
    """The branch a CI job builds, from the CI's variables, else from git."""
    for var in BRANCH_VARS:
        value = (env.get(var) or "").strip()
        if value:
            return value.removeprefix("refs/heads/").removeprefix("origin/")
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--abbrev-ref", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    branch = out.stdout.strip()
    return branch if out.returncode == 0 and branch and branch != "HEAD" else None


def resolve_mode(config_mode: str, env: dict[str, str], root: Path) -> tuple[str, str]:
    """(mode, why): read-write, read-only or off."""
    mode, why = config_mode, "cache.remote.mode"
    if env.get("STARBUILD_REMOTE_CACHE"):
        mode, why = env["STARBUILD_REMOTE_CACHE"].strip().lower(), "STARBUILD_REMOTE_CACHE"
        if mode not in MODES:
            raise UsageError(f"STARBUILD_REMOTE_CACHE={env['STARBUILD_REMOTE_CACHE']!r} is not a mode; "
                             f"use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode, why
    if not _truthy(env.get("CI")):
        return "read-write", "auto: not in CI"
    branch = ci_branch(env, root)
    if branch in MAIN_BRANCHES:
        return "read-write", f"auto: CI on {branch}"
    return "read-only", f"auto: CI on {branch or 'an unknown branch'}"


def remote_settings(remote: RemoteConfig | None, env: dict[str, str], root: Path) -> RemoteSettings | None:
    """The remote cache this run uses, or None (not configured, or off)."""
    if remote is None:
        return None
    mode, why = resolve_mode(remote.mode, env, root)
    if mode == "off":
        return None
    namespace = remote.namespace
    if env.get("STARBUILD_CACHE_NAMESPACE"):
        namespace = env["STARBUILD_CACHE_NAMESPACE"].strip()
        if not re.match(NAMESPACE_PATTERN, namespace):
            raise UsageError(f"STARBUILD_CACHE_NAMESPACE={namespace!r} is not a namespace: letters, digits, "
                             "'.', '_' and '-'")
    return RemoteSettings(url=remote.url, endpoint=remote.endpoint, mode=mode, why=why, namespace=namespace,
                          read_namespaces=tuple(remote.read_namespaces), lease_wait=remote.lease_wait)
