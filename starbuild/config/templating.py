"""Sandboxed Jinja2 for prompts, prompt files and names: strict undefined, no HTML escaping.

Each template is compiled once per Templates instance. Failures become TemplateProblem with the
template line, so the planner can say which asset, field and line went wrong.

Prompts are text, never HTML: ``tojson`` does not write ``<`` as ``\u003c``, and ``escape``,
``forceescape`` and ``safe`` leave text as it is (no Markup object ever enters a prompt, since
Markup escapes whatever it is joined with).

Each render has a budget (RENDER_SECONDS of time, MAX_LOOP_STEPS loop iterations, MAX_OUTPUT
characters, and no ``*``/``**`` that would build a huge value), so nested loops cannot hang
``validate``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import jinja2
from jinja2 import nodes
from jinja2.runtime import new_context
from jinja2.sandbox import SandboxedEnvironment

MAX_TEMPLATE_BYTES = 1 << 20
RENDER_SECONDS = 2.0
MAX_LOOP_STEPS = 1_000_000
MAX_OUTPUT = 1_000_000
MAX_REPEAT = 100_000  # items or characters a '*' may build
MAX_POWER_BITS = 10_000


class OutsideProject(jinja2.TemplateNotFound):
    """A template whose real path (symlinks followed) is outside the project folder."""


class UnreadableTemplate(jinja2.TemplateNotFound):
    """A template path that is not a regular file (a FIFO would block forever) or is too large."""

    def __init__(self, name: str, why: str):
        super().__init__(name)
        self.why = why


class _ProjectLoader(jinja2.FileSystemLoader):
    """Loads templates from the project folder only, refusing symlinks that lead out of it, and
    reading only regular files of at most MAX_TEMPLATE_BYTES."""

    def __init__(self, root: Path):
        super().__init__(str(root))
        self.root = root.resolve()

    def get_source(self, environment, template):
        from jinja2.loaders import split_template_path

        from starbuild.safefile import read_text

        path = self.root.joinpath(*split_template_path(template))
        if not path.resolve().is_relative_to(self.root):
            raise OutsideProject(template)
        try:
            source = read_text(path, MAX_TEMPLATE_BYTES)
        except FileNotFoundError:
            raise jinja2.TemplateNotFound(template) from None
        except UnicodeDecodeError:
            raise UnreadableTemplate(template, "it is not UTF-8 text") from None
        except OSError as exc:
            raise UnreadableTemplate(template, exc.strerror or str(exc)) from None
        mtime = path.stat().st_mtime
        return source, str(path), lambda: path.stat().st_mtime == mtime if path.exists() else False


class BudgetExceeded(jinja2.exceptions.SecurityError):
    """A render ran out of its time, loop or size budget."""


class _BudgetEnvironment(SandboxedEnvironment):
    """The sandbox with a per-render budget; ``start()`` before each render."""

    intercepted_binops = frozenset(["*", "**"])

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.deadline = float("inf")
        self.steps = 0
        self.filters["starbuild_budget"] = self._loop
        self.filters.update(tojson=_tojson, escape=_as_text, e=_as_text, forceescape=_as_text, safe=_as_text)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """The template's tree with every ``for`` loop's iterable counted against the budget."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "starbuild_budget", [], [], None, None, lineno=loop.lineno)
        return tree

    def start(self) -> None:
        self.deadline = time.monotonic() + RENDER_SECONDS
        self.steps = 0

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_LOOP_STEPS:
            raise BudgetExceeded(f"the template ran more than {MAX_LOOP_STEPS:,} loop steps; simplify it")
        if self.steps % 64 == 0 and time.monotonic() > self.deadline:
            raise BudgetExceeded(f"the template took longer than {RENDER_SECONDS:g} s to render; simplify it")

    def _loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.tick()
            yield item

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        __self.tick()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_REPEAT:
                    raise BudgetExceeded(f"'*' would build {len(seq) * count:,} items or characters; "
                                         f"at most {MAX_REPEAT:,}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and \
                abs(left).bit_length() * abs(right) > MAX_POWER_BITS:
            raise BudgetExceeded("'**' would build a number too large to print in a prompt")
        return super().call_binop(context, operator, left, right)


def _tojson(value: Any, indent: int | None = None) -> str:
    """JSON as written, never HTML-escaped (Jinja's own tojson writes '<' as '\\u003c')."""
    return json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False)


def _as_text(value: Any) -> str:
    """escape/e/forceescape/safe: prompts are never HTML, so text stays exactly as written."""
    return str(value)


class TemplateProblem(Exception):
    """A template failed to compile or render; ``line`` is the template's own line when known."""

    def __init__(self, message: str, line: int | None = None, file: str | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.file = file


def _capped(chunks: Iterable[str]) -> Iterator[str]:
    """The rendered chunks, refusing output beyond MAX_OUTPUT characters."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > MAX_OUTPUT:
            raise BudgetExceeded(f"the template renders more than {MAX_OUTPUT:,} characters; simplify it")
        yield chunk


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
        self.env = _BudgetEnvironment(
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
            except (RecursionError, MemoryError):
                raise TemplateProblem("the template is nested too deeply to compile") from None
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
        except UnreadableTemplate as exc:
            raise TemplateProblem(f"cannot read template file {exc.name!r}: {exc.why}") from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateProblem(f"template file {exc.name!r} not found in the project folder") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateProblem(f"cannot read template {rel!r}: {exc}") from None
        except (RecursionError, MemoryError):
            raise TemplateProblem(f"template {rel!r} is nested too deeply to compile") from None

    def render(self, source: str, context: dict[str, Any]) -> str:
        """Render an inline template string."""
        return self._run(self._compile(source), context)

    def render_file(self, rel: str, context: dict[str, Any]) -> str:
        """Render a template file given relative to the project folder."""
        return self._run(self._file(rel), context)

    def _run(self, tpl: jinja2.Template, context: dict[str, Any]) -> str:
        self.env.start()
        try:
            # Fast path: render with the context as the shared parent, skipping Template.render's
            # copy of globals + vars on every call (10,000 cells make that copy the cost of a plan).
            ctx = new_context(self.env, tpl.name, tpl.blocks, {**self.env.globals, **context}, shared=True)
            return self.env.concat(_capped(tpl.root_render_func(ctx))).strip()
        except BudgetExceeded as exc:  # not rendered again: that would spend the budget twice
            raise TemplateProblem(str(exc)) from None
        except Exception:
            pass  # render again the ordinary way, which reports the template's own line numbers
        self.env.start()
        try:
            return tpl.render(context).strip()
        except BudgetExceeded as exc:
            raise TemplateProblem(str(exc), _template_line(exc, (tpl.filename or "<template>", "<template>"))) from None
        except jinja2.UndefinedError as exc:
            raise TemplateProblem(f"{exc.message} (define it in vars, the image's vars or the matrix)",
                                  _template_line(exc, (tpl.filename or "<template>", "<template>"))) from None
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateProblem(f"unsafe template operation refused: {exc}") from None
        except jinja2.TemplateSyntaxError as exc:  # an included file with a syntax error
            raise TemplateProblem(f"template syntax error in {exc.filename}: {exc.message}", exc.lineno) from None
        except OutsideProject as exc:
            raise TemplateProblem(f"included template {exc.name!r} is outside the project folder") from None
        except UnreadableTemplate as exc:
            raise TemplateProblem(f"cannot read included template {exc.name!r}: {exc.why}") from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateProblem(f"template file {exc.name!r} not found in the project folder") from None
        except Exception as exc:  # a filter or expression failing on the user's data
            raise TemplateProblem(f"template error: {exc}",
                                  _template_line(exc, (tpl.filename or "<template>", "<template>"))) from None
