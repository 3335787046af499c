"""What must hold before a request can leave the machine, checked before anything is sent.

A base URL without a scheme or host, or a key that cannot travel in an HTTP header (non-ASCII,
a newline, a space inside), would fail inside the HTTP stack after the submission was journaled,
and look like a submission whose outcome is unknown. They are refused here instead: nothing was
sent, nothing may have been billed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starbuild.config.project import Project
from starbuild.errors import ConfigError, UsageError


def url_problem(url: str) -> str | None:
    """Why a base URL cannot be used, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL with a host; write it as https://HOST[/PATH]"
    if any(ord(c) < 33 or ord(c) > 126 for c in url):
        return f"{url!r} contains spaces, control or non-ASCII characters"
    return None


def key_problem(key: str) -> str | None:
    """Why a key cannot be sent in an Authorization header, or None (the key itself is never shown)."""
    if any(ord(c) < 33 or ord(c) > 126 for c in key):
        return ("contains characters an HTTP header cannot carry (non-ASCII, a space, a newline or "
                "another control character); copy the key again")
    return None


def check_sendable(project: Project, env: dict[str, str], key: str) -> tuple[str, str]:
    """The base and files URLs to use; refused (exit 2) when they or the key could not be sent."""
    provider = project.config.provider
    urls = []
    for var, field in (("STARMAGIC_BASE_URL", "base_url"), ("STARMAGIC_FILES_URL", "files_url")):
        value = env.get(var) or getattr(provider, field)
        problem = url_problem(value)
        if problem and env.get(var):
            raise UsageError(f"{var}: {problem}")
        if problem:
            raise ConfigError(project.issue(("provider", field), problem))
        urls.append(value)
    problem = key_problem(key)
    if problem:
        raise UsageError(f"the API key in {provider.api_key_env} {problem}")
    return urls[0], urls[1]
