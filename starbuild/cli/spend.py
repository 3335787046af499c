"""``starbuild spend`` and the formats of ``starbuild plan``: shells over starbuild.spend."""

from __future__ import annotations

import os
from pathlib import Path

import click

from starbuild.cli.main import Context, GlobalCommand, pass_ctx, run_safely


def ledger_file(ctx: Context) -> Path:
    """The project's ledger; read without loading the config, so a broken config still shows spend."""
    from starbuild.spend.ledger import LEDGER_NAME

    override = os.environ.get("STARBUILD_CACHE_DIR")
    cache = Path(override).resolve() if override else ctx.config_path.resolve().parent / ".starbuild"
    return cache / LEDGER_NAME


@click.command("spend", cls=GlobalCommand)
@click.option("--since", metavar="WHEN", help="Only events since: 30d, 12h, 2w, or an ISO date such as 2026-11-01.")
@click.option("--by", type=click.Choice(["asset", "model", "day", "branch"]), help="Totals per asset, model, day "
              "or branch.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@pass_ctx
@run_safely
def spend_command(ctx: Context, since: str | None, by: str | None, as_json: bool) -> None:
    """Credits reserved, images, cache hits and unknown outcomes, from the credits ledger."""
    from starbuild.cli.report import dump_json
    from starbuild.spend.ledger import read_events
    from starbuild.spend.report import parse_since, render_text, summarize

    start = parse_since(since) if since is not None else None
    path = ledger_file(ctx)
    summary = summarize(read_events(path), since=start, by=by)
    if as_json:
        dump_json(summary)
        return
    if not path.is_file() and not ctx.quiet:
        click.echo(f"no paid builds recorded yet ({path})", err=True)
    click.echo(render_text(summary), nl=False)


def show_plan(ctx: Context, project, the_plan, fmt: str, offline: bool) -> None:
    """Print a plan as text, JSON or a pull-request comment; refuse (exit 3) one over cost.max_credits_per_pr."""
    from starbuild.cli.report import dump_json, render_plan
    from starbuild.errors import BudgetError
    from starbuild.spend.markdown import render_markdown
    from starbuild.spend.review import review_plan

    review = review_plan(project, the_plan)
    if fmt == "markdown":
        click.echo(render_markdown(review), nl=False)
    elif fmt == "json":
        dump_json(the_plan.to_json())
    else:
        render_plan(the_plan)
    if review.over_budget and not offline:  # placeholders cost nothing
        raise BudgetError(review.budget_message())
