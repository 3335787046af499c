"""The command line: parse options, call the library, render, choose the exit code.

This is the only module that exits the process or maps errors to exit codes. Heavy modules are
imported inside the commands so that ``starbuild --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from starbuild import __version__
from starbuild.errors import ExitCode, StarbuildError


class Context:
    """Global options shared by every command."""

    def __init__(self, directory: str | None, file: str | None, verbose: int, quiet: bool):
        self.directory = Path(directory) if directory else None
        self.file = Path(file) if file else None
        self.verbose = verbose
        self.quiet = quiet

    @property
    def config_path(self) -> Path:
        from starbuild.config import find_config

        return find_config(self.directory, self.file)

    def load(self):
        from starbuild.config import load_config

        return load_config(self.config_path)


def fail(exc: StarbuildError) -> None:
    """Print a located error (every issue for a config error) and exit with its code."""
    for line in str(exc).splitlines() or [type(exc).__name__]:
        click.echo(f"error: {line}", err=True)
    sys.exit(int(exc.exit_code))


def run_safely(fn):
    """Decorator: StarbuildError becomes its message and exit code; never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StarbuildError as exc:
            fail(exc)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "directory", metavar="DIR", help="Run as if started in DIR.")
@click.option("-f", "file", metavar="FILE", help="Use FILE as the config (default: starbuild.yaml).")
@click.option("-v", "--verbose", count=True, help="More detail, including each HTTP request (never its key).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the final summary.")
@click.version_option(__version__, prog_name="starbuild")
@click.pass_context
def main(ctx: click.Context, directory: str | None, file: str | None, verbose: int, quiet: bool) -> None:
    """Build AI image assets declared in starbuild.yaml with the StarMagic image API."""
    if directory and not Path(directory).is_dir():
        raise click.UsageError(f"-C {directory}: no such directory")
    ctx.obj = Context(directory, file, verbose, quiet)


pass_ctx = click.make_pass_decorator(Context)


@main.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@pass_ctx
@run_safely
def init(ctx: Context, directory: str | None) -> None:
    """Write a commented starter starbuild.yaml and .gitignore lines."""
    from importlib.resources import files

    from starbuild.errors import UsageError

    target = Path(directory) if directory else (ctx.directory or Path("."))
    target.mkdir(parents=True, exist_ok=True)
    config = target / "starbuild.yaml"
    if config.exists():
        raise UsageError(f"{config} already exists; remove it or choose another folder")
    config.write_text(files("starbuild").joinpath("templates/starbuild.yaml").read_text())
    gitignore = target / ".gitignore"
    existing = gitignore.read_text() if gitignore.exists() else ""
    if ".starbuild/" not in existing.split():
        with gitignore.open("a") as fh:
            fh.write(("\n" if existing and not existing.endswith("\n") else "") + "# starbuild cache\n.starbuild/\n")
    click.echo(f"wrote {config} and .gitignore; next: starbuild plan, then starbuild build --offline")


@main.command()
@pass_ctx
@run_safely
def validate(ctx: Context) -> None:
    """Check the config and every template, file and model rule; no network."""
    from starbuild.resolve import resolve_specs
    from starbuild.planner import order_by_dependencies

    project = ctx.load()
    specs = order_by_dependencies(project, resolve_specs(project))
    if not ctx.quiet:
        click.echo(f"{project.display}: ok ({len(specs)} assets)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--offline", is_flag=True, help="Plan as an --offline build would (placeholders).")
@pass_ctx
@run_safely
def plan(ctx: Context, as_json: bool, offline: bool) -> None:
    """List every asset as new / changed / unchanged / removed, why, and the estimated credits."""
    from starbuild.build import plan_project
    from starbuild.report import dump_json, render_plan

    the_plan = plan_project(ctx.load(), placeholder=offline)
    if as_json:
        dump_json(the_plan.to_json())
    else:
        render_plan(the_plan)


@main.command()
def schema() -> None:
    """Print the JSON Schema of starbuild.yaml."""
    from starbuild.schema import schema_text

    click.echo(schema_text(), nl=False)


def _register_late_commands() -> None:
    from starbuild.emulator.command import emulator_command

    main.add_command(emulator_command, "emulator")


try:  # the emulator command is optional while its module is being built
    _register_late_commands()
except ImportError:  # pragma: no cover
    pass
