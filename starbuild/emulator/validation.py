"""Checks of a submission body that the API answers with 400 invalid_request."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from starbuild import models

MAX_CALLBACK_URL = 2048


def applicable(body: dict) -> dict:
    """The submission as the API reads it: fields STARMAGIC_API.md says are ignored are dropped.

    A ``mask_url`` without ``image_urls`` is silently ignored, and ``resolution`` applies only to
    gpt-image-2 ratio sizes (not ``auto`` or ``WxH``). starbuild's planner refuses both before
    sending; the emulator answers what the documented API answers.
    """
    out = dict(body)
    if out.get("mask_url") is not None and not out.get("image_urls"):
        del out["mask_url"]
    size = out.get("size", "auto")
    if out.get("model") == models.GPT_IMAGE_2 and out.get("resolution") is not None and isinstance(size, str) \
            and (size.strip() == "auto" or models.parse_wxh(size)):
        del out["resolution"]
    return out


def check_submission(body: dict, *, allow_loopback_callbacks: bool) -> dict[str, str]:
    """Every problem of a submission body, as messages keyed by field."""
    model = body.get("model")
    if not isinstance(model, str) or model not in models.MODEL_NAMES:
        return {"model": f"{model!r} is not a model; use one of {', '.join(models.MODEL_NAMES)}"}
    try:
        problems = models.check_request(body)
    except (TypeError, ValueError, AttributeError) as exc:  # values of surprising types
        problems = {"request": f"a field has a value of the wrong type ({exc})"}
    inputs = body.get("image_urls")
    if isinstance(inputs, list) and "image_urls" not in problems:
        for i, url in enumerate(inputs):
            if not _is_http_url(url):
                problems["image_urls"] = f"item {i} ({url!r}) is not an http(s) URL"
                break
    mask = body.get("mask_url")
    if mask is not None and "mask_url" not in problems and not _is_http_url(mask):
        problems["mask_url"] = f"{mask!r} is not an http(s) URL"
    if body.get("callback_url") is not None:
        problem = check_callback_url(body["callback_url"], allow_loopback=allow_loopback_callbacks)
        if problem:
            problems["callback_url"] = problem
    return problems


def check_callback_url(url: object, *, allow_loopback: bool) -> str | None:
    """Why the API would refuse this callback URL, or None when it is acceptable."""
    if not isinstance(url, str) or not url:
        return "must be a URL string"
    if len(url) > MAX_CALLBACK_URL:
        return f"is {len(url)} characters long; at most {MAX_CALLBACK_URL} are allowed"
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return f"{url!r} is not a valid URL"
    if not host:
        return f"{url!r} has no host"
    if allow_loopback:
        return None if parts.scheme in ("http", "https") else "must be an http(s) URL"
    if parts.scheme != "https":
        return "must use https"
    host = host.rstrip(".")  # "localhost." is localhost
    if host == "localhost" or host.endswith(".localhost") or _is_private_ip(host):
        return "must not point at a private or loopback address"
    return None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, including the legacy IPv4 spellings resolvers accept
    (``127.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``); None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _is_private_ip(host: str) -> bool:
    ip = _ip(host)
    if ip is None:
        return False  # a name; the real service would resolve it, the emulator cannot
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
            or ip.is_unspecified or ip.is_multicast)


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)
