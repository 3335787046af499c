"""Which hosts may receive the API key: https anywhere, plain http only on this machine."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost",)


def is_loopback_host(host: str | None) -> bool:
    """True for localhost (and *.localhost), 127.0.0.0/8 and ::1."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost") or host == "::1":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback  # the forms the JSON Schema can match too


def api_url_problem(url: str) -> str | None:
    """Why a base_url/files_url may not receive the key, or None when it may."""
    if not isinstance(url, str) or not url.strip():
        return "is empty; give a URL such as https://api.starmagic.ai"
    if url != url.strip() or any(ord(c) < 0x21 or ord(c) == 0x7f for c in url):
        return f"{url!r} has spaces or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    if parts.scheme not in ("https", "http") or not host:
        return f"{url!r} is not an http(s) URL with a host; write it as https://host"
    if parts.username is not None or parts.password is not None:
        return f"{url!r} holds credentials; the key comes from the environment, never from a URL"
    if parts.query or parts.fragment:
        return f"{url!r} has a query or fragment; give only scheme, host, port and path"
    if parts.scheme == "http" and not is_loopback_host(host):
        return (f"{url!r} is plain http to another machine, which would send the API key unencrypted; "
                "use https (http is allowed only for localhost / 127.0.0.1 / ::1)")
    return None


def api_urls(base_url: str, files_url: str, env: dict[str, str]) -> tuple[str, str]:
    """The API and upload hosts after the environment's overrides; UsageError for an unsafe one.

    When only STARMAGIC_BASE_URL is set, uploads go there too: a build pointed at a local server
    must not send the key (and the user's reference images) to the real file host.
    """
    from starbuild.errors import UsageError

    env_base, env_files = env.get("STARMAGIC_BASE_URL"), env.get("STARMAGIC_FILES_URL")
    base = env_base or base_url
    files = env_files or (env_base if env_base else files_url)
    for var, value in (("STARMAGIC_BASE_URL", env_base), ("STARMAGIC_FILES_URL", env_files)):
        problem = api_url_problem(value) if value else None
        if problem:
            raise UsageError(f"{var}: {problem}")
    return base, files
