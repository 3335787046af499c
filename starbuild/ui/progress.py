"""Build progress: a live rich display on a terminal, plain lines otherwise, and the summary table."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO

from starbuild.engine.outcome import BuildReport
from starbuild.text import printable
from starbuild.ui.words import credits_text

_LINE_EVENTS = {"submitted", "resume", "retry", "built", "cached", "pulled", "waiting", "resumed", "failed", "skipped"}


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
        detail = ""
        if kind == "submitted" and self.offline:
            detail = " (placeholder, free)"
        elif kind == "submitted" and info.get("credits") is not None:
            detail = f" ({credits_text(info['credits'])} reserved)"
        elif kind == "resume":
            detail = f" (task {info.get('task_id')})"
        elif kind == "waiting":
            detail = f" (for {info.get('holder')}'s image, up to {info.get('seconds', 0):g} s)"
        elif kind == "pulled":
            detail = " (from the remote cache)"
        self.out.write(printable(f"{kind:<9} {name}{detail}") + "\n")  # task ids and errors come from a server
        self.out.flush()


class LiveProgress:
    """A live display: counts per state, credits reserved, elapsed time and an ETA."""

    def __init__(self, out: TextIO | None = None):
        from rich.console import Console

        self.console = Console(file=out or sys.stderr)
        self.total = 0
        self.counts: Counter[str] = Counter()
        self.credits = 0.0
        self.start = time.monotonic()
        self.live = None
        self.offline = False

    def __enter__(self) -> "LiveProgress":
        from rich.live import Live

        self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=True)
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def __call__(self, kind: str, name: str, info: dict) -> None:
        if kind == "plan":
            self.total = info.get("total", 0)
            self.offline = bool(info.get("offline"))
        self.counts[kind] += 1
        if kind == "submitted" and info.get("credits"):
            self.credits += info["credits"]
        if self.live is not None:
            self.live.update(self._render())

    def _render(self):
        from rich.text import Text

        finished = sum(self.counts[k] for k in ("built", "cached", "pulled", "resumed", "failed", "skipped"))
        elapsed = time.monotonic() - self.start
        eta = (elapsed / finished * (self.total - finished)) if finished else None
        parts = [f"{finished}/{self.total} done", f"{self.counts['submitted']} submitted",
                 f"{self.counts['built']} built", f"{self.counts['resumed']} resumed",
                 *([f"{self.counts['pulled']} pulled"] if self.counts["pulled"] else []),
                 *([f"{self.counts['waiting']} waiting"] if self.counts["waiting"] else []),
                 f"{self.counts['failed']} failed",
                 "placeholders (free)" if self.offline else f"{credits_text(self.credits)} reserved",
                 f"{elapsed:.0f}s elapsed"]
        if eta is not None:
            parts.append(f"ETA {eta:.0f}s")
        return Text(" · ".join(parts))


def render_summary(report: BuildReport, out: TextIO | None = None) -> None:
    """The end-of-build summary: a table on a terminal; failures with reasons and one line of counts."""
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
    cost = "placeholders (free)" if report.offline else f"{credits_text(s['credits'])} reserved"
    pulled = f"{s['pulled']} pulled, " if s["pulled"] else ""
    out.write(f"{s['built']} built, {s['resumed']} resumed, {s['cached']} cached, {pulled}{s['failed']} failed, "
              f"{s['skipped']} skipped, {s['removed']} removed; {cost}{version}{adopted}\n")


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
