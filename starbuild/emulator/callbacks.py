"""Callbacks: one POST of the task-query JSON when a task settles, retried as documented.

"Settles" is the terminal state, or for the results-null variant the moment results show:
a callback is the client's cue to download, so it carries the final answer.

Tasks advance with the emulator's clock, which may be a ManualClock, so a small watcher polls
the clock for tasks that have settled; the deliveries themselves run in real time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from functools import lru_cache

import httpx

from .tasks import Task

log = logging.getLogger(__name__)
WATCH_INTERVAL = 0.02


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """Building a verifying TLS context costs a good part of a second; build it once."""
    return ssl.create_default_context()


class CallbackSender:
    """Delivers the callbacks of settled tasks from the event loop that serves the emulator."""

    def __init__(self, clock: Callable[[], float], payload: Callable[[Task], dict],
                 delays: Callable[[], tuple[float, ...]], timeout: Callable[[], float]):
        self._clock = clock
        self._payload = payload
        self._delays = delays
        self._timeout = timeout
        self._waiting: dict[str, Task] = {}
        self._running: set[asyncio.Task] = set()
        self._watcher: asyncio.Task | None = None
        self.log: list[dict] = []  # one entry per delivery attempt: task_id, url, attempt, outcome

    def watch(self, task: Task) -> None:
        """Send ``task``'s callback once it settles."""
        self._waiting[task.id] = task
        self.poke()

    def poke(self) -> None:
        """Make sure a watcher runs in the current event loop while callbacks are waiting."""
        if not self._waiting:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not inside asyncio (another async library): nothing to run on
            return
        watcher = self._watcher
        if watcher is None or watcher.done() or watcher.get_loop() is not loop:
            self._watcher = loop.create_task(self._watch())

    def clear(self) -> None:
        self._waiting.clear()
        self.log.clear()

    async def _watch(self) -> None:
        while self._waiting:
            now = self._clock()
            for task in [t for t in self._waiting.values() if now >= t.settled_at]:
                del self._waiting[task.id]
                delivery = asyncio.get_running_loop().create_task(self._deliver(task))
                self._running.add(delivery)
                delivery.add_done_callback(self._running.discard)
            await asyncio.sleep(WATCH_INTERVAL)

    async def _deliver(self, task: Task) -> None:
        payload = self._payload(task)
        delays = (0.0,) + tuple(self._delays())
        async with httpx.AsyncClient(timeout=self._timeout(), verify=_tls()) as client:
            for attempt, delay in enumerate(delays, start=1):
                if delay:
                    await asyncio.sleep(delay)
                try:
                    response = await client.post(task.callback_url, json=payload)
                    outcome: int | str = response.status_code
                    delivered = 200 <= response.status_code < 300
                except httpx.HTTPError as exc:
                    outcome, delivered = type(exc).__name__, False
                self.log.append({"task_id": task.id, "url": task.callback_url,
                                 "attempt": attempt, "outcome": outcome})
                if delivered:
                    return
        log.info("callback for %s not delivered after %d attempts", task.id, len(delays))
