"""The one exception tree of starbuild, and the process exit codes.

    StarbuildError                 exit 1 unless a subclass says otherwise
    ├── ConfigError                exit 2: the config (or a file it names) is wrong; holds every issue
    ├── UsageError                 exit 2: the command line is wrong
    ├── RefusedError               exit 3: starbuild will not run this build
    │   ├── BudgetError            the estimate or the reserved credits pass the allowed budget
    │   ├── FrozenError            --frozen found stale assets
    │   ├── LockedError            another run holds the project lock
    │   └── MissingKeyError        no API key in the environment
    ├── ApiError                   the StarMagic API answered with an error, or could not be reached
    │   ├── TransientApiError      worth retrying: connection errors, timeouts, 429, 5xx
    │   │   └── RateLimitError     429; carries the advised delay when the server gave one
    │   ├── UnknownOutcomeError    a submission was sent but its answer was lost: it may be billed
    │   ├── NotSentError           the request could not leave the machine (bad URL, bad key characters)
    │   ├── TaskFailedError        the API ran the task and reported it failed (with a failure code)
    │   ├── AuthError              401 / 403
    │   ├── QuotaError             402
    │   ├── BadRequestError        400
    │   └── NotFoundError          404 (task or result link expired or unknown)
    ├── VerifyError                a downloaded result is not the image that was planned
    ├── StoreError                 the asset directory or object store cannot be written
    └── RemoteCacheError           the shared remote cache failed (fatal only with --require-remote)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    """Process exit codes of the CLI (SPEC.md §3)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    REFUSED = 3


class StarbuildError(Exception):
    """Base of every error starbuild raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED


@dataclass(frozen=True)
class Issue:
    """One located problem in a config: file, line, column, field path and message."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        from starbuild.text import printable  # config text may hold escape sequences: never raw

        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return printable(text)


class ConfigError(StarbuildError):
    """The config, or a file it names, is invalid; carries every issue found."""

    exit_code = ExitCode.USAGE

    def __init__(self, issues: list[Issue] | Issue | str):
        if isinstance(issues, str):
            issues = [Issue("starbuild.yaml", None, None, "", issues)]
        elif isinstance(issues, Issue):
            issues = [issues]
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class UsageError(StarbuildError):
    """The command line asks for something that cannot be done."""

    exit_code = ExitCode.USAGE


class RefusedError(StarbuildError):
    """starbuild refuses to run the build (budget, frozen, locked, missing key)."""

    exit_code = ExitCode.REFUSED


class BudgetError(RefusedError):
    """The build would reserve more credits than allowed."""


class FrozenError(RefusedError):
    """--frozen found assets that would need the API."""


class LockedError(RefusedError):
    """Another starbuild run holds the project lock."""


class MissingKeyError(RefusedError):
    """The API key variable is not set."""


class ApiError(StarbuildError):
    """An error answer from the StarMagic API, or no answer at all."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class TransientApiError(ApiError):
    """Worth retrying: connection failure, timeout, 429 or 5xx."""


class RateLimitError(TransientApiError):
    """429: too many requests or too many unfinished tasks."""


class UnknownOutcomeError(ApiError):
    """A submission reached the network but no answer came back; it may have been accepted and billed."""


class NotSentError(ApiError):
    """The request never left the machine (a URL or header that cannot be sent): nothing was billed."""


class TaskFailedError(ApiError):
    """The API accepted the task and then reported it failed or cancelled; ``code`` says why."""


class AuthError(ApiError):
    """401 or 403: the key is missing, invalid, or may not do this."""


class QuotaError(ApiError):
    """402: the account is out of credits."""


class BadRequestError(ApiError):
    """400: the API rejected the parameters."""


class NotFoundError(ApiError):
    """404: unknown or expired task or result link."""


class VerifyError(StarbuildError):
    """A downloaded image does not decode or does not have the planned dimensions."""


class StoreError(StarbuildError):
    """The object store or asset directory could not be written."""


class RemoteCacheError(StarbuildError):
    """The shared remote cache could not be read or written."""
