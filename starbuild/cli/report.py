"""Rendering of plans and build reports: rich tables on a terminal, plain lines otherwise, JSON."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


def dump_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _console(out: TextIO | None = None):
    from rich.console import Console

    return Console(file=out or sys.stdout, highlight=False, soft_wrap=False)


_STATUS_STYLE = {"new": "green", "changed": "yellow", "unchanged": "dim", "removed": "red",
                 "built": "green", "cached": "dim", "pulled": "cyan", "resumed": "cyan", "failed": "bold red",
                 "skipped": "dim"}


def _plan_order(a: dict) -> int:
    """Real changes first, then removals, then placeholders to replace, then what is up to date."""
    if a["status"] in ("new", "changed") and not a.get("replaces_placeholder"):
        return 0
    return {"removed": 1, "changed": 2}.get(a["status"], 3)


def _plan_tail(summary: dict, offline: bool) -> str:
    from starbuild.ui.words import credits_text

    held = f" ({summary['placeholders']} to replace placeholders)" if summary.get("placeholders") else ""
    parts = [f"{summary['new']} new", f"{summary['changed']} changed{held}", f"{summary['unchanged']} unchanged",
             f"{summary['removed']} removed"]
    if summary.get("from_cache"):
        parts.append(f"{summary['from_cache']} from the cache")
    cost = "placeholders (free)" if offline else f"estimated {credits_text(summary['credits'])}"
    return ", ".join(parts) + "; " + cost


def render_plan(plan, out: TextIO | None = None) -> None:
    """The plan as tables on a terminal, one line per asset otherwise, then the summary.

    Real changes come first; assets changed only to replace an offline placeholder form their own
    group after them, so that one real edit is not buried under a project of placeholders.
    """
    from starbuild.ui.words import credits_text

    out = out or sys.stdout
    data = plan.to_json()
    assets = sorted(data["assets"], key=_plan_order)  # stable: config order within each group
    groups = [("", [a for a in assets if _plan_order(a) < 2]),
              ("placeholders to replace with real images", [a for a in assets if _plan_order(a) == 2]),
              ("", [a for a in assets if _plan_order(a) == 3])]

    def cost(a: dict) -> str:
        if a["status"] not in ("new", "changed"):
            return ""
        return "free" if plan.placeholder else credits_text(a["credits"])

    tail = _plan_tail(data["summary"], plan.placeholder)
    if plan.post:  # processing changes apart: they cost no credits
        tail += "\n" + plan.post.line()
    if len(assets) > 10_000:
        out.write(f"{len(assets)} assets (too many to list; use --json)\n{tail}\n")
    elif out.isatty():
        _plan_tables(groups, cost, tail, out)
    else:
        for title, rows in groups:
            if title and rows:
                out.write(f"{title} ({len(rows)}):\n")
            for a in rows:
                out.write(f"{'  ' if title else ''}{a['status']:<9}  {a['name']}  ({a['reason']})"
                          + (f"  {cost(a)}" if cost(a) else "") + "\n")
        out.write(tail + "\n")


def _plan_tables(groups, cost, tail: str, out: TextIO) -> None:
    from rich.table import Table

    con = _console(out)
    for title, rows in groups:
        if not rows:
            continue
        table = Table(show_edge=False, pad_edge=False, title=f"{title} ({len(rows)})" if title else None)
        for col in ("asset", "status", "why", "model", "credits"):
            table.add_column(col, justify="right" if col == "credits" else "left")
        for a in rows:
            style = _STATUS_STYLE.get(a["status"], "")
            table.add_row(a["name"], f"[{style}]{a['status']}[/]", a["reason"], a["model"] or "", cost(a))
        con.print(table)
    con.print(tail)

def render_contract(report, out: TextIO | None = None) -> None:
    """``check-api``: one row per check (pass / fail / skipped, and why), then the totals."""
    out = out or sys.stdout
    width = max([len(r.name) for r in report.results] + [5])
    out.write(f"{'check':<{width}}  {'result':<7}  {'billed':>6}  detail\n")
    for r in report.results:
        out.write(f"{r.name:<{width}}  {r.status:<7}  {r.billed or '':>6}  {r.detail}".rstrip() + "\n")
    out.write(f"{report.count('pass')} passed, {report.count('fail')} failed, {report.count('skipped')} skipped; "
              f"{report.billed} billable task(s) submitted of {report.allowance} allowed\n")
