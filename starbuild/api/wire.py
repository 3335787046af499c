"""The API's wire format, read tolerantly: every variant STARMAGIC_API.md lists is accepted."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

TERMINAL = ("completed", "failed", "cancelled")
# Task failure codes that a new submission may fix (a new submission costs again).
RETRYABLE_FAILURES = frozenset({
    "generation_failed_no_content", "service_error", "generation_timeout", "resource_exhausted",
    "quota_exceeded", "service_unavailable", "unknown_error",
})
_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", re.I)


@dataclass(frozen=True)
class Task:
    """A task object from submit or query, normalised."""

    id: str
    status: str  # pending | processing | completed | failed (cancelled becomes failed)
    progress: int = 0
    results: tuple[str, ...] | None = None
    error_code: str | None = None
    error_message: str | None = None
    credits_reserved: float | None = None
    estimated_time: float | None = None

    @property
    def done(self) -> bool:
        """Terminal, with results present when completed (results may lag behind the status)."""
        return self.status == "failed" or (self.status == "completed" and bool(self.results))


def _results(raw: Any) -> tuple[str, ...] | None:
    if not raw:
        return None
    urls = []
    for item in raw:
        if isinstance(item, str):
            urls.append(item)
        elif isinstance(item, dict) and isinstance(item.get("url"), str):
            urls.append(item["url"])
    return tuple(urls) or None


def _number(value: Any) -> float | None:
    """A finite number, or None: NaN, infinities (``1e400`` parses as one) and huge ints are dropped."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_task(data: Any) -> Task:
    """A task from JSON; raises ValueError only when it has no task id.

    Read defensively: an accepted task's id must never be lost to an odd field elsewhere (a
    non-finite number, a wrong type), so every other field falls back to "unknown".
    """
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ValueError("the answer is not a task object")
    try:
        return _parse_task(data)
    except Exception:  # noqa: BLE001 (whatever else is odd, the id is kept)
        return Task(id=data["id"], status="pending")


def _parse_task(data: dict) -> Task:
    status = _text(data.get("status")) or "pending"
    status = status.lower()
    error = data.get("error") if isinstance(data.get("error"), dict) else {}
    code = error.get("code")
    if status == "cancelled":
        status, code = "failed", code or "request_cancelled"
    if status not in ("pending", "processing", "completed", "failed"):
        status = "processing"  # an unknown state is treated as still running
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    info = data.get("task_info") if isinstance(data.get("task_info"), dict) else {}
    progress = _number(data.get("progress"))
    return Task(
        id=data["id"], status=status, progress=int(progress or 0), results=_results(data.get("results")),
        error_code=str(code) if code is not None else ("unknown_error" if status == "failed" else None),
        error_message=_text(error.get("message")),
        credits_reserved=_number(usage.get("credits_reserved")),
        estimated_time=_number(info.get("estimated_time")),
    )


@dataclass(frozen=True)
class ErrorBody:
    """An error answer in either envelope (string code, or the older integer code)."""

    code: str
    message: str
    retry_after: float | None = None


def parse_error(data: Any, status: int) -> ErrorBody:
    """The error of an answer body; a body that is not an envelope still gives the status."""
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return ErrorBody(str(status), f"HTTP {status}")
    code = err.get("code", status)
    message = str(err.get("message") or f"HTTP {status}")
    retry_after = None
    suggestion = err.get("fallback_suggestion")
    if isinstance(suggestion, str):
        m = _SECONDS.search(suggestion)
        retry_after = float(m.group(1)) if m else None
    return ErrorBody(str(code), message, retry_after)
