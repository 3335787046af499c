"""The command line: parse options, call the library, render, choose the exit code.

This is the only module that exits the process or maps errors to exit codes. Heavy modules are
imported inside the commands so that ``starbuild --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from starbuild import __version__

# Set by cli/fastpath.py while it records a command for the plan cache; plan and build say here
# whether their answer may be replayed.
PLAN_CACHE_HOOK: dict | None = None


class Context:
    """Global options shared by every command."""

    def __init__(self, directory: str | None, file: str | None, verbose: int, quiet: bool):
        self.directory = Path(directory) if directory else None
        self.file = Path(file) if file else None
        self.verbose = verbose
        self.quiet = quiet
        self.specs = None  # resolved by load(), reused by the plan

    @property
    def config_path(self) -> Path:
        from starbuild.config.project import find_config

        return find_config(self.directory, self.file)

    def load(self, tier: str | None = None):
        """The project, with every config problem (schema and resolution) reported at once."""
        from starbuild.config.resolve import load_and_resolve
        from starbuild.plan.nogc import paused_gc

        with paused_gc():
            project, self.specs = load_and_resolve(self.config_path, tier)
        show_warnings(project)
        return project


def show_warnings(project) -> None:
    """The config's located warnings on stderr (an exclude that matches nothing, ...)."""
    for issue in project.warnings:
        click.echo(f"warning: {issue}", err=True)


def fail(exc) -> None:
    """Print a located error (every issue for a config error) and exit with its code."""
    for line in str(exc).splitlines() or [type(exc).__name__]:
        click.echo(f"error: {line}", err=True)
    sys.exit(int(exc.exit_code))


def run_safely(fn):
    """Decorator: StarbuildError becomes its message and exit code; never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from starbuild.errors import StarbuildError

        terminated = _sigterm_as_ctrl_c()
        try:
            return fn(*args, **kwargs)
        except StarbuildError as exc:
            fail(exc)
        except KeyboardInterrupt:
            click.echo("terminated (SIGTERM)" if terminated else "interrupted", err=True)
            sys.exit(143 if terminated else 130)

    return wrapper


class _Flag:
    def __init__(self) -> None:
        self.value = False

    def __bool__(self) -> bool:
        return self.value


GRACE_SECONDS = 10.0


def _exit_later(seconds: float) -> None:
    """A build told to stop that is still running after ``seconds`` exits anyway: everything it
    journaled is as safe as after a SIGKILL, and CI will not wait forever."""
    import threading

    def watchdog() -> None:
        time.sleep(seconds)
        sys.stderr.write(f"did not stop within {seconds:g} s of SIGTERM; exiting now\n")
        sys.stderr.flush()
        os._exit(143)

    threading.Thread(target=watchdog, name="sigterm-watchdog", daemon=True).start()


def _sigterm_as_ctrl_c() -> _Flag:
    """SIGTERM (what CI sends on cancel) goes the way of Ctrl-C: tasks in flight stay journaled,
    holds and locks are released, and the next build resumes (engine/interrupt.py). The flag
    tells which one came."""
    import signal
    import threading

    flag = _Flag()
    if threading.current_thread() is not threading.main_thread():
        return flag

    def on_term(signum, frame) -> None:
        if flag.value:
            return
        flag.value = True
        click.echo("stopping (SIGTERM); tasks in flight stay journaled for the next build", err=True)
        _exit_later(GRACE_SECONDS)
        from starbuild.engine.interrupt import stop_running_build

        if not stop_running_build():  # no build running yet (or any more): interrupt right here
            raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):
        pass
    return flag


def _late_global(ctx: click.Context, param: click.Parameter, value):
    """A global flag given after the command name (``starbuild build -C DIR``) counts the same."""
    obj = ctx.find_object(Context)
    if obj is None or value in (None, 0, False):
        return value
    name = param.name.removeprefix("late_")
    if name == "directory":
        _check_directory(value)
        obj.directory = Path(value)
    elif name == "file":
        obj.file = Path(value)
    elif name == "verbose":
        obj.verbose += value
    elif name == "quiet":
        obj.quiet = True
    return value


def _global_options(late: bool = False) -> list[click.Option]:
    """The global flags: the group's, or (``late``) a command's copy that updates the group's Context.

    A command's copies are named apart from its own parameters (init takes a DIRECTORY argument).
    """
    name = "late_{}".format if late else "{}".format
    extra = dict(callback=_late_global, expose_value=False) if late else {}
    return [
        click.Option(["-C", name("directory")], metavar="DIR", help="Run as if started in DIR.", **extra),
        click.Option(["-f", name("file")], metavar="FILE", help="Use FILE as the config (default: starbuild.yaml).",
                     **extra),
        click.Option(["-v", "--verbose", name("verbose")], count=True,
                     help="More detail, including each HTTP request (never its key).", **extra),
        click.Option(["-q", "--quiet", name("quiet")], is_flag=True, help="Only errors and the final summary.",
                     **extra),
    ]


class GlobalCommand(click.Command):
    """A command that also takes the global flags after its name, as SPEC.md's examples write them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.extend(_global_options(late=True))


def _check_directory(directory: str) -> None:
    if not Path(directory).is_dir():
        raise click.UsageError(f"-C {directory}: no such directory")


class LazyGroup(click.Group):
    """A group whose rarely used commands are imported only when run (keeps --help fast)."""

    lazy = {"emulator": ("starbuild.emulator.command", "emulator_command",
                         "Serve the StarMagic emulator over HTTP."),
            "pick": ("starbuild.cli.review", "pick", "Publish take TAKE of an asset and record the pick."),
            "reroll": ("starbuild.cli.review", "reroll", "Make one more candidate of the named assets."),
            "accept": ("starbuild.cli.review", "accept", "Keep the current image of a changed asset."),
            "promote": ("starbuild.cli.review", "promote", "Rebuild the picked image at a higher tier."),
            "spend": ("starbuild.cli.spend", "spend_command",
                      "What paid builds cost, from the credits ledger."),
            "check-api": ("starbuild.cli.check_api", "check_api_command",
                          "Check a server against the API's documented behaviour."),
            "cache": ("starbuild.cli.cache", "cache_group", "The shared remote cache: push, pull, status.")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            from importlib import import_module

            module, attr, _ = self.lazy[name]
            return getattr(import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][2]))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(formatter.width - 6 - max(len(n) for n in self.list_commands(ctx)))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, params=_global_options(), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="starbuild")
@click.pass_context
def main(ctx: click.Context, directory: str | None, file: str | None, verbose: int, quiet: bool) -> None:
    """Build AI image assets declared in starbuild.yaml with the StarMagic image API."""
    if directory:
        _check_directory(directory)
    ctx.obj = Context(directory, file, verbose, quiet)


main.command_class = GlobalCommand


def _check_credits(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A budget is a finite number of credits, 0 or more (nan, inf or -1 would disable it)."""
    import math

    if value is not None and (not math.isfinite(value) or value < 0):
        raise click.BadParameter(f"{value} is not a budget; give a finite number of credits, 0 or more")
    return value
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
    from starbuild.plan.planner import order_by_dependencies
    from starbuild.config.resolve import load_and_resolve

    project, specs = load_and_resolve(ctx.config_path)
    show_warnings(project)
    specs = order_by_dependencies(project, specs)
    from starbuild.post.plan import check_outputs

    check_outputs(project, specs)
    if not ctx.quiet:
        click.echo(f"{project.display}: ok ({len(specs)} assets)")


@main.command()
@click.argument("names", nargs=-1, metavar="[NAME_OR_GLOB]...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (= --format json).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]),
              help="text (default), json, or markdown: a pull-request comment with the cost review.")
@click.option("--offline", is_flag=True, help="Plan as an --offline build would (placeholders).")
@click.option("--tier", metavar="NAME", help="Plan every image at this tier (a name under tiers:).")
@pass_ctx
@run_safely
def plan(ctx: Context, names, as_json: bool, fmt: str | None, offline: bool, tier: str | None) -> None:
    """List every asset (or the named ones) as new / changed / unchanged / removed, why, and the credits."""
    from starbuild.engine.build import plan_project
    from starbuild.cli.spend import show_plan

    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json and --format {fmt} disagree; give one of them")
    project = ctx.load(tier)
    the_plan = plan_project(project, placeholder=offline, specs=ctx.specs, select=names)
    _plan_cache_note(project, ctx.specs, True)
    show_plan(ctx, project, the_plan, "json" if as_json else fmt or "text", offline)


@main.command()
@click.argument("names", nargs=-1)
@click.option("--offline", is_flag=True, help="Use the built-in emulator: placeholder images, no key needed.")
@click.option("--dry-run", is_flag=True, help="Only show the plan (same as `starbuild plan`).")
@click.option("--max-credits", type=float, callback=_check_credits,
              help="Refuse a build whose estimate is higher; stop submitting before reserving more.")
@click.option("--concurrency", type=click.IntRange(1, 256), help="Tasks in flight at most.")
@click.option("--frozen", is_flag=True, help="Never call the API; fail (exit 3) if anything is stale.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report on stdout.")
@click.option("--force", multiple=True, metavar="NAME_OR_GLOB", help="Regenerate even if cached.")
@click.option("--keep-going/--fail-fast", default=True, help="Keep building after a failure (default).")
@click.option("--retry-failed", type=click.IntRange(0, 10), default=0, metavar="N",
              help="Submit a failed task again up to N times, for failure codes worth retrying (may cost again).")
@click.option("--retry-unknown", is_flag=True,
              help="Submit again an asset whose earlier submission's outcome is unknown (may cost twice).")
@click.option("--wait", is_flag=True, help="Wait for another running build instead of exiting with 3.")
@click.option("--tier", metavar="NAME", help="Build every image at this tier (a name under tiers:), e.g. draft.")
@click.option("--require-remote", is_flag=True, help="Make remote cache errors fatal instead of skipping the remote.")
@pass_ctx
@run_safely
def build(ctx: Context, names, offline, dry_run, max_credits, concurrency, frozen, as_json, force,
          keep_going, retry_failed, retry_unknown, wait, tier, require_remote) -> None:
    """Build what is new or changed (all, or the named assets and what they depend on)."""
    from starbuild.engine.build import BuildOptions, build as run_build, plan_project
    from starbuild.cli.report import dump_json, render_plan

    _setup_logging(ctx)
    project = ctx.load(tier)
    if dry_run:
        the_plan = plan_project(project, placeholder=offline, force=force, select=names, specs=ctx.specs)
        dump_json(the_plan.to_json()) if as_json else render_plan(the_plan)
        return
    options = BuildOptions(offline=offline, frozen=frozen, force=tuple(force), select=tuple(names),
                           max_credits=max_credits, concurrency=concurrency, retry_failed=retry_failed,
                           retry_unknown=retry_unknown, fail_fast=not keep_going, wait=wait, specs=ctx.specs,
                           tier=tier, require_remote=require_remote)
    finish_build(ctx, project, as_json, lambda emit: run_build(project, options, emit=emit))


def finish_build(ctx: Context, project, as_json: bool, run) -> None:
    """Run a build under the progress display, render its report and exit with its code."""
    started = time.time()
    try:
        with _progress(ctx, as_json) as progress:
            report = run(progress)
    except KeyboardInterrupt:
        _say_interrupted(project, started)
        raise  # run_safely picks the exit code: 130 for Ctrl-C, 143 for SIGTERM
    _plan_cache_note(project, ctx.specs, report.version is None and report.requests == 0 and not report.adopted
                     and all(r.outcome.value == "cached" for r in report.results))
    if as_json:
        from starbuild.cli.report import dump_json

        dump_json(report.to_json())
    else:
        from starbuild.engine.build import asset_dir
        from starbuild.ui.progress import render_summary

        render_summary(report, where=asset_dir(project).root)
    sys.exit(int(report.exit_code))


def _say_interrupted(project, started: float) -> None:
    from starbuild.engine.build import cache_dir
    from starbuild.engine.known import interrupt_note, kept_after_interrupt

    for line in interrupt_note(kept_after_interrupt(cache_dir(project), started)):
        click.echo(line, err=True)


def _plan_cache_note(project, specs, unchanged: bool) -> None:
    """Tell the plan cache whether this answer may be replayed (not when an input lies in the output folder)."""
    if PLAN_CACHE_HOOK is None:
        return
    out = project.config.output.dir
    inside = any(r.kind == "file" and (r.ref == out or r.ref.startswith(out.rstrip("/") + "/"))
                 for s in specs or () for r in s.inputs + ((s.mask,) if s.mask else ()))
    PLAN_CACHE_HOOK.update(output=out, cacheable=unchanged and not inside)


def _progress(ctx: Context, as_json: bool):
    from starbuild.ui.progress import LiveProgress, PlainProgress

    if sys.stderr.isatty() and not ctx.quiet and not as_json:
        return LiveProgress()
    return PlainProgress(quiet=ctx.quiet)


def _setup_logging(ctx: Context) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    # -v shows starbuild's own detail (each HTTP request, without its key or result links), not
    # the debug chatter of the libraries underneath.
    logging.getLogger("starbuild").setLevel(logging.DEBUG if ctx.verbose else logging.WARNING)


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@pass_ctx
@run_safely
def ls_command(ctx: Context, as_json: bool) -> None:
    """The current assets with files, sizes, hashes and provenance."""
    from starbuild.store.inventory import list_assets
    from starbuild.cli.report import dump_json

    data = list_assets(ctx.load())
    if as_json:
        dump_json(data)
        return
    for a in data["assets"]:
        origin = "placeholder" if a["placeholder"] else (a["task_id"] or "")
        for f in a.get("outputs") or a["files"]:  # what the version holds: the delivered files when processed
            click.echo(f"{f['path']}  {f['width']}x{f['height']}  {f['bytes']:>9} B  {f['sha256'][:12]}  "
                       f"{a['model']}  {origin}  {a['created']}")
    click.echo(f"{len(data['assets'])} assets in v{data['asset_version']:04d}" if data["asset_version"]
               else "no assets built yet")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@pass_ctx
@run_safely
def versions(ctx: Context, as_json: bool) -> None:
    """List the asset versions."""
    from starbuild.store.inventory import list_versions

    rows = list_versions(ctx.load())
    if as_json:
        from starbuild.cli.report import dump_json

        dump_json({"versions": rows, "current": next((v["version"] for v in rows if v["current"]), None)})
        return
    for v in rows:
        mark = "*" if v["current"] else " "
        click.echo(f"{mark} v{v['version']:04d}  {v['created'] or '?':20}  {v['assets']} assets")
    if not rows:
        click.echo("no versions yet")


def _version_number(ctx, param, value: str) -> int:
    """``3``, ``v3`` or ``v0003`` (the form ``versions`` prints)."""
    import re

    match = re.fullmatch(r"[vV]?(\d+)", value.strip())
    if not match:
        raise click.BadParameter(f"{value!r} is not a version; write it as versions prints it (v0003) or 3")
    return int(match.group(1))


@main.command()
@click.argument("version", callback=_version_number, metavar="VERSION")
@pass_ctx
@run_safely
def rollback(ctx: Context, version: int) -> None:
    """Make VERSION (3 or v0003) current again and restore its lockfile, with no API call."""
    from starbuild.store.inventory import rollback as do_rollback

    lost = do_rollback(ctx.load(), version)
    click.echo(f"v{version:04d} is current; starbuild.lock restored from its manifest")
    for path in lost:
        click.echo(f"warning: v{version:04d}/{path} was edited in place and its original is no longer in the "
                   "object store; build to make it again", err=True)


@main.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@pass_ctx
@run_safely
def gc(ctx: Context, dry_run: bool) -> None:
    """Drop pruned versions' leftovers and cache objects nothing references."""
    from starbuild.store.inventory import collect_garbage

    garbage = collect_garbage(ctx.load(), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    if dry_run:
        for sha, size in garbage.objects:
            click.echo(f"{verb} object {sha} ({size} bytes)")
        for name in garbage.records:
            click.echo(f"{verb} journal record of {name}")
    kept = (f"; kept {garbage.kept_unpublished} paid image(s) no version has published yet"
            if garbage.kept_unpublished else "")
    click.echo(f"{verb} {len(garbage.objects)} unreferenced objects ({garbage.freed / 2**20:.1f} MB){kept}")


@main.command()
@click.option("--offline", is_flag=True, help="Use the built-in emulator: placeholder images, no key needed.")
@click.option("--serve", "serve_port", is_flag=False, flag_value=8700, type=int, default=None, metavar="[PORT]",
              help="Also serve the preview gallery on 127.0.0.1 (default port 8700).")
@click.option("--yes", is_flag=True, help="Do not ask before a large paid rebuild (watch.confirm_over).")
@click.option("--concurrency", type=click.IntRange(1, 256), help="Tasks in flight at most.")
@click.option("--max-credits", type=float, callback=_check_credits, help="Refuse a rebuild whose estimate is higher.")
@click.option("--tier", metavar="NAME", help="Build at this tier (default: draft, when a draft tier exists).")
@pass_ctx
@run_safely
def watch(ctx: Context, offline: bool, serve_port: int | None, yes: bool, concurrency, max_credits, tier) -> None:
    """Build, then rebuild on every change to the config, templates, data and input files."""
    from starbuild.engine.build import BuildOptions
    from starbuild.ui.gallery import GalleryState, serve_gallery
    from starbuild.ui.watch import Watcher, terminal_confirm

    _setup_logging(ctx)
    options = BuildOptions(offline=offline, concurrency=concurrency, max_credits=max_credits, tier=tier)
    state = GalleryState(options=options)
    if serve_port is not None:  # a busy port fails here, before anything is announced or built
        server = serve_gallery(state, serve_port, in_thread=True)
        click.echo(f"gallery: http://127.0.0.1:{server.port}/", err=True)
    watcher = Watcher(ctx.config_path, options, yes=yes, say=lambda line: click.echo(line, err=True),
                      confirm=terminal_confirm, state=state, emit=None if ctx.quiet else _plain_progress())
    try:
        watcher.run()
    except KeyboardInterrupt:
        click.echo("stopped; anything still in flight resumes on the next build", err=True)
    finally:
        if serve_port is not None:
            server.should_exit = True


def _plain_progress():
    from starbuild.ui.progress import PlainProgress

    return PlainProgress()


@main.command()
@click.option("--port", type=int, default=8700, show_default=True, help="Port on 127.0.0.1.")
@click.option("--offline", is_flag=True, help="Rerolls from the gallery use the built-in emulator.")
@click.option("--tier", metavar="NAME", help="Review the assets as planned at this tier.")
@pass_ctx
@run_safely
def serve(ctx: Context, port: int, offline: bool, tier: str | None) -> None:
    """Serve the review gallery of the current assets (no watching)."""
    from starbuild.engine.build import BuildOptions
    from starbuild.ui.gallery import GalleryState, bind_gallery, serve_gallery

    state = GalleryState(ctx.load(tier), options=BuildOptions(offline=offline, tier=tier), tier=tier)
    sock = bind_gallery(port)
    click.echo(f"gallery: http://127.0.0.1:{sock.getsockname()[1]}/ (Ctrl-C to stop)", err=True)
    serve_gallery(state, port, sock=sock)


@main.command()
def schema() -> None:
    """Print the JSON Schema of starbuild.yaml."""
    from starbuild.config.schema import schema_text

    click.echo(schema_text(), nl=False)
