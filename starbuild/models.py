"""Per-model rules of the StarMagic image API (STARMAGIC_API.md) and the price estimates.

Every rule here is checked before anything is sent, so that a config starbuild accepts never
meets a 400 from the API. ``check_request`` returns human messages keyed by field; the config
loader locates them in the YAML and the emulator turns them into ``invalid_request`` answers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

GPT_IMAGE_15 = "gpt-image-1.5"
GPT_IMAGE_2 = "gpt-image-2"
MODEL_NAMES = (GPT_IMAGE_15, GPT_IMAGE_2)

QUALITIES = ("low", "medium", "high")
RESOLUTIONS = ("1K", "2K", "4K")
BACKGROUNDS = ("opaque", "transparent")
MAX_INPUTS = 16

# Pixel budget of each gpt-image-2 resolution tier.
TIER_PIXELS = {"1K": 1_048_576, "2K": 4_194_304, "4K": 8_294_400}
MAX_EDGE = 3840
MIN_EDGE = 16
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400

LANDSCAPE_RATIOS = ("1:1", "2:1", "3:1", "3:2", "4:3", "5:4", "16:9", "21:9")
PORTRAIT_RATIOS = ("1:2", "1:3", "2:3", "3:4", "4:5", "9:16", "9:21")
GPT2_RATIOS = LANDSCAPE_RATIOS + PORTRAIT_RATIOS

GPT15_SIZES = {
    "1:1": (1024, 1024), "2:3": (1024, 1536), "3:2": (1536, 1024),
    "1024x1024": (1024, 1024), "1024x1536": (1024, 1536), "1536x1024": (1536, 1024),
}

# gpt-image-1.5 is limited to 2000 tokens; without the tokenizer we allow 4 characters a token,
# which is what English prose averages, and say so in the error.
GPT15_MAX_PROMPT_CHARS = 8000
GPT2_MAX_PROMPT_CHARS = 32_000

_WXH = re.compile(r"^\s*(\d+)\s*[x×X]\s*(\d+)\s*$")


@dataclass(frozen=True)
class ModelRules:
    """What one model accepts, and its defaults."""

    name: str
    default_size: str
    default_quality: str
    max_n: int
    max_prompt_chars: int
    supports_resolution: bool
    supports_mask: bool
    supports_background: bool


RULES = {
    GPT_IMAGE_15: ModelRules(GPT_IMAGE_15, "1:1", "high", 1, GPT15_MAX_PROMPT_CHARS, False, False, False),
    GPT_IMAGE_2: ModelRules(GPT_IMAGE_2, "auto", "medium", 10, GPT2_MAX_PROMPT_CHARS, True, True, True),
}


def _round16(x: float) -> int:
    return int(x / 16 + 0.5) * 16


def _floor16(x: float) -> int:
    return int(x // 16) * 16


def ratio_dimensions(ratio: str, resolution: str = "1K") -> tuple[int, int]:
    """Pixel size of a gpt-image-2 ratio size at a resolution tier (the documented rule)."""
    a, b = (int(p) for p in ratio.split(":"))
    portrait = a < b
    if portrait:
        a, b = b, a
    budget = TIER_PIXELS[resolution.upper()]
    r = a / b
    sw, sh = math.sqrt(budget * r), math.sqrt(budget / r)
    w, h = _round16(sw), _round16(sh)
    if w > MAX_EDGE:
        w, h = MAX_EDGE, _floor16(MAX_EDGE / r)
    elif w * h > MAX_PIXELS:
        w, h = _floor16(sw), _floor16(sh)
    return (h, w) if portrait else (w, h)


def parse_wxh(size: str) -> tuple[int, int] | None:
    """``'1024x1536'`` or ``'1024×1536'`` as (width, height); None when it is not of that form."""
    m = _WXH.match(size)
    return (int(m.group(1)), int(m.group(2))) if m else None


def normalize_resolution(resolution: str | None) -> str | None:
    return resolution.upper() if isinstance(resolution, str) else resolution


def dimensions(model: str, size: str | None, resolution: str | None = None) -> tuple[int, int] | None:
    """The pixel size a request produces; None for ``auto`` (the model chooses)."""
    rules = RULES[model]
    size = size or rules.default_size
    if model == GPT_IMAGE_15:
        return GPT15_SIZES[size.replace("×", "x")]
    if size == "auto":
        return None
    wxh = parse_wxh(size)
    if wxh:
        return wxh
    return ratio_dimensions(size, normalize_resolution(resolution) or "1K")


def _check_wxh_gpt2(w: int, h: int) -> str | None:
    if w % 16 or h % 16:
        return "both edges must be multiples of 16"
    if not (MIN_EDGE <= w <= MAX_EDGE and MIN_EDGE <= h <= MAX_EDGE):
        return f"each edge must be {MIN_EDGE}–{MAX_EDGE} pixels"
    if not (MIN_PIXELS <= w * h <= MAX_PIXELS):
        return f"total pixels must be {MIN_PIXELS:,}–{MAX_PIXELS:,} (this is {w * h:,})"
    if max(w, h) > 3 * min(w, h):
        return "the aspect ratio may be at most 3:1"
    return None


def check_size(model: str, size: str, resolution: str | None) -> dict[str, str]:
    """Messages keyed by field for a size/resolution pair the model does not accept."""
    errors: dict[str, str] = {}
    if model == GPT_IMAGE_15:
        if size.replace("×", "x") not in GPT15_SIZES:
            errors["size"] = (f"{size!r} is not a size {model} accepts; use one of "
                              + ", ".join(GPT15_SIZES))
        if resolution is not None:
            errors["resolution"] = f"{model} has no resolution setting; remove it"
        return errors
    wxh = parse_wxh(size)
    if wxh:
        problem = _check_wxh_gpt2(*wxh)
        if problem:
            errors["size"] = f"{size!r} is not a size {model} accepts: {problem}"
    elif size != "auto" and size not in GPT2_RATIOS:
        errors["size"] = (f"{size!r} is not a size {model} accepts; use auto, one of "
                          + ", ".join(GPT2_RATIOS) + " or WxH")
    if resolution is not None:
        if str(resolution).upper() not in RESOLUTIONS:
            errors["resolution"] = f"{resolution!r} is not a resolution; use 1K, 2K or 4K"
        elif wxh or size == "auto":
            errors["resolution"] = "resolution applies only to ratio sizes such as 16:9; remove it or use a ratio"
    return errors


def check_prompt(model: str, prompt: object) -> str | None:
    """The problem with a prompt for a model, or None."""
    if not isinstance(prompt, str) or not prompt.strip():
        return "the prompt is empty"
    if len(prompt) > RULES[model].max_prompt_chars:
        limit = "2000 tokens (about 8000 characters)" if model == GPT_IMAGE_15 else "32,000 characters"
        return f"the prompt is {len(prompt):,} characters; {model} takes at most {limit}"
    return None


def check_request(req: dict) -> dict[str, str]:
    """Every rule violation of a request body (API field names), as messages keyed by field."""
    model = req.get("model")
    if model not in RULES:
        return {"model": f"{model!r} is not a model; use one of {', '.join(MODEL_NAMES)}"}
    problem = check_prompt(model, req.get("prompt"))
    errors = check_options(req)
    return {"prompt": problem, **errors} if problem else errors


def check_options(req: dict) -> dict[str, str]:
    """Rule violations of every field but the prompt (callers may memoize on those fields)."""
    errors: dict[str, str] = {}
    model = req["model"]
    rules = RULES[model]
    size = req.get("size", rules.default_size)
    if not isinstance(size, str):
        errors["size"] = f"{size!r} is not a size; write it as a string such as \"1:1\""
    else:
        errors.update(check_size(model, size, req.get("resolution")))
    quality = req.get("quality", rules.default_quality)
    if quality not in QUALITIES:
        errors["quality"] = f"{quality!r} is not a quality; use low, medium or high"
    n = req.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= rules.max_n:
        errors["n"] = f"{n!r} is not allowed; {model} takes n from 1 to {rules.max_n}" if rules.max_n > 1 \
            else f"{model} makes one image per task; n must be 1"
    background = req.get("background")
    if background is not None:
        if not rules.supports_background:
            errors["background"] = f"{model} has no background setting; remove it"
        elif background not in BACKGROUNDS:
            errors["background"] = f"{background!r} is not a background; use opaque or transparent"
    inputs = req.get("image_urls")
    if inputs is not None and not (isinstance(inputs, list) and 1 <= len(inputs) <= MAX_INPUTS):
        errors["image_urls"] = f"between 1 and {MAX_INPUTS} reference images are allowed"
    if req.get("mask_url") is not None:
        if not rules.supports_mask:
            errors["mask_url"] = f"{model} does not take a mask; masks need gpt-image-2"
        elif not inputs:
            errors["mask_url"] = "a mask needs reference images (inputs) to edit"
    return errors


# --- prices ---------------------------------------------------------------------------------
# Estimates only: the API publishes no prices, and its docs show credits_reserved: 2.5 as a
# placeholder. The planner prefers the credits the API actually reserved for the same
# model/size/quality when the lockfile has them. Keep every price in this one table.
PRICE_PER_IMAGE = {
    # gpt-image-2: credits for one medium-quality image by resolution tier; quality scales it.
    GPT_IMAGE_2: {"1K": 1.0, "2K": 2.5, "4K": 5.0},
    # gpt-image-1.5: credits for one image by quality, 1024x1024; larger sizes cost 1.5x.
    GPT_IMAGE_15: {"low": 0.4, "medium": 1.5, "high": 5.0},
}
GPT2_QUALITY_FACTOR = {"low": 0.11, "medium": 1.0, "high": 4.0}
PRICE_PER_INPUT = 0.2


def tier_of(model: str, size: str | None, resolution: str | None) -> str:
    """The resolution tier a request is billed at ('1K', '2K' or '4K')."""
    size = size or RULES[model].default_size
    if model == GPT_IMAGE_2 and size in GPT2_RATIOS:
        return normalize_resolution(resolution) or "1K"
    dims = dimensions(model, size, resolution)
    if dims is None:
        return "1K"
    # Ratio sizes land a little above their tier's budget after rounding to 16; allow for it.
    pixels = dims[0] * dims[1] / 1.05
    return "1K" if pixels <= TIER_PIXELS["1K"] else "2K" if pixels <= TIER_PIXELS["2K"] else "4K"


def estimate_credits(req: dict) -> float:
    """Estimated credits a request reserves (see the note on PRICE_PER_IMAGE)."""
    model = req["model"]
    rules = RULES[model]
    quality = req.get("quality") or rules.default_quality
    n = req.get("n") or 1
    if model == GPT_IMAGE_2:
        per = PRICE_PER_IMAGE[model][tier_of(model, req.get("size"), req.get("resolution"))]
        per *= GPT2_QUALITY_FACTOR[quality]
    else:
        per = PRICE_PER_IMAGE[model][quality]
        if dimensions(model, req.get("size")) != (1024, 1024):
            per *= 1.5
    total = per * n + PRICE_PER_INPUT * len(req.get("image_urls") or ())
    return round(total, 4)


# --- what a submission holds against the budget ----------------------------------------------
# Until the API has told this project what a kind of image really costs, a submission holds the
# highest price the table knows for that kind: the same tier at the highest quality (gpt-image-2),
# the highest quality at that size (gpt-image-1.5). The API may reserve more than the estimate
# (its docs show 2.5 for everything); this ceiling is what the budget assumes instead.


def price_kind(request: dict) -> tuple:
    """What prices an image: model, size, resolution, quality, n and the number of inputs."""
    inputs = request.get("inputs") or request.get("image_urls") or ()
    return (request.get("model"), request.get("size"), request.get("resolution"), request.get("quality"),
            request.get("n", 1) or 1, len(inputs))


def ceiling_credits(req: dict) -> float:
    """The pessimistic price of a request: never below its estimate."""
    return max(estimate_credits({**req, "quality": "high"}), estimate_credits(req))


def learnable_credits(value: object) -> float | None:
    """Credits worth learning a price from: a finite number above zero, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None
