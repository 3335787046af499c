"""``starbuild watch``: build, then rebuild whenever an input of the build changes.

A broken edit prints its located error and keeps watching (the last good assets stay current).
Builds are never interrupted by edits, so paid tasks in flight are always journaled, downloaded
and stored; changes made meanwhile trigger the next rebuild.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from starbuild.engine.build import BuildOptions, asset_dir, build, cache_dir, plan_project
from starbuild.engine.project_lock import LOCK_DIR
from starbuild.errors import ConfigError, StarbuildError
from starbuild.ui.gallery import GalleryState
from starbuild.store.lockfile import LOCK_NAME
from starbuild.engine.outcome import BuildReport
from starbuild.config.resolve import load_and_resolve
from starbuild.engine.runner import UploadCache

SETTLE_MS = 300  # changes are grouped until the files have been quiet this long
_IGNORED_SUFFIXES = (".tmp", ".part", ".swp", ".swx", "~")


def ignore_filter(root: Path, output: Path, cache: Path) -> Callable[[Any, str], bool]:
    """Changes worth a rebuild: anything in the project but outputs, cache, lockfile and temp files."""
    skip_dirs = {".git", "__pycache__", ".venv", "node_modules", ".pytest_cache", LOCK_DIR}

    def keep(_change: Any, raw: str) -> bool:
        path = Path(raw)
        if path.name == LOCK_NAME or path.name.startswith(".#") or path.name.endswith(_IGNORED_SUFFIXES):
            return False
        if path.name.startswith(f".{LOCK_NAME}."):
            return False
        for parent in (output, cache):
            if path == parent or path.is_relative_to(parent):
                return False
        try:
            rel = path.relative_to(root)
        except ValueError:
            return True
        return not any(part in skip_dirs for part in rel.parts)

    return keep


class Watcher:
    """The watch loop; ``say`` prints, ``confirm`` asks the guard's question."""

    def __init__(self, config_path: Path, options: BuildOptions, *, yes: bool = False,
                 say: Callable[[str], None] = print, confirm: Callable[[str], bool] | None = None,
                 state: GalleryState | None = None, emit=None, transport=None,
                 on_report: Callable[[BuildReport | None], None] | None = None):
        self.config_path = config_path
        # A build that finds the project locked (another build, a gc) waits for it: an edit is never dropped.
        self.options = dataclasses.replace(options, uploads=options.uploads or UploadCache(), wait=True)
        self.yes = yes
        self.say = say
        self.confirm = confirm
        self.state = state or GalleryState()
        self.emit = emit
        self.transport = transport
        self.on_report = on_report or (lambda report: None)
        self.builds = 0

    def build_once(self) -> BuildReport | None:
        """Reload the config and build what changed; errors are printed, never raised."""
        try:
            project, specs = load_and_resolve(self.config_path)
        except ConfigError as exc:
            for line in str(exc).splitlines():
                self.say(f"error: {line}")
            self.say("the last good assets stay current; watching for the next change")
            self.state.config_error(str(exc))
            self.on_report(None)
            return None
        for issue in project.warnings:
            self.say(f"warning: {issue}")
        self.state.set_project(project)
        try:
            plan = plan_project(project, placeholder=self.options.offline, specs=specs,
                                force=self.options.force, env=self.options.env)
            todo = plan.to_build()
            if todo and not self.options.offline and not self._guard(project, len(todo), plan.credits):
                self.on_report(None)
                return None
            self.state.begin({a.name for a in todo})
            self.builds += 1
            options = dataclasses.replace(self.options, specs=specs)
            report = build(project, options, emit=self.emit, transport=self.transport)
        except StarbuildError as exc:
            self.say(f"error: {exc}")
            self.state.end(None, str(exc))
            self.on_report(None)
            return None
        from starbuild.ui.progress import render_summary

        render_summary(report, _Writer(self.say))
        self.state.end(report)
        self.on_report(report)
        return report

    def _guard(self, project, count: int, credits: float) -> bool:
        limits = project.config.watch
        if count <= limits.confirm_over and credits <= limits.confirm_credits:
            return True
        question = (f"this rebuild would submit {count} image task(s) for about {credits:g} credits "
                    f"(watch.confirm_over {limits.confirm_over}, confirm_credits {limits.confirm_credits:g})")
        if self.yes:
            return True
        if self.confirm is not None and self.confirm(question + "; go ahead?"):
            return True
        self.say(f"skipped: {question}; confirm, or run watch with --yes")
        return False

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Build, then rebuild on every settled change until Ctrl-C or ``stop_event``."""
        import watchfiles

        root = self.config_path.resolve().parent
        output, cache = self._outputs(root)
        keep = ignore_filter(root, output, cache)
        first = True
        # The watcher starts before the first build, so edits made during any build (the first
        # included) are seen; its first wake-up, on a change or after a short timeout, runs that build.
        for changes in watchfiles.watch(root, watch_filter=keep, step=SETTLE_MS, stop_event=stop_event,
                                        raise_interrupt=True, yield_on_timeout=True, rust_timeout=200):
            if first:
                first = False
                self.build_once()
                self.say(f"watching {root} for changes (Ctrl-C to stop)")
                continue
            if not changes:
                continue
            names = sorted({str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p
                            for _, p in changes})
            self.say(f"changed: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}")
            self.build_once()

    def _outputs(self, root: Path) -> tuple[Path, Path]:
        """The asset and cache folders, which never trigger a rebuild (defaults if the config is broken)."""
        try:
            project, _ = load_and_resolve(self.config_path)
            return asset_dir(project).root, cache_dir(project, self.options.env)
        except StarbuildError:
            return root / "assets", root / ".starbuild"


class _Writer:
    """A text stream that hands whole lines to ``say``."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def write(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            self.say(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def terminal_confirm(question: str) -> bool:
    """Ask on the terminal; without one, the answer is no."""
    if not sys.stdin.isatty():
        return False
    import click

    return click.confirm(question, default=False)


