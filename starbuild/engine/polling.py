"""When to look at a task: its estimate, its reported progress, and what this run has learned.

A task is looked at shortly after it should have finished, rarely before:

- The first look waits for the task's expected duration, uncapped: what this run has learned
  (the ratio of actual to ``estimated_time``, or seconds when the API gives no estimate), else
  ``estimated_time``. Until something is learned, the first tasks of a run are looked at once
  early (a probe), so that their progress teaches every other task its real duration.
- A look that finds the task running reads ``progress``: the time since submission over the
  share done predicts the end, and the next look comes just after it.
- Every prediction is learned; a sleeping task whose expectation moves is woken to re-plan.
- Without any of that (no estimate, no progress yet), waits grow from ``base`` up to ``cap``.

With callbacks (SPEC.md §11) the callback wakes a task at once, and polling becomes a slow
safety net: no probes, and the first look waits well past the expected end.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starbuild.errors import ApiError

MARGIN = 0.005       # look this share of the duration after the predicted end ...
SLACK = 0.02         # ... plus this many seconds (where the server started it, against our guess)
PROBE_SHARE = 0.6    # a probe looks at this share of the expected duration
PROBES = 2           # tasks probed while nothing is learned
MIN_PROGRESS = 5     # progress below this predicts too coarsely
REPLAN = 0.01        # wake the sleepers when the expectation moves by more than this share
SAMPLES = 16         # the learned figure is the median of the latest samples
SAFETY_FACTOR = 2.0  # with callbacks: the first look at this multiple of the expected duration ...
SAFETY_EXTRA = 15.0  # ... and at least this many seconds after it


class Learned:
    """The median of the latest samples of one figure (a ratio or a number of seconds)."""

    def __init__(self) -> None:
        self._samples: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        self.value: float | None = None

    def add(self, sample: float) -> bool:
        """Add a sample; whether the figure moved enough to re-plan the sleeping tasks."""
        self._samples.append(sample)
        old, self.value = self.value, statistics.median(self._samples)
        return old is None or abs(self.value - old) > REPLAN * old


@dataclass(eq=False)
class Watched:
    """One task being waited for."""

    task_id: str
    started: float                       # monotonic time it started: mid-submission (or when first seen)
    estimated: float | None = None       # the submit answer's estimated_time
    known_start: bool = True             # False for a task of an earlier run
    polls: int = 0
    last_poll: float | None = None
    reading: tuple[float, int] | None = None   # (time, progress) of the latest look that saw progress
    first_reading: tuple[float, int] | None = None
    probe: bool = False
    wake: asyncio.Future | None = None    # set to wake the sleeping task early
    callback: Any = None                  # a task body delivered by a callback, once it arrives
    token: str | None = None              # its callback URL's last segment
    settling: bool = False                # seen completed without its results yet


@dataclass
class PollSchedule:
    """The shared knowledge of one run, and the time of each task's next look."""

    base: float = 0.5
    cap: float = 10.0
    callbacks: bool = False
    clock: Callable[[], float] = time.monotonic
    ratio: Learned = field(default_factory=Learned)    # actual duration / estimated_time
    seconds: Learned = field(default_factory=Learned)  # actual duration, for tasks without an estimate
    probes: int = 0
    sleeping: set = field(default_factory=set)
    version: int = 0   # bumped whenever the learned figures move

    def expected(self, w: Watched) -> float | None:
        """The duration this task is expected to take, from submission."""
        if w.estimated:
            return w.estimated * self.ratio.value if self.ratio.value is not None else w.estimated
        return self.seconds.value

    def predicted(self, w: Watched) -> float | None:
        """The duration its own progress predicts, when it has reported enough of it."""
        if w.reading is None:
            return None
        t, p = w.reading
        if w.known_start:
            # progress is whole percent: the end lies between these two; what the run has
            # learned picks the point within them
            low, high = (t - w.started) * 100.0 / (p + 1), (t - w.started) * 100.0 / p
            learned = self.ratio.value if w.estimated else self.seconds.value
            if learned is None:
                return high  # the latest end the reading allows: never early
            return min(high, max(low, self.expected(w)))
        if w.first_reading and p - w.first_reading[1] >= MIN_PROGRESS:
            t0, p0 = w.first_reading
            rate = (p - p0) / (t - t0)
            return t - w.started + (100.0 - p) / rate
        return None

    def next_look(self, w: Watched) -> float:
        """Clock time of the next look at this task."""
        now = self.clock()
        if not w.known_start and w.polls == 0:
            return now  # a task of an earlier run: look at once
        if w.settling:
            return w.last_poll + self.base  # finished, results not shown yet: they follow shortly
        if self.callbacks and w.token is not None:  # (a task of an earlier run has no callback coming)
            return self._safety_net(w, now)
        duration = self.predicted(w)
        if duration is None and w.polls == 0:
            if w.estimated == 0:
                return w.started  # estimated at no time at all: look at once
            duration = self.expected(w)
            if self._wants_probe(w):
                return w.started + (PROBE_SHARE * duration if duration else self.base)
            if duration is None:  # nothing known yet: leave the looking to the probes for a while
                return w.started + 4 * self.base
        gap = self._gap(w, now)
        if duration is None:
            return w.last_poll + gap
        at = w.started + duration * (1 + MARGIN) + SLACK
        return max(at, w.last_poll + gap) if w.polls else at

    def _safety_net(self, w: Watched, now: float) -> float:
        """With callbacks: a first look well after the expected end, then rarely."""
        if w.polls:
            return w.last_poll + max(3 * self.cap, 0.5 * (now - w.started))
        duration = self.expected(w) or SAFETY_EXTRA
        return w.started + max(duration * SAFETY_FACTOR, duration + SAFETY_EXTRA)

    def _gap(self, w: Watched, now: float) -> float:
        """Least time between two looks at a running task: grows with its age, within base..cap."""
        if w.reading is not None:
            return min(self.cap, max(self.base / 2, 0.03 * (now - w.started)))
        shy = 1 if w.probe or self.ratio.value is not None or self.seconds.value is not None else 4
        return min(self.cap, shy * self.base * 2 ** max(0, w.polls - 1))

    def _wants_probe(self, w: Watched) -> bool:
        learned = self.ratio.value is not None or self.seconds.value is not None
        if self.callbacks or w.probe or learned or self.probes >= PROBES or not w.known_start:
            return False
        w.probe = True
        self.probes += 1
        return True

    def observe(self, w: Watched, status: str, progress: int) -> None:
        """What a look saw; learns from the progress of a running task."""
        now = self.clock()
        w.polls += 1
        w.last_poll = now
        w.settling = status == "completed"
        if status == "processing" and MIN_PROGRESS <= progress < 100:
            w.reading = (now, progress)
            w.first_reading = w.first_reading or w.reading
            duration = self.predicted(w)
            if duration is not None:
                self._learn(w, duration)

    def finished(self, w: Watched) -> None:
        """The task was seen finished; a first look that found it done early teaches a shorter time."""
        if w.reading is None and w.known_start and w.polls == 1 and not self.callbacks:
            took = self.clock() - w.started
            expected = self.expected(w)
            if expected is not None and took < expected:
                self._learn(w, took)

    def _learn(self, w: Watched, duration: float) -> None:
        moved = self.ratio.add(duration / w.estimated) if w.estimated else self.seconds.add(duration)
        if moved:
            self.version += 1
            for sleeper in list(self.sleeping):
                if sleeper.wake is not None and not sleeper.wake.done():
                    sleeper.wake.set_result(None)

    async def sleep_until(self, w: Watched, at: float) -> None:
        """Sleep until ``at``, or until a callback or new knowledge wakes this task."""
        delay = at - self.clock()
        if delay <= 0 or w.callback is not None:
            return
        loop = asyncio.get_running_loop()
        w.wake = loop.create_future()
        timer = loop.call_later(delay, _resolve, w.wake)
        self.sleeping.add(w)
        try:
            await w.wake
        finally:
            timer.cancel()
            self.sleeping.discard(w)
            w.wake = None


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


async def wait_for_task(schedule: PollSchedule, w: Watched, query: Callable[[str], Awaitable[Any]],
                        parse: Callable[[Any], Any], timeout: float) -> Any:
    """Look at a task as the schedule says until it is done; a callback's body ends the wait at once.

    ``query(task_id)`` is a task query; ``parse(body)`` turns a callback's JSON into a task (or
    raises ValueError). A task still running after ``timeout`` seconds is an ApiError.
    """
    while True:
        at = schedule.next_look(w)
        if timeout and at - w.started > timeout:
            at = max(w.started + timeout, schedule.clock())
        await schedule.sleep_until(w, at)
        if w.callback is not None:
            body, w.callback = w.callback, None
            try:
                task = parse(body)
            except ValueError:
                task = None
            if task is not None and task.id == w.task_id and task.done:
                return task
            # a callback that says nothing final: look at the task now
        elif schedule.clock() < at:
            continue  # woken by new knowledge: plan again
        task = await query(w.task_id)
        schedule.observe(w, task.status, task.progress)
        if task.done:
            schedule.finished(w)
            return task
        if timeout and schedule.clock() - w.started > timeout:
            raise ApiError(f"task {w.task_id} did not finish within task_timeout ({timeout:g} s); it stays "
                           "journaled and the next build picks it up again", code="timeout")


class Tracker:
    """The runner's side of waiting: the schedule, each submission's start, and the callbacks.

    ``prepare(body)`` before a submission is sent (adds its callback_url), ``accepted(watched,
    task)`` once it is accepted, ``wait(task_id, ...)`` until the task is done.
    """

    def __init__(self, base: float, cap: float, hub: Any = None):
        self.schedule = PollSchedule(base, cap, callbacks=hub is not None)
        self.hub = hub
        self._accepted: dict[str, Watched] = {}

    def prepare(self, body: dict) -> Watched:
        w = Watched(task_id="", started=self.schedule.clock())
        if self.hub is not None:
            body["callback_url"] = self.hub.register(w)
        return w

    def accepted(self, w: Watched, task: Any) -> None:
        # The server started the task somewhere between our request and its answer: the middle.
        w.started = (w.started + self.schedule.clock()) / 2
        w.task_id, w.estimated = task.id, task.estimated_time
        self._accepted[task.id] = w

    async def wait(self, task_id: str, estimated: float | None, query: Callable[[str], Awaitable[Any]],
                   parse: Callable[[Any], Any], timeout: float) -> Any:
        w = self._accepted.pop(task_id, None)
        if w is None:  # a task of an earlier run
            w = Watched(task_id, self.schedule.clock(), estimated, known_start=False)
        try:
            return await wait_for_task(self.schedule, w, query, parse, timeout)
        finally:
            if self.hub is not None:
                self.hub.drop(w)
