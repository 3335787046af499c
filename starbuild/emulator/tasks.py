"""Task records and their life: pending -> processing -> completed | failed | cancelled.

A task's state is a pure function of the clock, so a test that moves a ManualClock sees the
task advance without any background work.
"""

from __future__ import annotations

import math
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

from .faults import EXTRA_NESTED, EXTRA_TOP, TASK_FAILURE_MESSAGES

TASK_PREFIX = "task-unified-"
_ID_ALPHABET = string.ascii_lowercase + string.digits
RESULT_NAME = re.compile(r"^(task-unified-\d+-[a-z0-9]{8})-(\d+)\.png$")
PENDING_SHARE = 0.1  # the first tenth of a task's time is spent queued


@dataclass
class Task:
    """One accepted submission and everything that decides how it ends."""

    id: str
    created: int
    submitted: float
    model: str
    request: dict
    owner: str
    n: int
    width: int
    height: int
    credits: float
    latency: float
    outcome: str = "completed"           # completed | failed | cancelled
    failure_code: str | None = None
    failure_message: str | None = None
    ends_after: float | None = None      # seconds to the terminal state; defaults to latency
    results_null_seconds: float = 0.0
    results_objects: bool = False
    extra_fields: bool = False
    callback_url: str | None = None
    base: Callable[[], bytes] | None = None   # first reference image, for edits
    transparent: bool = False
    estimated: int | None = None              # estimated_time shown; None: the latency rounded up

    @property
    def done_at(self) -> float:
        """Clock time of the terminal state."""
        return self.submitted + (self.latency if self.ends_after is None else self.ends_after)

    @property
    def settled_at(self) -> float:
        """Clock time from which a query shows the final answer (results included)."""
        return self.done_at + (self.results_null_seconds if self.outcome == "completed" else 0.0)

    def state(self, now: float) -> tuple[str, int]:
        """(status, progress) at clock time ``now``."""
        if now >= self.done_at:
            return (self.outcome, 100 if self.outcome == "completed" else 0)
        elapsed = now - self.submitted
        if elapsed < PENDING_SHARE * self.latency:
            return ("pending", 0)
        return ("processing", min(99, max(1, int(100 * elapsed / self.latency))))

    def unfinished(self, now: float) -> bool:
        return self.state(now)[0] in ("pending", "processing")

    def result_url(self, base_url: str, index: int) -> str:
        return f"{base_url.rstrip('/')}/cdn/{self.id}-{index}.png"


def new_task_id(created: int, taken: Callable[[str], bool]) -> str:
    """A fresh id of the documented form for a task created at ``created`` (unix seconds)."""
    while True:
        suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
        task_id = f"{TASK_PREFIX}{created}-{suffix}"
        if not taken(task_id):
            return task_id


def estimated_time(latency: float, scale: float = 1.0, rounding: str = "up") -> int:
    """Whole seconds, rounded up by default: a task that takes any time at all is estimated at 1 s or more."""
    seconds = latency * scale
    if rounding == "down":
        return int(seconds)
    return math.ceil(seconds) if seconds > 0 else 0


def task_view(task: Task, now: float, base_url: str, *, submitted: bool = False) -> dict:
    """The JSON of a task as the submit answer (``submitted``) or a task query shows it."""
    status, progress = ("pending", 0) if submitted else task.state(now)
    body: dict = {
        "created": task.created,
        "id": task.id,
        "model": task.model,
        "object": "image.generation.task",
        "progress": progress,
        "status": status,
        "task_info": {"can_cancel": status in ("pending", "processing"),
                      "estimated_time": task.estimated if task.estimated is not None else estimated_time(task.latency)},
        "type": "image",
        "usage": {"billing_rule": "per_call", "credits_reserved": task.credits, "user_group": "default"},
    }
    if status == "completed":
        body["results"] = None if now < task.settled_at else _results(task, base_url)
    elif status == "failed":
        body["error"] = {"code": task.failure_code, "type": "task_error",
                         "message": task.failure_message or TASK_FAILURE_MESSAGES.get(
                             task.failure_code, "The task failed")}
    if task.extra_fields:
        _add_extra_fields(body, submitted)
    return body


def _results(task: Task, base_url: str) -> list:
    urls = [task.result_url(base_url, i) for i in range(task.n)]
    return [{"url": url} for url in urls] if task.results_objects else urls


def _add_extra_fields(body: dict, submitted: bool) -> None:
    body.update(EXTRA_TOP)
    body["task_info"].update(EXTRA_NESTED)
    if "error" in body:
        body["error"].update(EXTRA_NESTED)
    if not submitted:  # the variant: task queries without usage or estimated_time
        del body["usage"]
        del body["task_info"]["estimated_time"]
    else:
        body["usage"].update(EXTRA_NESTED)
