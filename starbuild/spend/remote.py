"""The ledger in the shared remote cache, so that a team's spend can be totalled.

Each cache folder (a developer's machine, a CI runner's cache) keeps its whole ledger at
``v1/files/ledger/<id>.jsonl`` under the remote's prefix, ``<id>`` being a random name kept in
``ledger.id`` beside the ledger. The whole file is written again after each build, so lines of a
build that was killed before it could push go up with the next one. Every line carries its run id
and attempt, so the team's total is simply every file's lines together.

The remote is anything with the remote cache's small-file calls: ``put_file(name, data)``,
``get_file(name)`` and ``list_files(prefix)``, all awaitable.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from starbuild.spend.ledger import LEDGER_NAME, parse_lines

PREFIX = "ledger"
ID_NAME = "ledger.id"


def ledger_id(cache: Path) -> str:
    """This cache folder's name in the team's ledger (made once, then kept)."""
    path = cache / ID_NAME
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    if text.isalnum() and 8 <= len(text) <= 64:
        return text
    text = secrets.token_hex(8)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return text


async def push_ledger(remote: Any, cache: Path) -> bool:
    """Put this cache's ledger into the remote; False when there is none yet, or the remote refused."""
    try:
        data = (cache / LEDGER_NAME).read_bytes()
    except OSError:
        return False
    if not data:
        return False
    return bool(await remote.put_file(f"{PREFIX}/{ledger_id(cache)}.jsonl", data))


async def team_events(remote: Any) -> list[dict[str, Any]]:
    """Every event of every ledger in the remote, in no particular order; torn lines skipped."""
    events: list[dict[str, Any]] = []
    for name in await remote.list_files(PREFIX):
        if not name.endswith(".jsonl"):
            continue
        data = await remote.get_file(name)
        events.extend(parse_lines((data or b"").splitlines()))
    return events
