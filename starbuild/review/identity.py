"""Who made a decision and when: git's user.name (else the OS user), and UTC ISO time."""

from __future__ import annotations

import getpass
import subprocess
from datetime import datetime, timezone
from pathlib import Path


def who(root: Path | None = None) -> str:
    """The git user.name of the project, else the operating system's user name."""
    try:
        out = subprocess.run(["git", "config", "user.name"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=False)
        name = out.stdout.strip()
        if out.returncode == 0 and name:
            return name
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(root: Path | None = None) -> dict[str, str]:
    """``{"by": ..., "at": ...}`` for a decision made now."""
    return {"by": who(root), "at": now()}
