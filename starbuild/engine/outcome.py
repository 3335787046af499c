"""Outcomes of a build: one AssetResult per asset, gathered in a BuildReport."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from starbuild.errors import ExitCode


class Outcome(str, enum.Enum):
    """What a build did with an asset."""

    BUILT = "built"
    CACHED = "cached"
    PULLED = "pulled"  # from the shared remote cache, 0 credits
    RESUMED = "resumed"
    FAILED = "failed"
    REMOVED = "removed"
    SKIPPED = "skipped"

    @property
    def ok(self) -> bool:
        return self in (Outcome.BUILT, Outcome.CACHED, Outcome.PULLED, Outcome.RESUMED)


@dataclass
class AssetResult:
    """The result of one asset's protocol."""

    name: str
    outcome: Outcome
    reason: str = ""
    spec_hash: str | None = None
    model: str | None = None
    request: dict[str, Any] | None = None
    credits: float = 0.0
    files: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    task_id: str | None = None
    error_code: str | None = None
    paid: float | None = None  # what the API reserved for the task that made the image (None: unknown)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.outcome.value, "reason": self.reason,
                "spec_hash": self.spec_hash, "model": self.model, "request": self.request,
                "credits": self.credits, "files": self.files, "error": self.error}


@dataclass
class BuildReport:
    """Everything a build did, for rendering and for the exit code."""

    results: list[AssetResult]
    version: int | None = None
    credits_reserved: float = 0.0
    elapsed: float = 0.0
    requests: int = 0
    adopted: int = 0  # paid images of earlier runs stored although no longer in the config
    offline: bool = False  # placeholders from the built-in emulator: nothing was paid
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the build stopped submitting (budget, refused key): exit 3
    remote_failed: bool = False  # the remote cache failed and --require-remote made that fatal

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def exit_code(self) -> ExitCode:
        if self.stopped:
            return ExitCode.REFUSED
        return ExitCode.FAILED if self.count(Outcome.FAILED) or self.remote_failed else ExitCode.OK

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"total": len([r for r in self.results if r.outcome != Outcome.REMOVED]),
                               "credits": round(self.credits_reserved, 4), "version": self.version,
                               "elapsed": round(self.elapsed, 3), "requests": self.requests}
        out.update({o.value: self.count(o) for o in Outcome})
        if self.stopped:
            out["stopped"] = self.stopped
        return out

    def to_json(self) -> dict[str, Any]:
        return {"assets": [r.to_json() for r in self.results], "summary": self.summary(), "notes": self.notes}
