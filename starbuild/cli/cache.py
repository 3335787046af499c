"""`starbuild cache push|pull|status`: the shared remote cache from the command line (SPEC.md §7)."""

from __future__ import annotations

import sys

import click

from starbuild.cli.main import Context, GlobalCommand, pass_ctx, run_safely


@click.group("cache", cls=click.Group)
def cache_group() -> None:
    """The shared remote cache: push, pull, status."""


cache_group.command_class = GlobalCommand


@cache_group.command("status")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@pass_ctx
@run_safely
def status_command(ctx: Context, names: tuple[str, ...], as_json: bool) -> None:
    """What the next build would pull, wait for, or pay for."""
    from starbuild.cli.report import dump_json
    from starbuild.engine.build import plan_project
    from starbuild.engine.remote_ops import remote_status

    project = ctx.load()
    plan = plan_project(project, select=names, specs=ctx.specs, remote=False)
    data = remote_status(project, plan, None)
    if as_json:
        dump_json(data)
        return
    for row in data["assets"]:
        credits = f"  {row['credits']:g} credits" if row["action"] == "pay" else ""
        click.echo(f"{row['action']:<5} {row['name']}  ({row['detail']}){credits}")
    s = data["summary"]
    click.echo(f"{s['local']} up to date here; {s['pull']} to pull, {s['wait']} to wait for, {s['pay']} to pay for "
               f"(about {s['credits']:g} credits)")


@cache_group.command("pull")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report on stdout.")
@pass_ctx
@run_safely
def pull_command(ctx: Context, names: tuple[str, ...], as_json: bool) -> None:
    """Restore the lockfile's images from the remote cache, without paying."""
    from starbuild.cli.report import dump_json
    from starbuild.engine.build import BuildOptions, build
    from starbuild.ui.progress import render_summary

    options = BuildOptions(select=names, specs=None, pull_only=True, require_remote=True)
    report = build(ctx.load(), options)
    dump_json(report.to_json()) if as_json else render_summary(report)
    sys.exit(int(report.exit_code))


@cache_group.command("push")
@click.argument("names", nargs=-1)
@pass_ctx
@run_safely
def push_command(ctx: Context, names: tuple[str, ...]) -> None:
    """Upload the images this machine holds (never placeholders)."""
    from starbuild.engine.remote_ops import push_local

    c = push_local(ctx.load(), names, None)
    click.echo(f"pushed {c['new']} results ({c['uploads']} images uploaded); {c['same']} already there"
               + (f"; {c['alt']} kept as alternatives (another image existed)" if c["alt"] else "")
               + (f"; {c['missing']} not on this machine" if c["missing"] else "")
               + (f"; {c['skipped']} not pushed (remote errors)" if c["skipped"] else ""))
    if c["skipped"]:
        sys.exit(1)
