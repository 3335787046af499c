"""The models of ``starbuild.yaml`` and ``load_config``, which validates a file into a Project.

Every problem is located (``starbuild.yaml:14:11: images.hero.size: ...``) and all of a file's
problems are reported together. Rules that depend on the model, and templates, are checked when
the plan is made (planner.py), with the same locations.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from starbuild.config.cache import Cache, RemoteConfig
from starbuild.errors import ConfigError, Issue
from starbuild.models import MAX_INPUTS
from starbuild.config.urls import api_url_problem
from starbuild.config.yamlfile import Marks, load_yaml_file
from starbuild.config.callback import Callback
from starbuild.post.schema import STEPS, Atlas, Step, Variants, jpeg_problem

CONFIG_NAME = "starbuild.yaml"
RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
# The slowest rate accepted: one submission an hour. Slower ones only make a build wait for days.
MIN_RATE_PER_SECOND = 1 / 3600


class _Strict(BaseModel):
    # Strict: ``concurrency: "8"``, ``n: true`` and ``take: 1.5`` are errors, never coerced.
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True, strict=True)


class Provider(_Strict):
    """Where the API is and how hard starbuild may use it."""

    base_url: str = Field("https://api.starmagic.ai", description="API host; env STARMAGIC_BASE_URL overrides")
    files_url: str = Field("https://files-api.starmagic.ai",
                           description="upload host for local reference images; env STARMAGIC_FILES_URL overrides")
    api_key_env: str = Field("STARMAGIC_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="NAME of the environment variable that holds the key (never the key)")
    concurrency: int = Field(4, ge=1, le=256, description="tasks in flight at most")
    rate_limit: str | None = Field(None, pattern=r"^ *[0-9]+(\.[0-9]+)? */ *(s|sec|second|min|minute|h|hour) *$",
                                   description="submissions per time unit at most, e.g. 60/min (at least 1/hour)")
    task_timeout: float = Field(600, gt=0, allow_inf_nan=False,
                                description="seconds before an unfinished task is reported failed")
    max_credits: float | None = Field(None, ge=0, allow_inf_nan=False,
                                      description="refuse a build whose estimate exceeds this")
    callback: Callback | None = Field(None, description="task results posted to starbuild (SPEC.md §11)")

    @field_validator("base_url", "files_url")
    @classmethod
    def _safe_url(cls, v: str) -> str:
        problem = api_url_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("rate_limit")
    @classmethod
    def _bounded_rate(cls, v: str | None) -> str | None:
        if v is not None:
            count, unit = (p.strip() for p in v.split("/"))
            rate = float(count) / RATE_UNITS[unit]
            if rate <= 0:
                raise ValueError(f"{v!r} allows no submission at all; remove rate_limit for no limit")
            if rate < MIN_RATE_PER_SECOND:
                raise ValueError(f"{v!r} is slower than 1/hour, so a build would wait for days; "
                                 "use at least 1/hour")
        return v

    def submissions_per_second(self) -> float | None:
        if not self.rate_limit:
            return None
        count, unit = (p.strip() for p in self.rate_limit.split("/"))
        return float(count) / RATE_UNITS[unit]


class Output(_Strict):
    """The versioned asset directory."""

    dir: str = Field("assets", description="the versioned asset directory, relative to the project")
    keep: int = Field(20, ge=1, description="asset versions kept; older ones are pruned")
    export: str | None = Field(None, min_length=1,
                               description="a plain folder mirroring the current version (no symlinks)")


class Watch(_Strict):
    """Guards for ``starbuild watch`` on paid builds."""

    confirm_over: int = Field(20, ge=0, description="ask before one rebuild submits more images than this")
    confirm_credits: float = Field(50, ge=0, allow_inf_nan=False,
                                   description="ask before one rebuild reserves more credits than this")


class Cost(_Strict):
    """Cost review of changes (``starbuild plan --format markdown``)."""

    max_credits_per_pr: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="refuse (exit 3) a plan whose images would reserve more credits than this")


class FileAxis(_Strict):
    """A matrix axis read from a CSV (rows as mappings), JSON or YAML file."""

    file: str


class ImageFields(_Strict):
    """Fields an image (or ``defaults``) may set."""

    prompt: str | None = Field(None, description="Jinja2 template of the prompt")
    prompt_file: str | None = Field(None, description="a Jinja2 template file, instead of prompt")
    model: Literal["gpt-image-1.5", "gpt-image-2"] | None = None
    size: str | None = Field(None, description="ratio such as 16:9, WxH, or auto (gpt-image-2); may be a template")
    resolution: str | None = Field(None, pattern=r"^([124][kK]|.*\{\{.*)$",
                                   description="1K, 2K or 4K (gpt-image-2 ratio sizes); may be a template")
    quality: Literal["low", "medium", "high"] | None = None
    n: int | None = Field(None, ge=1, le=10, description="images per task (gpt-image-2: 1-10)")
    background: Literal["opaque", "transparent"] | None = None
    inputs: list[str] | None = Field(None, min_length=1, max_length=MAX_INPUTS,
                                     description="reference images: local paths, http(s) URLs or @asset")
    mask: str | None = Field(None, description="PNG with alpha, same size as the first input (gpt-image-2)")
    take: int | None = Field(None, ge=0, description="part of the hash, never sent: change it for a fresh image")
    takes: int | None = Field(None, ge=1, le=50,
                              description="make this many candidates (takes 1..N); `starbuild pick` chooses one")
    tier: str | None = Field(None, min_length=1, description="the tier (a name under tiers:) to build at")
    vars: dict[str, Any] | None = Field(None, description="template variables for this image")
    post: list[Step] | None = Field(None, description="ordered processing steps that make the delivered file")
    variants: Variants | None = Field(None, description="widths x formats of the delivered file, never upscaled")

    @field_validator("post", "variants")
    @classmethod
    def _no_jpeg_alpha(cls, v: Any, info: ValidationInfo) -> Any:
        steps = v if info.field_name == "post" else info.data.get("post")
        variants = v if info.field_name == "variants" else None
        problem = jpeg_problem(steps, variants, info.data.get("background") == "transparent")
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("size", mode="before")
    @classmethod
    def _size_is_text(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            raise ValueError(f"{v!r} is not a size; write it as a string such as \"16:9\" or \"1024x1024\"")
        return v


class Image(ImageFields):
    """One image, or a matrix of images whose name is a template."""

    matrix: dict[str, list[Any] | FileAxis] | None = Field(
        None, description="axes (lists, or {file: ...}), plus exclude and include lists")


class Config(_Strict):
    """The whole ``starbuild.yaml``."""

    version: Literal[1]
    provider: Provider = Provider()
    output: Output = Output()
    watch: Watch = Watch()
    cost: Cost = Cost()
    cache: Cache = Cache()
    defaults: ImageFields = ImageFields()
    tiers: dict[str, ImageFields] = Field(default_factory=dict,
                                          description="named sets of image fields, e.g. draft: {quality: low}")
    vars: dict[str, Any] = Field(default_factory=dict, description="template variables visible to every template")
    images: dict[str, Image] = Field(min_length=1)
    atlases: dict[str, Atlas] = Field(default_factory=dict, description="images packed into pages (SPEC.md §8)")

    @field_validator("atlases")
    @classmethod
    def _atlas_names(cls, v: dict[str, Atlas]) -> dict[str, Atlas]:
        for name in v:
            if not re.match(r"^[A-Za-z0-9_-]+$", name):
                raise ValueError(f"atlas name {name!r}: use letters, digits, - and _")
        return v


@dataclass(frozen=True)
class Project:
    """A validated config and where it lives."""

    root: Path
    config_path: Path
    config: Config
    marks: Marks
    # Located warnings of the last resolution (an exclude that matches nothing, ...); never errors.
    warnings: list[Issue] = field(default_factory=list, compare=False, repr=False)

    @property
    def display(self) -> str:
        """The config's file name as errors show it."""
        return display_path(self.config_path)

    def issue(self, path: tuple, message: str, *, key: bool = False) -> Issue:
        """An Issue located at a path in the config."""
        pos = self.marks.find(path, key=key) or (None, None)
        return Issue(self.display, pos[0], pos[1], _dotted(path), message)


def display_path(path: Path) -> str:
    """A path as messages show it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(Path(path).resolve()) if rel.startswith("..") else rel


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


_ALLOWED_BY_MODEL = {
    (): Config, ("provider",): Provider, ("output",): Output, ("watch",): Watch, ("defaults",): ImageFields,
    ("cost",): Cost,
    ("cache",): Cache, ("cache", "remote"): RemoteConfig,
}


def _known_fields(loc: tuple) -> list[str]:
    if "post" in loc and len(loc) == loc.index("post") + 3 and loc[-1] in STEPS:
        return list(STEPS[loc[-1]].model_fields)
    if loc[-1:] == ("variants",):
        return list(Variants.model_fields)
    if len(loc) == 2 and loc[0] == "atlases":
        return list(Atlas.model_fields)
    model = _ALLOWED_BY_MODEL.get(loc) or (Image if len(loc) == 2 and loc[0] == "images" else None) or (
        ImageFields if len(loc) == 2 and loc[0] == "tiers" else None)
    return list(model.model_fields) if model else []


def _message(err: dict) -> tuple[tuple, str, bool]:
    """A pydantic error as (path, message, points at the key)."""
    loc = tuple(err["loc"])
    kind = err["type"]
    # pydantic adds the union member's name to the path ("list[any]", "FileAxis"); drop it.
    loc = tuple(p for p in loc if not (isinstance(p, str) and (p.startswith("list[") or p == "FileAxis")))
    at = loc.index("post") if "post" in loc else -1
    if kind == "extra_forbidden" and at >= 0 and len(loc) == at + 3 and isinstance(loc[at + 1], int):
        name = str(loc[-1])
        hint = difflib.get_close_matches(name, list(STEPS), n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else f"; steps are {', '.join(STEPS)}"
        return loc, f"unknown step {name!r}{extra}", True
    if kind == "extra_forbidden":
        name = str(loc[-1])
        hint = difflib.get_close_matches(name, _known_fields(loc[:-1]), n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        return loc, f"unknown field {name!r}{extra}", True
    if kind == "missing":
        return loc, "is required", True
    msg = err["msg"]
    typed = _type_message(kind, err.get("input"))
    if typed:
        return loc, typed, False
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    elif kind == "string_pattern_mismatch" and loc[-1] == "resolution":
        msg = f"{err['input']!r} is not a resolution; use 1K, 2K or 4K"
    elif kind == "string_pattern_mismatch" and loc[-1] == "rate_limit":
        msg = f"{err['input']!r} is not a rate; write it as N/sec, N/min or N/hour"
    else:
        msg = msg[0].lower() + msg[1:]
        if "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{err['input']!r}: {msg}"
    return loc, msg, False


_KIND_WORDS = {"int_type": "a whole number", "float_type": "a number", "string_type": "text",
               "bool_type": "true or false"}


def _type_message(kind: str, value: Any) -> str | None:
    """A strict type error in words, saying what was written and how to write it."""
    if kind == "finite_number":
        return f"{value!r} is not a finite number"
    wanted = _KIND_WORDS.get(kind)
    if wanted is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        written = f"{str(value).lower()} is a boolean"
    elif isinstance(value, str):
        written = f"{value!r} is text (quoted)"
        if kind in ("int_type", "float_type"):
            return f"{written}, not {wanted}; write the number without quotes"
    elif isinstance(value, float) and kind == "int_type":
        return f"{value!r} is not a whole number"
    elif isinstance(value, (int, float)):
        written = f"{value!r} is a number"
        if kind == "string_type":
            return f"{written}, not text; put it in quotes"
    elif value is None:
        written = "an empty value"
    else:
        written = f"{value!r}"
    return f"{written}, not {wanted}"


def find_config(directory: Path | None = None, file: Path | None = None) -> Path:
    """The config file to use: ``-f FILE``, else starbuild.yaml in ``-C DIR``, else in the working
    directory or the nearest parent holding one (as git finds its repository)."""
    if file is not None:
        return Path(file) if directory is None or Path(file).is_absolute() else Path(directory) / file
    if directory is not None:
        return Path(directory) / CONFIG_NAME
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return Path(CONFIG_NAME) if folder == here else Path(os.path.relpath(folder / CONFIG_NAME))
    return Path(CONFIG_NAME)  # the "not found" error names the working directory's file


def load_config(path: Path | str = CONFIG_NAME) -> Project:
    """Read, parse and validate a config file into a Project; raise ConfigError with every issue."""
    path = Path(path)
    display = display_path(path)
    data, marks = load_yaml_file(path, display)
    if not isinstance(data, dict):
        raise ConfigError(Issue(display, 1, 1, "", "the config must be a mapping with version: 1 and images:"))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc, msg, key = _message(err)
            pos = marks.find(loc, key=key) or (None, None)
            issues.append(Issue(display, pos[0], pos[1], _dotted(loc), msg))
        issues.sort(key=lambda i: (i.line or 0, i.column or 0))
        error = ConfigError(issues)
        error.partial = _partial(data, exc, path, marks)  # type: ignore[attr-defined]
        raise error from None
    return Project(root=path.resolve().parent, config_path=path.resolve(), config=config, marks=marks)


def _partial(data: dict, exc: ValidationError, path: Path, marks: Marks) -> Project | None:
    """The project made of the images that did validate, so their own problems are reported too."""
    bad = set()
    for err in exc.errors():
        loc = err["loc"]
        if len(loc) < 2 or loc[0] != "images":
            return None
        bad.add(loc[1])
    images = {k: v for k, v in (data.get("images") or {}).items() if k not in bad}
    if not images:
        return None
    try:
        config = Config.model_validate({**data, "images": images})
    except ValidationError:
        return None
    return Project(root=path.resolve().parent, config_path=path.resolve(), config=config, marks=marks)
