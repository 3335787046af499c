"""The credits ledger: ``ledger.jsonl`` in the cache folder, one JSON event a line, append-only.

Events, each with the run's id, git commit and branch, and the asset's spec_hash, model, size,
quality and n:

- ``reserve``    written before a submission is sent; ``credits_estimated``.
- ``settle``     the API answered that submission: ``outcome`` ``accepted`` with the task id and the
                 ``credits_reserved`` it reported, or ``refused`` (429, 5xx, 402 ...: nothing billed).
- ``unknown``    the answer was lost or the run was stopped while it was on the wire: it may have
                 been billed. A ``reserve`` that no later line of its run settles (the run was
                 killed) counts as unknown too.
- ``failed``     a paid task ended failed (its failure code in ``code``).
- ``cache_hit``  a stale asset was served from a stored result instead of paid: ``credits_saved``.

Each line is one write(2) of the whole line, made before the request it announces is sent, and
fdatasync'd right after on a helper thread (the event loop never waits on the disk). Lines are
never rewritten. A line torn by a kill is skipped by readers, and the next writer ends
it first so that its own event starts on a line of its own. No prompt, URL or key is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from starbuild.errors import StoreError
from starbuild.safefile import write_all

log = logging.getLogger("starbuild")
LEDGER_NAME = "ledger.jsonl"
FIELDS = ("time", "event", "run", "attempt", "commit", "branch", "asset", "spec_hash", "model", "size",
          "quality", "n", "task_id", "credits_estimated", "credits_reserved", "credits_saved", "outcome", "code")
CACHE_OUTCOMES = ("cached", "pulled")  # asset outcomes that reuse a paid image instead of paying
# Where CI services name the branch of a detached checkout (a pull request's merge commit).
BRANCH_VARS = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BUILDKITE_BRANCH", "BRANCH_NAME")


def iso_time(seconds: float) -> str:
    """UTC time with milliseconds, as every ledger line writes it."""
    stamp = datetime.fromtimestamp(seconds, timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def new_run_id(seconds: float) -> str:
    """A sortable, unique id of one build: its UTC start time and a random suffix."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def git_context(root: Path, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(commit, branch) of the project's checkout; (None, None) outside git or without git."""
    commit = branch = None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD", "--abbrev-ref", "HEAD"],
                             capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is not None and out.returncode == 0:
        lines = out.stdout.split()
        if len(lines) == 2:
            commit, branch = lines[0], (None if lines[1] == "HEAD" else lines[1])
    if branch is None:
        branch = next((env[v] for v in BRANCH_VARS if env.get(v)), None)
    return commit, branch


def _code(value: Any) -> str | None:
    """A failure code as the ledger keeps it: a short word, whatever a server sent."""
    if value is None:
        return None
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", str(value))[:64]


def _price(request: Mapping[str, Any] | None) -> float | None:
    """The price table's figure for a request as the lockfile shows it (inputs by path)."""
    from starbuild.models import estimate_credits

    req = dict(request or {})
    inputs = req.pop("inputs", None) or ()
    req.pop("mask", None)
    try:
        return estimate_credits({**req, **({"image_urls": ["x"] * len(inputs)} if inputs else {})})
    except (KeyError, TypeError, ValueError):
        return None


def _request_fields(request: Mapping[str, Any] | None) -> dict[str, Any]:
    req = request or {}
    return {"model": req.get("model"), "size": req.get("size"), "quality": req.get("quality"),
            "n": req.get("n", 1)}


class Ledger:
    """The writer of one build's events into one ledger file."""

    def __init__(self, path: Path, root: Path | None = None, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._root = root or Path.cwd()
        self._env = os.environ if env is None else env
        self._clock = clock
        self.run = new_run_id(clock())
        # Asked of git once, now: not between a submission's turn under the rate limit and its sending.
        self._git = git_context(self._root, self._env)
        self._fd: int | None = None
        self._syncer: _Syncer
        self._seq = 0
        self._open_attempts: dict[str, dict[str, Any]] = {}

    # --- the events ---------------------------------------------------------------------------

    def reserve(self, name: str, spec_hash: str | None, request: Mapping[str, Any] | None,
                estimate: float) -> str:
        """Before a submission is sent; the attempt id that its settle or unknown event names."""
        self._seq += 1
        attempt = f"{self.run}.{self._seq}"
        base = {"asset": name, "spec_hash": spec_hash, **_request_fields(request), "credits_estimated": estimate}
        self.append({"event": "reserve", "attempt": attempt, **base, "outcome": "pending"}, strict=True)
        self._open_attempts[attempt] = base
        return attempt

    def settle(self, attempt: str, task_id: str | None, credits: float | None) -> None:
        """The API accepted the submission and reserved ``credits`` (None when it did not say)."""
        self._close(attempt, "settle", task_id=task_id, credits_reserved=credits, outcome="accepted")

    def refused(self, attempt: str, code: str | None) -> None:
        """The API refused the submission, or it never left the machine: nothing was billed."""
        self._close(attempt, "settle", credits_reserved=0.0, outcome="refused", code=_code(code))

    def unknown(self, attempt: str, code: str | None) -> None:
        """The submission was sent and its answer is lost: it may have been billed."""
        self._close(attempt, "unknown", outcome="unknown", code=_code(code))

    def failed(self, name: str, spec_hash: str | None, request: Mapping[str, Any] | None, task_id: str,
               credits: float | None, code: str | None) -> None:
        """A paid task ended failed."""
        self.append({"event": "failed", "asset": name, "spec_hash": spec_hash, **_request_fields(request),
                     "task_id": task_id, "credits_reserved": credits, "outcome": "failed", "code": _code(code)})

    def asset_result(self, result: Any, estimate: float) -> None:
        """An asset's result: one served from a stored or shared image is a cache hit, worth what that
        image was paid (``result.paid``), else ``estimate``."""
        outcome = getattr(result.outcome, "value", result.outcome)
        if outcome not in CACHE_OUTCOMES:
            return
        paid = getattr(result, "paid", None)
        saved = paid if isinstance(paid, (int, float)) and not isinstance(paid, bool) and paid > 0 else \
            (estimate or _price(result.request))
        self.append({"event": "cache_hit", "asset": result.name, "spec_hash": result.spec_hash,
                     **_request_fields(result.request), "task_id": result.task_id,
                     "credits_saved": saved, "outcome": outcome})

    def _close(self, attempt: str, event: str, **fields: Any) -> None:
        base = self._open_attempts.pop(attempt, None)
        if base is not None:
            self.append({"event": event, "attempt": attempt, **base, **fields})

    # --- the file -----------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any], *, strict: bool = False) -> None:
        """Append one event line and fsync it.

        A failure to write raises only when ``strict`` (a reservation: nothing is sent then); after
        the money has moved it is logged, since the build must still journal and store what it paid.
        """
        try:
            self._write(record)
        except StoreError as exc:
            if strict:
                raise
            log.warning("%s", exc)

    def _write(self, record: Mapping[str, Any]) -> None:
        full = {k: None for k in FIELDS}
        full.update(time=iso_time(self._clock()), run=self.run, commit=self._git[0], branch=self._git[1])
        full.update(record)
        data = (json.dumps(full, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            write_all(self._open(), data)
            self._syncer.poke()
        except OSError as exc:
            raise StoreError(f"cannot write the credits ledger {self.path}: {exc.strerror or exc}") from None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if _ends_torn(self.path):
                os.write(fd, b"\n")
            self._fd, self._syncer = fd, _Syncer(fd, self.path)
        return self._fd

    def close(self) -> None:
        """Wait for the last lines to reach the disk, then close the file."""
        if self._fd is not None:
            self._syncer.close()
            os.close(self._fd)
            self._fd = None


class _Syncer:
    """fdatasyncs the ledger on a thread soon after each write, so the build never waits on the disk.

    One sync covers every line written before it: the thread waits GROUP seconds after the first
    unsynced line, so that the lines of a busy build share syncs (one per line woke a thread and
    synced the disk twice per paid image). A line is on its way to the disk the moment its write
    returns (a killed build keeps it); the sync makes it survive a power cut as well.
    """

    GROUP = 0.05

    def __init__(self, fd: int, path: Path):
        self._fd, self._path = fd, path
        self._wanted = threading.Event()
        self._woken = threading.Event()  # set only to cut a grouping wait short, at close
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="starbuild-ledger-sync", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wanted.set()

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            if not self._stopping:
                self._woken.wait(self.GROUP)  # lines written meanwhile share this sync
            self._wanted.clear()
            if self._stopping:
                return
            self._sync()

    def _sync(self) -> None:
        try:
            _sync(self._fd)
        except OSError as exc:
            log.warning("cannot sync the credits ledger %s: %s", self._path, exc.strerror or exc)

    def close(self) -> None:
        self._stopping = True
        self._woken.set()
        self._wanted.set()
        self._thread.join()
        self._sync()


def open_ledger(cache: Path, root: Path, env: Mapping[str, str] | None = None) -> Ledger:
    """The ledger of a project's cache folder, for one build."""
    return Ledger(cache / LEDGER_NAME, root, env)


class NullLedger:
    """Records nothing: placeholder builds (nothing is paid) and runners without a ledger."""

    run = None

    def reserve(self, *args: Any, **kwargs: Any) -> str:
        return ""

    def settle(self, *args: Any, **kwargs: Any) -> None:
        pass

    refused = unknown = failed = asset_result = settle

    def close(self) -> None:
        pass


# The data and the file's size reach the disk; its times need not (cheaper than a full fsync).
_sync = getattr(os, "fdatasync", os.fsync)


def _ends_torn(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every event of a ledger file in order; a torn or foreign line is skipped, a missing file is empty."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot read the credits ledger {path}: {exc.strerror or exc}") from None
    with fh:
        yield from parse_lines(fh)


def parse_lines(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The events among ledger lines; a torn or foreign line is skipped."""
    for raw in lines:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            yield event
