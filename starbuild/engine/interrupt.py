"""Stop a running build from a signal handler as Ctrl-C does: cancel the build's main task.

asyncio turns Ctrl-C into a cancellation of the main task only when SIGINT has its default
handler; a process started with SIGINT ignored (a shell's background job, some CI runners) would
not stop at all. SIGTERM therefore cancels the build's task itself, wherever SIGINT stands: every
task in flight unwinds (journal records stay, holds and locks are released), and ``build()``
ends with KeyboardInterrupt, exactly as after Ctrl-C.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Iterator

_running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task]] = []
_stopped: list[bool] = []


@contextmanager
def stoppable() -> Iterator[None]:
    """Mark the current task as the build that ``stop_running_build`` cancels."""
    entry = (asyncio.get_running_loop(), asyncio.current_task())
    _running.append(entry)  # type: ignore[arg-type]
    try:
        yield
    finally:
        _running.remove(entry)  # type: ignore[arg-type]


def stop_running_build() -> bool:
    """Cancel the build in progress (safe from a signal handler); False when there is none."""
    if not _running:
        return False
    loop, task = _running[-1]
    _stopped.append(True)
    loop.call_soon_threadsafe(task.cancel)
    return True


def stop_requested() -> bool:
    """True once a build was told to stop."""
    return bool(_stopped)
