"""Turn a Project into resolved GenerationSpecs: defaults, matrix cells, templates, model rules.

Pure apart from reading the files the config names (prompt files, axis files, reference images).
All problems are collected and raised together as one ConfigError, each located in the config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starbuild.config.disknames import disk_problems
from starbuild.config.project import Image, Project
from starbuild.errors import ConfigError, Issue, UsageError
from starbuild.config.matrix import Cell, expand
from starbuild.safefile import FileTooLarge, read_regular
from starbuild.text import printable
from starbuild.models import GPT_IMAGE_2, check_options, check_prompt
from starbuild.plan.spec import GenerationSpec, InputRef, sha256_hex
from starbuild.config.templating import TemplateProblem, Templates

NAME_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
# Sizes as the API documents them: auto, a ratio, or WxH in ASCII digits without padding or spaces.
SIZE_RE = re.compile(r"^(?:auto|[1-9][0-9]?:[1-9][0-9]?|[1-9][0-9]{0,4}[x×X][1-9][0-9]{0,4})$", re.ASCII)
# Control characters a prompt may not carry (tab, newline and carriage return are text).
PROMPT_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
MAX_INPUT_BYTES = 50 * 1024 * 1024
# How many problems one image key may report; a 10,000-cell matrix with one typo says it once.
MAX_ISSUES_PER_IMAGE = 5
_API_TO_FIELD = {"image_urls": "inputs", "mask_url": "mask"}


def output_dir_problem(project: Project) -> str | None:
    """Why output.dir is unsafe, or None: it must be a real folder inside the project."""
    raw = project.config.output.dir
    rel = Path(raw)
    if rel.is_absolute() or ".." in rel.parts or rel.parts in ((), (".",)):
        return f"{raw!r} must be a folder inside the project, given relative to it (no '..', not absolute)"
    path = project.root
    for part in rel.parts:
        path = path / part
        if path.is_symlink():
            return (f"{raw!r} goes through the symlink {part!r}; versions must be written to a real folder "
                    "inside the project")
    return None


def image_format(head: bytes) -> str | None:
    """The image format of a file's first bytes: png, jpeg, webp, gif, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


class _Collector:
    """Issues for one image key, capped, with the location of each field."""

    def __init__(self, project: Project, key: str, image: Image):
        self.project, self.key, self.image = project, key, image
        self.issues: list[Issue] = []
        self.seen: set[str] = set()
        self.cell: Cell | None = None  # the matrix cell being resolved
        self.name: str | None = None   # its asset name, once rendered

    @property
    def where(self) -> str:
        """The asset name and cell, as template errors show them; made only for an error (a string
        per cell cost a tenth of resolving 10,000 of them)."""
        named = self.name is not None and (self.name != self.key or bool(self.cell))
        return _cell_where(self.name if named else None, self.cell)

    def path(self, fld: str) -> tuple:
        own = getattr(self.image, fld, None) is not None or (fld == "vars" and self.image.vars)
        return ("images", self.key, fld) if own or fld == "name" else ("defaults", fld)

    def add(self, fld: str, message: str, line_in_template: int | None = None, file: str | None = None,
            where: str = "") -> None:
        if fld in self.seen or len(self.issues) >= MAX_ISSUES_PER_IMAGE:
            return
        self.seen.add(fld)
        if where:
            message = f"{message} [{where}]"
        if fld == "name":
            issue = self.project.issue(("images", self.key), message, key=True)
            issue = Issue(issue.file, issue.line, issue.column, f"images.{self.key}", message)
        else:
            issue = self.project.issue(self.path(fld), message)
        if file:
            message = f"{message} ({file}, line {line_in_template})" if line_in_template else f"{message} ({file})"
            issue = Issue(issue.file, issue.line, issue.column, issue.field, message)
        elif line_in_template and line_in_template > 1:
            issue = Issue(issue.file, issue.line, issue.column, issue.field,
                          f"{message} (template line {line_in_template})")
        self.issues.append(issue)


class Resolver:
    """Resolves every image of a project; keep one per load so templates and hashes are reused."""

    def __init__(self, project: Project, tier: str | None = None):
        self.project = project
        self.tier = tier
        if tier is not None and tier not in project.config.tiers:
            known = ", ".join(sorted(project.config.tiers)) or "none are declared under tiers:"
            raise UsageError(f"--tier {tier}: no such tier in {project.display} (tiers: {known})")
        self.root = project.root
        self.templates = Templates(project.root)
        self._file_hashes: dict[str, tuple[str, str]] = {}
        self._option_checks: dict[tuple, dict[str, str]] = {}

    def resolve(self) -> list[GenerationSpec]:
        cfg = self.project.config
        specs: list[GenerationSpec] = []
        issues: list[Issue] = []
        origin: dict[str, tuple[str, Cell]] = {}
        self.project.warnings.clear()
        if cfg.defaults.prompt is not None and cfg.defaults.prompt_file is not None:
            issues.append(self.project.issue(("defaults", "prompt"), "set prompt or prompt_file, not both"))
        for key, image in cfg.images.items():
            col = _Collector(self.project, key, image)
            for spec, cell in self._image(key, image, col):
                if spec.name in origin:
                    other_key, other_cell = origin[spec.name]
                    col.add("name", f"name {spec.name!r} is produced twice: by {_cell_text(other_key, other_cell)}"
                                    f" and by {_cell_text(key, cell)}")
                    continue
                origin[spec.name] = (key, cell)
                specs.append(spec)
            issues.extend(col.issues)
        for spec, message in disk_problems(specs):
            col = _Collector(self.project, spec.template, cfg.images[spec.template])
            col.add("name", f"asset {spec.name!r}: {message}")
            issues.extend(col.issues)
        problem = output_dir_problem(self.project)
        if problem:
            issues.append(self.project.issue(("output", "dir"), problem))
        names = set(origin)
        for spec in specs:
            for ref in spec.inputs + ((spec.mask,) if spec.mask else ()):
                if ref.kind == "asset" and ref.ref not in names:
                    key = spec.template
                    col = _Collector(self.project, key, cfg.images[key])
                    col.add("inputs" if ref in spec.inputs else "mask",
                            f"@{ref.ref} is not an asset of this file (asset {spec.name!r})")
                    issues.extend(col.issues)
        by_name = {s.name: s for s in specs}
        for spec in specs:
            if spec.mask is not None and spec.mask.kind == "file":
                problem = self._mask_problem(spec, by_name)
                if problem:
                    col = _Collector(self.project, spec.template, cfg.images[spec.template])
                    col.add("mask", f"{problem} (asset {spec.name!r})")
                    issues.extend(col.issues)
        if issues:
            raise ConfigError(sorted(issues, key=lambda i: (i.line or 0, i.column or 0)))
        return specs

    def _mask_problem(self, spec: GenerationSpec, by_name: dict[str, GenerationSpec]) -> str | None:
        """A mask must be a PNG with alpha and the pixel size of the first input, when that is known."""
        from PIL import Image

        try:
            with Image.open(self.root / spec.mask.ref) as img:
                size, mode, info = img.size, img.mode, img.info
        except Exception as exc:
            return f"mask {spec.mask.ref!r} does not open as an image: {exc}"
        if not (mode in ("RGBA", "LA", "PA") or "transparency" in info):
            return f"mask {spec.mask.ref!r} has no alpha channel; transparent pixels mark what to regenerate"
        first = spec.inputs[0]
        expected = None
        if first.kind == "file":
            try:
                with Image.open(self.root / first.ref) as img:
                    expected = img.size
            except Exception:
                return None
        elif first.kind == "asset" and first.ref in by_name:
            expected = by_name[first.ref].dims
        if expected is not None and tuple(size) != tuple(expected):
            return (f"mask {spec.mask.ref!r} is {size[0]}x{size[1]} but the first input "
                    f"{first.label()} is {expected[0]}x{expected[1]}; they must be the same size")
        return None

    def _image(self, key: str, image: Image, col: _Collector):
        cfg = self.project.config
        fields = cfg.defaults.model_dump(exclude_none=True)
        own = image.model_dump(exclude_none=True, exclude={"matrix"})
        if "prompt" in own and "prompt_file" in own:
            col.add("prompt", "set prompt or prompt_file, not both")
            return
        if "prompt" in own or "prompt_file" in own:
            fields.pop("prompt", None)
            fields.pop("prompt_file", None)
        fields.update(own)
        if "prompt" not in fields and "prompt_file" not in fields:
            col.add("name", "needs a prompt or a prompt_file")
            return
        if not self._apply_tier(fields, col):
            return
        base_vars = {**cfg.vars, **(cfg.defaults.vars or {}), **(image.vars or {})}

        def fail(where: tuple, message: str) -> ConfigError:
            return ConfigError(self.project.issue(("images", key, "matrix") + where, message))

        def warn(where: tuple, message: str) -> None:
            self.project.warnings.append(self.project.issue(("images", key, "matrix") + where, message))

        try:
            cells = expand(image.matrix, self.root, fail, warn)
        except ConfigError as exc:
            col.issues.extend(exc.issues)
            return
        for cell in cells:
            col.cell, col.name = cell, None
            spec = self._cell(key, fields, {**base_vars, **cell}, col, cell)
            if spec is not None:
                yield spec, cell

    def _apply_tier(self, fields: dict[str, Any], col: _Collector) -> bool:
        """Lay the tier's fields over the image's (``--tier`` wins over the image's ``tier``)."""
        name = self.tier or fields.get("tier")
        if name is None:
            return True
        tiers = self.project.config.tiers
        if name not in tiers:
            known = ", ".join(sorted(tiers)) or "none are declared under tiers:"
            col.add("tier", f"{name!r} is not a tier (tiers: {known})")
            return False
        fields.update(tiers[name].model_dump(exclude_none=True, exclude={"tier"}))
        fields["tier"] = name
        return True

    def _render(self, col: _Collector, fld: str, source: str, ctx: dict[str, Any]) -> str | None:
        try:
            return self.templates.render(source, ctx)
        except TemplateProblem as exc:
            col.add(fld, exc.message, exc.line, exc.file, where=col.where)
            return None

    def _cell(self, key: str, fields: dict[str, Any], ctx: dict[str, Any], col: _Collector,
              cell: Cell | None = None) -> GenerationSpec | None:
        name = self._render(col, "name", key, ctx)
        if name is None:
            return None
        if not NAME_RE.match(name) or any(p in (".", "..") for p in name.split("/")):
            col.add("name", f"{name!r} is not a valid asset name: use letters, digits, -, _, . and / "
                            "in a relative path without '..'")
            return None
        col.name = name
        if "prompt_file" in fields:
            try:
                prompt = self.templates.render_file(fields["prompt_file"], ctx)
            except TemplateProblem as exc:
                col.add("prompt_file", exc.message, exc.line, exc.file or fields["prompt_file"], where=col.where)
                return None
        else:
            prompt = self._render(col, "prompt", fields["prompt"], ctx)
            if prompt is None:
                return None
        control = PROMPT_CONTROL.search(prompt)
        if control:
            col.add("prompt_file" if "prompt_file" in fields else "prompt",
                    f"the prompt holds the control character U+{ord(control.group(0)):04X}; remove it",
                    where=col.where)
            return None
        model = fields.get("model", GPT_IMAGE_2)
        size, resolution = fields.get("size"), fields.get("resolution")
        if size and "{" in size:
            size = self._render(col, "size", size, ctx)
            if size is None:
                return None
        if size is not None and not SIZE_RE.match(size):
            col.add("size", f"{size!r} is not a size: write auto, a ratio such as 16:9, or WxH such as 1024x1536 "
                            "(ASCII digits, no spaces or leading zeros)" + (f" (asset {name!r})" if name != key else ""))
            return None
        if resolution and "{" in resolution:
            resolution = self._render(col, "resolution", resolution, ctx)
            if resolution is None:
                return None
        inputs = []
        for source in fields.get("inputs", ()):
            ref = self._ref(col, "inputs", source, ctx)
            if ref is None:
                return None
            inputs.append(ref)
        mask = None
        if "mask" in fields:
            mask = self._ref(col, "mask", fields["mask"], ctx)
            if mask is None:
                return None
        spec = GenerationSpec.effective(
            name=name, model=model, prompt=prompt, size=size, resolution=resolution,
            quality=fields.get("quality"), n=fields.get("n"), background=fields.get("background"),
            take=fields.get("take"), inputs=tuple(inputs), mask=mask, template=key,
            takes=fields.get("takes"), tier=fields.get("tier"), cell=cell)
        problems = self._check(spec, name)
        for api_field, message in problems.items():
            fld = _API_TO_FIELD.get(api_field, api_field)
            if fld == "prompt" and "prompt_file" in fields:
                fld = "prompt_file"
            col.add(fld, f"{message} (asset {name!r})" if name != key else message)
        if problems:
            return None
        return spec

    def _check(self, spec: GenerationSpec, name: str) -> dict[str, str]:
        """Model rules for a spec; the rules on everything but the prompt are memoized."""
        key = (spec.model, spec.size, spec.resolution, spec.quality, spec.n, spec.background, len(spec.inputs),
               spec.mask is not None)
        problems = self._option_checks.get(key)
        if problems is None:
            body = spec.api_body(["x"] * len(spec.inputs) or None, "x" if spec.mask else None)
            problems = self._option_checks[key] = check_options(body)
        prompt = check_prompt(spec.model, spec.prompt)
        return {"prompt": prompt, **problems} if prompt else problems

    def _ref(self, col: _Collector, fld: str, source: str, ctx: dict[str, Any]) -> InputRef | None:
        text = self._render(col, fld, source, ctx)
        if text is None:
            return None
        if text.startswith("@"):
            return InputRef("asset", text[1:])
        if text.startswith(("http://", "https://")):
            return InputRef("url", text)
        digest = self._hash_file(col, fld, text)
        return InputRef("file", text, digest) if digest else None

    def _hash_file(self, col: _Collector, fld: str, rel: str) -> str | None:
        if rel in self._file_hashes:
            return self._file_hashes[rel][0]
        path = (self.root / rel).resolve()
        if Path(rel).is_absolute() or not path.is_relative_to(self.root):
            col.add(fld, f"{rel!r} is outside the project folder; reference images must be inside it")
            return None
        try:
            data = read_regular(path, MAX_INPUT_BYTES)
        except FileNotFoundError:
            col.add(fld, f"file {rel!r} not found")
            return None
        except FileTooLarge:
            col.add(fld, f"{rel!r} is larger than 50 MB; reference images may be at most 50 MB")
            return None
        except OSError as exc:
            col.add(fld, f"cannot read {rel!r}: {exc.strerror or exc}")
            return None
        kind = image_format(data[:16])
        allowed = ("png",) if fld == "mask" else ("png", "jpeg", "webp")
        if kind not in allowed:
            col.add(fld, f"{rel!r} is not a {'PNG' if fld == 'mask' else 'PNG, JPEG or WebP'} image")
            return None
        digest = sha256_hex(data)
        self._file_hashes[rel] = (digest, kind)
        return digest


def _cell_where(name: str | None, cell: Cell | None) -> str:
    """Which expansion of an image a problem belongs to: its asset name and matrix cell."""
    parts = [f"asset {name!r}"] if name else []
    if cell:
        inner = ", ".join(f"{k}: {printable(v)[:60]}" for k, v in cell.items())
        parts.append(f"cell {{{inner}}}")
    return ", ".join(parts)


def _cell_text(key: str, cell: Cell) -> str:
    if not cell:
        return f"image {key!r}"
    inner = ", ".join(f"{k}: {v}" for k, v in cell.items())
    return f"{key!r} cell {{{inner}}}"


def load_and_resolve(path: Path, tier: str | None = None) -> tuple[Project, list[GenerationSpec]]:
    """Load a config and resolve it, reporting schema and resolution problems together."""
    from starbuild.config.project import load_config

    try:
        project = load_config(path)
    except ConfigError as exc:
        partial = getattr(exc, "partial", None)
        if partial is not None:
            try:
                resolve_specs(partial)
            except ConfigError as more:
                extra = [i for i in more.issues if "is not an asset of this file" not in i.message]
                raise ConfigError(sorted(exc.issues + extra, key=lambda i: (i.line or 0, i.column or 0))) from None
        raise
    return project, resolve_specs(project, tier)


def resolve_specs(project: Project, tier: str | None = None) -> list[GenerationSpec]:
    """Every asset of a project as a resolved spec, in config order; ConfigError on any problem."""
    return Resolver(project, tier).resolve()
