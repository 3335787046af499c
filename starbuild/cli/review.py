"""The review commands: pick, reroll, accept, promote (SPEC.md §9). A shell over starbuild.review."""

from __future__ import annotations

import click

from starbuild.cli.main import Context, GlobalCommand, _setup_logging, finish_build, pass_ctx, run_safely


@click.command(cls=GlobalCommand)
@click.argument("name")
@click.argument("take", type=click.IntRange(0))
@pass_ctx
@run_safely
def pick(ctx: Context, name: str, take: int) -> None:
    """Publish take TAKE of asset NAME and record the pick in starbuild.lock (no API call)."""
    from starbuild.review.decisions import pick as do_pick

    record = do_pick(ctx.load(), name, take)
    if not ctx.quiet:
        click.echo(f"picked take {take} of {name} ({record['sha256'][:12]}), by {record['by']} at {record['at']}")


def _build_flags(fn):
    for option in reversed([
        click.option("--offline", is_flag=True, help="Use the built-in emulator: placeholder images, no key needed."),
        click.option("--max-credits", type=float, help="Refuse when the estimate is higher."),
        click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report on stdout."),
        click.option("--wait", is_flag=True, help="Wait for another running build instead of exiting with 3."),
    ]):
        fn = option(fn)
    return fn


def _options(ctx: Context, offline: bool, max_credits, wait: bool):
    from starbuild.engine.build import BuildOptions

    _setup_logging(ctx)
    return BuildOptions(offline=offline, max_credits=max_credits, wait=wait)


_TIER = click.option("--tier", metavar="NAME", help="The tier the asset is reviewed at (as built with --tier).")


@click.command(cls=GlobalCommand)
@click.argument("names", nargs=-1, required=True, metavar="NAME_OR_GLOB...")
@_build_flags
@_TIER
@pass_ctx
@run_safely
def reroll(ctx: Context, names, offline, max_credits, as_json, wait, tier) -> None:
    """Make one more candidate of each named asset (one matrix cell alone if named), without editing YAML.

    The new candidate is published and picked, unless the asset has takes (then `starbuild pick`).
    """
    from starbuild.review.decisions import reroll as do_reroll

    project = ctx.load(tier)
    options = _options(ctx, offline, max_credits, wait)
    options.specs, options.tier = ctx.specs, tier
    finish_build(ctx, project, as_json, lambda emit: do_reroll(project, list(names), options, emit=emit))


@click.command(cls=GlobalCommand)
@click.argument("names", nargs=-1, required=True, metavar="NAME_OR_GLOB...")
@click.option("--force", is_flag=True, help="Also accept a change of model, size, resolution, n, inputs or mask.")
@_TIER
@pass_ctx
@run_safely
def accept(ctx: Context, names, force: bool, tier) -> None:
    """Keep the current image of each named asset for its changed spec (a typo fix); no API call."""
    from starbuild.review.decisions import accept as do_accept

    project = ctx.load(tier)
    done = do_accept(project, list(names), force=force, specs=ctx.specs)
    for a in done:
        click.echo(f"accepted {a.name}:")
        for fld, (old, new) in a.changes.items():
            click.echo(f"  {fld}: {_short(old)} → {_short(new)}")
    if not done:
        click.echo("nothing to accept: the named assets are up to date")


def _short(value) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 100 else text[:97] + "..."


@click.command(cls=GlobalCommand)
@click.argument("names", nargs=-1, required=True, metavar="NAME_OR_GLOB...")
@click.option("--to", "to", metavar="TIER", help="The tier to promote to (default: final).")
@click.option("--reroll", "fresh", is_flag=True, help="A fresh sample at the tier instead of an edit of the draft.")
@_build_flags
@pass_ctx
@run_safely
def promote(ctx: Context, names, to, fresh, offline, max_credits, as_json, wait) -> None:
    """Rebuild the picked image of each named asset at a higher tier, by default as an edit of the draft."""
    from starbuild.review.decisions import promote as do_promote

    project = ctx.load()
    options = _options(ctx, offline, max_credits, wait)
    finish_build(ctx, project, as_json, lambda emit: do_promote(project, list(names), to=to, fresh=fresh,
                                                                options=options, emit=emit))
