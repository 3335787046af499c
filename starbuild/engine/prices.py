"""What a submission holds against the budget: a learned price, or a pessimistic one while probing.

A kind of image is what prices it (``models.price_kind``). The price of a kind is learned only
from a ``credits_reserved`` the API returned for it (finite, above zero): never from a cache hit,
never from an answer without usage. Learned prices persist in the lockfile (each entry's
``credits`` is what the API reserved for the task that made it), so every build of the project,
and everyone who shares its lockfile, starts from them.

While a kind's price is unknown, its submissions go one at a time (a probe) and each holds the
kind's ceiling (``models.ceiling_credits``), or everything the budget has left when that is less
(so the probe is then alone in flight). Once an answer tells the price, every further submission
of the kind holds the highest price seen for it, at any concurrency.
"""

from __future__ import annotations

import asyncio

from starbuild.models import learnable_credits


class PriceBook:
    """Learned prices by kind, and the one probe in flight for each kind still unknown."""

    def __init__(self, learned: dict[tuple, float] | None = None):
        self._learned: dict[tuple, float] = {}
        for kind, credits in (learned or {}).items():
            self.learn(kind, credits)
        self._probes: dict[tuple, asyncio.Event] = {}

    def price(self, kind: tuple) -> float | None:
        """The learned price of a kind, or None while it is unknown."""
        return self._learned.get(kind)

    def learn(self, kind: tuple, credits: object) -> float | None:
        """Remember what the API reserved (only a finite positive number); the usable value or None."""
        value = learnable_credits(credits)
        if value is not None:
            self._learned[kind] = max(value, self._learned.get(kind, 0.0))
        return value

    async def claim(self, kind: tuple) -> bool:
        """Wait for a turn to submit a kind; True when this submission is the kind's probe."""
        while kind not in self._learned:
            probe = self._probes.get(kind)
            if probe is None:
                self._probes[kind] = asyncio.Event()
                return True
            await probe.wait()
        return False

    def end_probe(self, kind: tuple) -> None:
        """The probe's answer is in (or it never went): let the kind's next submission go."""
        probe = self._probes.pop(kind, None)
        if probe is not None:
            probe.set()
