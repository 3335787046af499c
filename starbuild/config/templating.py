"""Sandboxed Jinja2 for prompts, prompt files and names: strict undefined, no HTML escaping.

Each template is compiled once per Templates instance. Failures become TemplateProblem with the
template line, so the planner can say which asset, field and line went wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2.runtime import new_context
from jinja2.sandbox import SandboxedEnvironment


class OutsideProject(jinja2.TemplateNotFound):
    """A template whose real path (symlinks followed) is outside the project folder."""


class _ProjectLoader(jinja2.FileSystemLoader):
    """Loads templates from the project folder only, refusing symlinks that lead out of it."""

    def __init__(self, root: Path):
        super().__init__(str(root))
        self.root = root.resolve()

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        if not Path(filename).resolve().is_relative_to(self.root):
            raise OutsideProject(template)
        return source, filename, uptodate


class TemplateProblem(Exception):
    """A template failed to compile or render; ``line`` is the template's own line when known."""

    def __init__(self, message: str, line: int | None = None, file: str | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.file = file


def _template_line(exc: BaseException, names: tuple[str, ...]) -> int | None:
    """The last traceback line that belongs to a template (Jinja rewrites frames to template lines)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in names:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class Templates:
    """A sandboxed environment rooted at the project folder, with compiled templates cached."""

    def __init__(self, root: Path):
        self.env = SandboxedEnvironment(
            loader=_ProjectLoader(root),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
        )
        self._inline: dict[str, jinja2.Template] = {}

    def _compile(self, source: str) -> jinja2.Template:
        tpl = self._inline.get(source)
        if tpl is None:
            try:
                tpl = self.env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateProblem(f"template syntax error: {exc.message}", exc.lineno) from None
            self._inline[source] = tpl
        return tpl

    def _file(self, rel: str) -> jinja2.Template:
        try:
            return self.env.get_template(rel)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax error: {exc.message}", exc.lineno, exc.filename) from None
        except OutsideProject as exc:
            raise TemplateProblem(f"template file {exc.name!r} is outside the project folder (through a "
                                  "symlink); templates must be inside it") from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateProblem(f"template file {exc.name!r} not found in the project folder") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateProblem(f"cannot read template {rel!r}: {exc}") from None

    def render(self, source: str, context: dict[str, Any]) -> str:
        """Render an inline template string."""
        return self._run(self._compile(source), context)

    def render_file(self, rel: str, context: dict[str, Any]) -> str:
        """Render a template file given relative to the project folder."""
        return self._run(self._file(rel), context)

    def _run(self, tpl: jinja2.Template, context: dict[str, Any]) -> str:
        try:
            # Fast path: render with the context as the shared parent, skipping Template.render's
            # copy of globals + vars on every call (10,000 cells make that copy the cost of a plan).
            ctx = new_context(self.env, tpl.name, tpl.blocks, {**self.env.globals, **context}, shared=True)
            return self.env.concat(tpl.root_render_func(ctx)).strip()
        except Exception:
            pass  # render again the ordinary way, which reports the template's own line numbers
        try:
            return tpl.render(context).strip()
        except jinja2.UndefinedError as exc:
            raise TemplateProblem(f"{exc.message} (define it in vars, the image's vars or the matrix)",
                                  _template_line(exc, (tpl.filename or "<template>", "<template>"))) from None
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateProblem(f"unsafe template operation refused: {exc}") from None
        except jinja2.TemplateSyntaxError as exc:  # an included file with a syntax error
            raise TemplateProblem(f"template syntax error in {exc.filename}: {exc.message}", exc.lineno) from None
        except OutsideProject as exc:
            raise TemplateProblem(f"included template {exc.name!r} is outside the project folder") from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateProblem(f"template file {exc.name!r} not found in the project folder") from None
        except Exception as exc:  # a filter or expression failing on the user's data
            raise TemplateProblem(f"template error: {exc}",
                                  _template_line(exc, (tpl.filename or "<template>", "<template>"))) from None
