"""Totals of the credits ledger: what ``starbuild spend`` prints.

Credits reserved are what the API said it reserved for accepted submissions. Unknown outcomes
(answers lost, runs stopped mid-request) may have been billed too, so the reserved total is a
floor: the report always shows how many there were and the most they may add.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from starbuild.errors import UsageError

GROUP_KEYS = ("asset", "model", "day", "branch")
_DURATION = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")
_UNIT = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30d``, ``12h``, ``2w`` back from now, or an ISO date or time (UTC unless it says otherwise)."""
    now = now or datetime.now(timezone.utc)
    m = _DURATION.match(text)
    if m:
        try:
            return now - int(m.group(1)) * _UNIT[m.group(2)]
        except OverflowError:
            raise UsageError(f"--since {text!r}: too far back") from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: use a duration such as 30d, 12h or 2w, or an ISO date such "
                         "as 2026-11-01") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def event_time(event: dict[str, Any]) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(event.get("time")))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@dataclass
class Totals:
    """The totals of a set of events."""

    images: int = 0
    credits_reserved: float = 0.0
    cache_hits: int = 0
    credits_saved: float = 0.0
    unknown: int = 0
    credits_unknown: float = 0.0  # the estimates of the unknown outcomes: the most they may add
    failed: int = 0

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "settle" and event.get("outcome") == "accepted":
            self.images += _int(event.get("n"), 1)
            reserved = event.get("credits_reserved")
            self.credits_reserved += _num(reserved if reserved is not None else event.get("credits_estimated"))
        elif kind in ("unknown", "reserve"):  # a reserve left open by a killed run is unknown too
            self.unknown += 1
            self.credits_unknown += _num(event.get("credits_estimated"))
        elif kind == "failed":
            self.failed += 1
        elif kind == "cache_hit":
            self.cache_hits += 1
            self.credits_saved += _num(event.get("credits_saved"))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("credits_reserved", "credits_saved", "credits_unknown"):
            out[key] = round(out[key], 4)
        return out


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def counted(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events that totals count: every event but the reserves that a later line settled."""
    events = list(events)
    closed = {e.get("attempt") for e in events if e.get("event") in ("settle", "unknown") and e.get("attempt")}
    return [e for e in events if not (e.get("event") == "reserve" and e.get("attempt") in closed)]


def group_key(event: dict[str, Any], by: str) -> str:
    if by == "day":
        return str(event.get("time") or "")[:10] or "(unknown)"
    value = event.get(by)
    return str(value) if value not in (None, "") else "(none)"


def summarize(events: Iterable[dict[str, Any]], since: datetime | None = None, by: str | None = None) -> dict:
    """``{"images", "credits_reserved", "cache_hits", "credits_saved", "unknown", ..., "groups"}``."""
    if by is not None and by not in GROUP_KEYS:
        raise UsageError(f"--by {by!r}: use one of {', '.join(GROUP_KEYS)}")
    chosen = [e for e in counted(events) if since is None or ((t := event_time(e)) is not None and t >= since)]
    total = Totals()
    groups: dict[str, Totals] = {}
    for event in chosen:
        total.add(event)
        if by is not None:
            groups.setdefault(group_key(event, by), Totals()).add(event)
    return {**total.to_json(), "since": since.isoformat().replace("+00:00", "Z") if since else None, "by": by,
            "groups": [{"key": key, **groups[key].to_json()} for key in sorted(groups)]}


def render_text(summary: dict[str, Any]) -> str:
    """The totals in words, then one row per group."""
    since = f" since {summary['since']}" if summary.get("since") else ""
    lines = [f"spend{since}: {summary['images']} images, {summary['credits_reserved']:g} credits reserved",
             f"cache hits: {summary['cache_hits']} (saved {summary['credits_saved']:g} credits)",
             f"unknown outcomes: {summary['unknown']}" + (
                 f" (may add up to {summary['credits_unknown']:g} credits: credits reserved is a floor)"
                 if summary["unknown"] else "")]
    if summary.get("failed"):
        lines.append(f"failed tasks: {summary['failed']} (their credits are in the reserved total)")
    if summary.get("by"):
        lines.append("")
        lines.extend(_table(summary["by"], summary["groups"]))
    return "\n".join(lines) + "\n"


def _table(by: str, groups: list[dict[str, Any]]) -> list[str]:
    head = (by, "images", "credits", "cache hits", "saved", "unknown")
    rows = [(g["key"], str(g["images"]), f"{g['credits_reserved']:g}", str(g["cache_hits"]),
             f"{g['credits_saved']:g}", str(g["unknown"])) for g in groups]
    if not rows:
        return [f"(no events to group by {by})"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(row: tuple[str, ...]) -> str:  # the key on the left, numbers on the right
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return [line(head), *(line(r) for r in rows)]
