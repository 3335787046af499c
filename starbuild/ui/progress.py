"""Build progress: a live rich display on a terminal, plain lines otherwise, and the final summary.

Both displays take the runner's events: ``plan`` (how many jobs), ``submit``/``submitted`` (with
the API's ``estimated_time``), ``resume``, ``progress`` (the API's progress of a task), ``backoff``
(a refused submission waits, 429 included), ``lease_wait``/``waiting`` (a teammate holds the
lease on an image), and one outcome per job (built, cached, pulled, resumed, failed, skipped).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from starbuild.engine.outcome import BuildReport
from starbuild.text import printable
from starbuild.ui.words import credits_text

OUTCOMES = ("built", "cached", "pulled", "resumed", "failed", "skipped")
WAIT_EVENTS = ("lease_wait", "waiting")
_LINE_EVENTS = {"submitted", "resume", "retry", "backoff", *WAIT_EVENTS, *OUTCOMES}


class PlainProgress:
    """One line per event that matters, on stderr."""

    def __init__(self, out: TextIO | None = None, quiet: bool = False):
        self.out = out or sys.stderr
        self.quiet = quiet
        self.offline = False

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, kind: str, name: str, info: dict) -> None:
        if kind == "plan":
            self.offline = bool(info.get("offline"))
        if self.quiet or kind not in _LINE_EVENTS:
            return  # a failure's reason is printed once, by the summary
        # task ids and statuses come from a server
        self.out.write(printable(f"{kind:<9} {name}{_detail(kind, info, self.offline)}") + "\n")
        self.out.flush()


def _detail(kind: str, info: dict, offline: bool = False) -> str:
    est = f", about {info['estimated_time']:g} s" if info.get("estimated_time") else ""
    if kind == "submitted" and offline:
        return " (placeholder, free)"
    if kind == "submitted" and info.get("credits") is not None:
        return f" ({credits_text(info['credits'])} reserved{est})"
    if kind == "resume":
        return f" (task {info.get('task_id')})"
    if kind == "backoff":
        why = "rate limited (429)" if info.get("rate_limited") else "server busy"
        return f": {why}, submitting again in {info.get('delay', 0):.1f} s"
    if kind == "pulled":
        return " (from the remote cache)"
    if kind in WAIT_EVENTS:  # a teammate's lease on the same image in the remote cache
        holder = f" of {_holder(info)}" if _holder(info) else ""
        limit = f" (up to {info['seconds']:g} s)" if info.get("seconds") else ""
        return f": waiting for a teammate's lease{holder}{limit}"
    return ""


def _holder(info: dict) -> str | None:
    """Who holds the lease a wait is on, under whichever name the event gives it."""
    for key in ("holder", "owner", "by", "host"):
        if info.get(key):
            return str(info[key])
    return None


@dataclass
class _InFlight:
    since: float
    estimate: float | None = None
    progress: int | None = None  # the API's figure, once a poll has said
    status: str = "submitted"

    def fraction(self, now: float) -> float:
        if self.progress is not None and self.progress > 0:
            return self.progress / 100
        if self.estimate:
            return min(0.99, (now - self.since) / self.estimate)
        return 0.0

    def remaining(self, now: float) -> float | None:
        if not self.estimate:
            return None
        if self.progress:
            return self.estimate * (1 - self.progress / 100)
        return max(0.0, self.estimate - (now - self.since))


class LiveProgress:
    """A rich progress bar redrawn every second, with the jobs in flight and what each waits for."""

    MAX_ROWS = 8

    def __init__(self, out: TextIO | None = None, clock=time.monotonic):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=out or sys.stderr)
        self.clock = clock
        self.progress = Progress(TextColumn("[bold]build"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                                 TextColumn("{task.fields[credits]}"), console=self.console, auto_refresh=False)
        self.task = self.progress.add_task("build", total=None, eta="", credits="")
        self.inflight: dict[str, _InFlight] = {}
        self.waits: dict[str, tuple[str, float | None]] = {}
        self.names: dict[str, str] = {}  # task id -> job name
        self.credits = 0.0
        self.done = 0
        self.total = 0
        self.estimates: list[float] = []
        self.live = None
        self.offline = False

    def __enter__(self) -> "LiveProgress":
        from rich.live import Live

        self.live = Live(console=self.console, get_renderable=self.render, refresh_per_second=4, transient=True)
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def __call__(self, kind: str, name: str, info: dict) -> None:
        now = self.clock()
        if kind == "plan":
            self.total = info.get("total", 0)
            self.offline = bool(info.get("offline"))
        elif kind in ("submitted", "resume"):
            self._start(name, info, now)
        elif kind == "progress" and info.get("task_id") in self.names:
            job = self.inflight.get(self.names[info["task_id"]])
            if job is not None:
                job.progress, job.status = info.get("progress"), info.get("status") or job.status
        elif kind == "backoff":
            label = "429: backing off" if info.get("rate_limited") else "server busy: backing off"
            self.waits[name] = (label, now + float(info.get("delay") or 0))
        elif kind in WAIT_EVENTS:
            holder = f" ({_holder(info)})" if _holder(info) else ""
            self.waits[name] = (f"waiting for a teammate's lease{holder}", None)
        elif kind in OUTCOMES:
            self._finish(kind, name, info)

    def _start(self, name: str, info: dict, now: float) -> None:
        self.waits.pop(name, None)
        estimate = info.get("estimated_time")
        self.inflight[name] = _InFlight(now, float(estimate) if estimate else None)
        if estimate:
            self.estimates.append(float(estimate))
        if info.get("task_id"):
            self.names[info["task_id"]] = name
        if info.get("credits"):
            self.credits += info["credits"]

    def _finish(self, kind: str, name: str, info: dict) -> None:
        self.inflight.pop(name, None)
        self.waits.pop(name, None)
        self.done += 1

    def eta(self, now: float) -> float | None:
        """Seconds left: the longest job in flight, plus the queued jobs at the observed estimate."""
        jobs = list(self.inflight.values())  # the display thread reads while events arrive
        left = [r for r in (j.remaining(now) for j in jobs) if r is not None]
        queued = max(0, self.total - self.done - len(jobs))
        if not left and not (queued and self.estimates):
            return None
        per = sum(self.estimates) / len(self.estimates) if self.estimates else 0.0
        lanes = max(1, len(jobs))
        return max(left, default=0.0) + -(-queued // lanes) * per

    def render(self):
        from rich.console import Group
        from rich.text import Text

        now = self.clock()
        eta = self.eta(now)
        self.progress.update(self.task, total=self.total or None, completed=self.done,
                             eta=f"ETA {eta:.0f}s" if eta is not None else "",
                             credits="placeholders (free)" if self.offline else
                             f"{credits_text(self.credits)} reserved" if self.credits else "")
        rows = [self._row(name, job, now) for name, job in list(self.inflight.items())[:self.MAX_ROWS]]
        rows += [self._wait_row(name, label, until, now) for name, (label, until) in list(self.waits.items())[:4]]
        if len(self.inflight) > self.MAX_ROWS:
            rows.append(Text(f"  ... {len(self.inflight) - self.MAX_ROWS} more in flight", style="dim"))
        return Group(self.progress.get_renderable(), *rows)

    @staticmethod
    def _row(name: str, job: _InFlight, now: float):
        from rich.text import Text

        pct = job.fraction(now) * 100
        mark = "" if job.progress else "~"
        left = job.remaining(now)
        tail = f", {left:.0f}s left" if left is not None else ""
        return Text(printable(f"  {name}  {job.status} {mark}{pct:.0f}%{tail} ({now - job.since:.0f}s)"))

    @staticmethod
    def _wait_row(name: str, label: str, until: float | None, now: float):
        from rich.text import Text

        left = f" {max(0.0, until - now):.0f}s" if until is not None else ""
        return Text(printable(f"  {name}  {label}{left}"), style="yellow")


def render_summary(report: BuildReport, out: TextIO | None = None, where: Path | None = None) -> None:
    """The end-of-build summary: a table on a terminal; failures with reasons, counts, time and place."""
    out = out or sys.stdout
    s = report.summary()
    if out.isatty():
        _summary_table(report, out)
    for r in report.results:
        if r.outcome.value == "failed":
            out.write(printable(f"failed: {r.name}: {r.error}") + "\n")  # errors carry server text
        elif r.outcome.value == "skipped" and r.reason != "not selected" and not (
                report.stopped and r.error_code in ("budget", "refused")):  # those are named once, below
            out.write(printable(f"skipped: {r.name}: {r.reason}") + "\n")
    for note in report.notes:
        out.write(f"note: {note}\n")
    if report.stopped:
        out.write(f"stopped: {report.stopped}\n")
    if s["failed"]:
        out.write(_retry_hint(report) + "\n")
    version = f"; published v{s['version']:04d}" if s["version"] else "; no new version"
    adopted = f"; kept {report.adopted} paid image(s) of an earlier run" if report.adopted else ""
    pulled = f", {s['pulled']} pulled" if s.get("pulled") else ""
    cost = "placeholders (free)" if report.offline else f"{credits_text(s['credits'])} reserved"
    out.write(f"{s['built']} built, {s['resumed']} resumed, {s['cached']} cached{pulled}, {s['failed']} failed, "
              f"{s['skipped']} skipped, {s['removed']} removed; {cost}{version}{adopted}\n")
    if where is not None:
        out.write(f"done in {_duration(report.elapsed)}; assets in {_shown(where / 'current')}\n")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _shown(path: Path) -> str:
    import os

    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _retry_hint(report: BuildReport) -> str:
    """One line after the failures: what the next build does, and that --retry-failed exists."""
    from starbuild.api.wire import RETRYABLE_FAILURES

    worth = sum(1 for r in report.results if r.outcome.value == "failed" and r.error_code in RETRYABLE_FAILURES)
    hint = ("hint: the next `starbuild build` tries the failed assets again (the rest are kept); "
            "`starbuild build --retry-failed N` also resubmits, within one build, tasks that failed with a "
            "code worth retrying (each resubmission may cost again)")
    return hint + (f"; {worth} of these failed with such a code" if worth else "")


def _summary_table(report: BuildReport, out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="build summary", show_edge=False)
    for col in ("asset", "result", "credits", "detail"):
        table.add_column(col, justify="right" if col == "credits" else "left")
    shown = [r for r in report.results if r.outcome.value not in ("cached",)]
    for r in shown[:50]:
        detail = printable(r.error or (r.reason if r.outcome.value != "built" else ""))
        table.add_row(r.name, r.outcome.value, f"{r.credits:g}" if r.credits else "", detail or "")
    if len(shown) > 50:
        table.add_row(f"... {len(shown) - 50} more", "", "", "")
    if shown:
        Console(file=out, highlight=False).print(table)
