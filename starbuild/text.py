"""Text that reaches a terminal, a JSON report or a web page: control characters escaped, secrets removed.

Server answers, file names and config values are not ours: a message that carries an escape
sequence could clear or retitle the user's terminal, and a server that echoes request headers
would print the key. Everything shown passes through ``printable`` (and ``scrub`` when a secret
is known).
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what is shown.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def _escape(match: re.Match) -> str:
    ch = match.group(0)
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def printable(text: object) -> str:
    """The text with every control character written as an escape (``\\e``, ``\\x07``, ``\\n``)."""
    return _CONTROL.sub(_escape, str(text))


def secret_forms(secret: str) -> list[str]:
    """The ways a secret may come back in a server's text: as is, URL-quoted, base64."""
    forms = {secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()}
    return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)


def scrub(text: object, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """The text with each secret (in any of its forms) replaced by ``***`` and controls escaped."""
    out = str(text)
    for secret in secrets:
        if secret:
            for form in secret_forms(secret):
                out = out.replace(form, "***")
    return printable(out)
