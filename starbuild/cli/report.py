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


def render_plan(plan, out: TextIO | None = None) -> None:
    """The plan as a table on a terminal, one line per asset otherwise, then the summary."""
    out = out or sys.stdout
    data = plan.to_json()
    summary = data["summary"]
    tail = (f"{summary['new']} new, {summary['changed']} changed, {summary['unchanged']} unchanged, "
            f"{summary['removed']} removed; estimated {summary['credits']:g} credits")
    big = len(data["assets"]) > 10_000
    if out.isatty() and not big:
        from rich.table import Table

        table = Table(show_edge=False, pad_edge=False)
        for col in ("asset", "status", "why", "model", "credits"):
            table.add_column(col, justify="right" if col == "credits" else "left")
        for a in data["assets"]:
            style = _STATUS_STYLE.get(a["status"], "")
            credits = f"{a['credits']:g}" if a["status"] in ("new", "changed") else ""
            table.add_row(a["name"], f"[{style}]{a['status']}[/]", a["reason"], a["model"] or "", credits)
        con = _console(out)
        con.print(table)
        con.print(tail)
        return
    if big:
        out.write(f"{len(data['assets'])} assets (too many to list; use --json)\n")
    else:
        for a in data["assets"]:
            credits = f"  {a['credits']:g} credits" if a["status"] in ("new", "changed") else ""
            out.write(f"{a['status']:<9}  {a['name']}  ({a['reason']}){credits}\n")
    out.write(tail + "\n")
