"""What the cache already holds for a spec, so that a plan prices what a build would really pay.

A spec whose image is stored (an edit reverted, an asset renamed) is taken from the store for 0
credits, and a spec with a journaled task resumes it without paying again: the planner says so
instead of estimating a new payment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from starbuild.engine.journal import STORED, SUBMITTED, Journal
from starbuild.store.objects import ObjectStore

Lookup = Callable[[str], "str | None"]


def journal_lookup(journal: Journal, store: ObjectStore) -> Lookup:
    """spec_hash -> "stored" (image in the store), "submitted" (a paid task to resume) or None."""
    stored = store.listing()

    def lookup(spec_hash: str) -> str | None:
        rec = journal.get(spec_hash)
        if rec is None:
            return None
        if rec.get("state") == SUBMITTED and rec.get("task_id"):
            return "submitted"
        files = rec.get("files") or []
        if rec.get("state") == STORED and files and all(f.get("sha256") in stored for f in files):
            return "stored"
        return None

    return lookup


@contextmanager
def cached_specs(cache: Path, store: ObjectStore) -> Iterator[Lookup | None]:
    """A lookup over the cache's journal for the time of a plan; None when there is no journal yet."""
    if not (cache / "journal").is_dir():  # nothing built here yet: create nothing while planning
        yield None
        return
    journal = Journal(cache / "journal")
    try:
        yield journal_lookup(journal, store)
    finally:
        journal.close()


def kept_after_interrupt(cache: Path, since: float) -> dict[str, int]:
    """What an interrupted build left for the next one: images stored and tasks journaled."""
    from starbuild.engine.journal import SUBMITTING

    counts = {"stored": 0, "submitted": 0, "unknown": 0}
    if not (cache / "journal").is_dir():
        return counts
    journal = Journal(cache / "journal")
    try:
        for _, rec in journal.inflight():
            counts["unknown" if rec.get("state") == SUBMITTING else "submitted"] += 1
        counts["stored"] = sum(1 for _, rec in journal.stored_items() if (rec.get("since") or 0) >= since)
    finally:
        journal.close()
    return counts


def interrupt_note(counts: dict[str, int]) -> list[str]:
    """What to tell the user after Ctrl-C: what was kept, and how to resume without paying twice."""
    lines = [f"interrupted: no new version was published; kept: {counts['stored']} image(s) downloaded into "
             f"the cache, {counts['submitted']} submitted task(s) journaled"]
    lines.append("resume with `starbuild build`: it takes the downloaded images from the cache and polls the "
                 "journaled tasks instead of paying for them again")
    if counts["unknown"]:
        lines.append(f"{counts['unknown']} submission(s) were cut off mid-request and may have been billed; the "
                     "next build reports them, and `starbuild build --retry-unknown` submits them again")
    return lines
