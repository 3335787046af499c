"""The plan as a pull-request comment (``starbuild plan --format markdown``).

The first line is a hidden marker naming the project, the same on every run, so a CI job can
find its earlier comment and update it in place. Nothing in the comment depends on the time, the
machine or the folder a checkout sits in.
"""

from __future__ import annotations

from starbuild.plan.planner import PlannedAsset, Status
from starbuild.spend.review import Review

MARKER = "<!-- starbuild-plan: {} -->"
MAX_REASON_ROWS = 200  # GitHub caps a comment at 65,536 characters
COLUMNS = ("new", "changed", "removed", "from cache", "credits")


def marker(review: Review) -> str:
    return MARKER.format(_escape(review.project_id).replace("--", "-\u2060-"))


def render_markdown(review: Review) -> str:
    """The whole comment: marker, headline, a row per image group, reasons, budget."""
    groups = review.groups()
    lines = [marker(review), f"### {_headline(review)}", ""]
    if groups:
        lines += _group_table(review, groups) + [""] + _reasons(review, groups) + [""]
    lines += [_budget_line(review), "", _footer(review)]
    return "\n".join(lines) + "\n"


def _headline(review: Review) -> str:
    counts = _counts(review, [a for assets in review.groups().values() for a in assets])
    if not any(counts[c] for c in COLUMNS[:4]):
        return "starbuild: no image changes, 0 credits"
    images = review.images
    head = f"starbuild: {images} image{'s' if images != 1 else ''} to generate, about {_num(review.credits)} credits"
    extra = [f"{counts[c]} {c}" for c in ("from cache", "removed") if counts[c]]
    return head + (f" ({', '.join(extra)})" if extra else "")


def _counts(review: Review, assets: list[PlannedAsset]) -> dict[str, float]:
    out: dict[str, float] = {c: 0 for c in COLUMNS}
    for a in assets:
        if a.name in review.cached:
            out["from cache"] += 1
        else:
            out[a.status.value] += 1
            if a.stale:
                out["credits"] += a.credits
    return out


def _group_table(review: Review, groups: dict[str, list[PlannedAsset]]) -> list[str]:
    lines = ["| image group | new | changed | removed | from cache | credits |",
             "| :-- | --: | --: | --: | --: | --: |"]
    total: dict[str, float] = {c: 0 for c in COLUMNS}
    for key in sorted(groups):
        counts = _counts(review, groups[key])
        for c in COLUMNS:
            total[c] += counts[c]
        lines.append(f"| {_code(key)} | " + " | ".join(_num(counts[c]) for c in COLUMNS) + " |")
    if len(groups) > 1:
        lines.append("| **total** | " + " | ".join(f"**{_num(total[c])}**" for c in COLUMNS) + " |")
    return lines


def _reasons(review: Review, groups: dict[str, list[PlannedAsset]]) -> list[str]:
    assets = [a for key in sorted(groups) for a in groups[key]]
    lines = [f"<details><summary>Why ({len(assets)} asset{'s' if len(assets) != 1 else ''})</summary>", "",
             "| asset | status | why | credits |", "| :-- | :-- | :-- | --: |"]
    for a in assets[:MAX_REASON_ROWS]:
        lines.append(f"| {_code(a.name)} | {_status(review, a)} | {_escape(a.reason)} | "
                     f"{_num(_credits(review, a))} |")
    if len(assets) > MAX_REASON_ROWS:
        lines.append(f"| … and {len(assets) - MAX_REASON_ROWS} more | | | |")
    return lines + ["", "</details>"]


def _status(review: Review, a: PlannedAsset) -> str:
    return f"{a.status.value}, from cache" if a.name in review.cached else a.status.value


def _credits(review: Review, a: PlannedAsset) -> float:
    return a.credits if a.stale and a.name not in review.cached else 0.0


def _budget_line(review: Review) -> str:
    if review.limit is None:
        return "**Budget:** no `cost.max_credits_per_pr` is set."
    if review.over_budget:
        return (f"**Budget:** ❌ about {_num(review.credits)} credits is over `cost.max_credits_per_pr` "
                f"({_num(review.limit)}): the plan is refused.")
    return f"**Budget:** ✅ about {_num(review.credits)} of {_num(review.limit)} credits (`cost.max_credits_per_pr`)."


def _footer(review: Review) -> str:
    unchanged = sum(1 for a in review.plan.assets if a.status == Status.UNCHANGED)
    listed = f"{unchanged} unchanged asset{'s' if unchanged != 1 else ''} not listed. " if unchanged else ""
    return (f"<sub>{listed}Credits are estimates from starbuild's price table, or what the API reserved "
            "for the same kind of image in starbuild.lock.</sub>")


def _num(value: float) -> str:
    return f"{round(value, 4):g}"


def _escape(text: str) -> str:
    """Text safe in a table cell: no column breaks, no HTML, one line."""
    text = " ".join(str(text).split())
    for old, new in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(old, new)
    return text


def _code(text: str) -> str:
    if "`" in text:
        return _escape(text)
    return "`" + " ".join(text.split()).replace("|", "\\|") + "`"
