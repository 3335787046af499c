"""Configuration of the emulator: behaviour, injected faults and the clock.

Kept free of heavy imports so that the CLI can build its ``emulator`` options from these
dataclasses without loading the web stack.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

# Every task failure code STARMAGIC_API.md documents, in its order.
FAILURE_CODES = (
    "content_policy_violation", "invalid_parameters", "image_processing_error",
    "image_dimension_mismatch", "request_cancelled", "resource_not_found",
    "generation_failed_no_content", "service_error", "generation_timeout",
    "resource_exhausted", "quota_exceeded", "service_unavailable", "unknown_error",
)

DEFAULT_PUBLIC_URL = "http://starmagic.emulator"
# The file service lives on its own host, as on the platform (files-api.* beside api.*).
DEFAULT_FILES_URL = "http://files.starmagic.emulator"


@dataclass
class Faults:
    """Rates (0..1) of the failures and documented variants the emulator injects.

    Each rate is drawn per eligible request or task from its own ``random.Random`` stream
    derived from the seed, so turning one fault on does not reshuffle the others.
    Request faults (429, 5xx, reset, slow) apply to the API calls a client retries: submit and
    task query. Task faults (failed, cancelled, results variants, extra fields) are drawn once
    per accepted task. ``rate_legacy_envelope`` is drawn per error answer.
    Hostile faults: ``rate_echo_headers`` refuses an API request with a 400 whose message echoes
    the request's headers (the key included); ``rate_escape_text`` puts terminal escape sequences
    into error and task failure messages; ``rate_drip_task`` / ``rate_drip_result`` send a task
    query's / a result download's body one byte every ``drip_seconds``.
    """

    rate_429: float = 0.0
    rate_429_retry_after: float = 0.0
    rate_500: float = 0.0
    rate_502: float = 0.0
    rate_503: float = 0.0
    rate_reset: float = 0.0
    rate_slow: float = 0.0
    slow_seconds: float = 2.0
    rate_task_failed: float = 0.0
    failure_codes: tuple[str, ...] = FAILURE_CODES
    rate_cancelled: float = 0.0
    rate_results_null: float = 0.0
    results_null_seconds: float = 1.0
    rate_results_objects: float = 0.0
    rate_legacy_envelope: float = 0.0
    rate_extra_fields: float = 0.0
    # Answers to a submission that a budget must survive: no usage, a NaN, negative or overflowing
    # (1e400) credits_reserved, an overflowing progress, and answers that come only after a delay
    # (the task is accepted, and billed, before the delay).
    rate_usage_missing: float = 0.0
    rate_usage_nan: float = 0.0
    rate_usage_negative: float = 0.0
    rate_usage_huge: float = 0.0
    rate_progress_overflow: float = 0.0
    rate_slow_submit: float = 0.0
    slow_submit_seconds: float = 1.0
    rate_echo_headers: float = 0.0
    rate_escape_text: float = 0.0
    rate_drip_task: float = 0.0
    rate_drip_result: float = 0.0
    drip_seconds: float = 1.0
    max_unfinished: int | None = None
    # Credits reserved (and billed) per image whatever the price table says: a server that costs
    # more than starbuild's estimate (None: the estimate).
    reserve_per_image: float | None = None

    def __post_init__(self) -> None:
        for name in rate_fields():
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"Faults.{name} must be between 0 and 1, not {rate!r}")
        # Undocumented codes are allowed on purpose: a client must survive codes it does not know.
        if self.reserve_per_image is not None and not self.reserve_per_image >= 0:
            raise ValueError(f"Faults.reserve_per_image must be 0 or more, not {self.reserve_per_image!r}")
        self.failure_codes = tuple(self.failure_codes)
        if not self.failure_codes or not all(isinstance(c, str) and c for c in self.failure_codes):
            raise ValueError("Faults.failure_codes must be one or more non-empty strings")


def rate_fields() -> list[str]:
    """Names of the Faults fields that are rates, in declaration order."""
    return [f.name for f in fields(Faults) if f.name.startswith("rate_")]


@dataclass
class EmulatorConfig:
    """How the emulated API behaves; see STARMAGIC_API.md for the documented defaults."""

    latency: float = 0.0
    ttl: float = 86400.0
    task_ttl: float = 3 * 86400.0
    file_ttl: float = 72 * 3600.0
    seed: int = 0
    api_key: str | None = None
    credit_balance: float | None = None
    denied_models: frozenset[str] = frozenset()
    render: str = "full"
    public_url: str = DEFAULT_PUBLIC_URL
    files_url: str = DEFAULT_FILES_URL  # base of the file service: uploads and uploaded files
    allow_loopback_callbacks: bool = False
    faults: Faults = field(default_factory=Faults)
    # Documented schedule: one attempt, then retries 1, 2 and 4 s after each failure.
    callback_retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0)
    callback_timeout: float = 10.0
    # estimated_time in answers: the task's latency times estimate_scale, rounded "up" (whole
    # seconds, the default) or "down" (as a real service that under-promises might)
    estimate_scale: float = 1.0
    estimate_round: str = "up"

    def __post_init__(self) -> None:
        if self.render not in ("full", "plain"):
            raise ValueError(f"EmulatorConfig.render must be 'full' or 'plain', not {self.render!r}")
        if self.estimate_round not in ("up", "down"):
            raise ValueError(f"EmulatorConfig.estimate_round must be 'up' or 'down', not {self.estimate_round!r}")
        self.denied_models = frozenset(self.denied_models)


class ManualClock:
    """A clock that only moves when told to, so tests can pass hours without sleeping."""

    def __init__(self, start: float = 1_757_156_493.0):
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds
        return self._now


def default_clock() -> float:
    return time.time()
