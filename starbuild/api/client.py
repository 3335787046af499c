"""StarMagicClient: submit, poll, download and upload over httpx, with the retry policy.

httpx errors become ApiError subclasses here and only here. The key is sent only to the API and
file hosts, never to result links (they are public CDN URLs), and is never logged. Text a server
sends (error messages, failure reasons) is scrubbed of the key and of control characters before
it becomes part of any error. Every request has an overall deadline, and every download one for
all its attempts: a body that drips a byte a second cannot hold a build past it.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlsplit

import httpx

from starbuild.api.pool import network_transport
from starbuild.api.wire import Task, parse_error, parse_task
from starbuild.safefile import in_folder, write_all
from starbuild.errors import (
    ApiError, AuthError, BadRequestError, NotFoundError, NotSentError, QuotaError, RateLimitError,
    TransientApiError, UnknownOutcomeError,
)
from starbuild.text import scrub

log = logging.getLogger("starbuild.http")
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
REQUEST_DEADLINE = 60.0    # seconds for one API request, answer body included
DOWNLOAD_DEADLINE = 300.0  # seconds for one result download, every attempt included


@dataclass
class RetryPolicy:
    """Capped, jittered exponential backoff that honours the server's advice up to a bound."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 30.0
    max_advised: float = 120.0

    def delay(self, attempt: int, advised: float | None, rng: random.Random) -> float:
        if advised is not None:
            return min(max(advised, 0.0), self.max_advised)
        return min(self.cap, self.base * 2 ** attempt) * rng.uniform(0.5, 1.0)


def in_process_transport(app) -> httpx.AsyncBaseTransport:
    """A transport that sends every request to an ASGI app (the emulator) in this process."""
    return httpx.ASGITransport(app=app)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def error_from_response(resp: httpx.Response, secrets: tuple[str, ...] = ()) -> ApiError:
    """The ApiError for an error answer, from either envelope, its text scrubbed of ``secrets``."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    body = parse_error(data, resp.status_code)
    status = resp.status_code
    advised = _retry_after(resp) or body.retry_after
    text = scrub(f"HTTP {status} {body.code[:100]}: {body.message[:500]}", secrets)
    kind: type[ApiError]
    if status == 429:
        kind = RateLimitError
    elif status >= 500 or status == 408:
        kind = TransientApiError
    elif status in (401, 403):
        kind = AuthError
    elif status == 402:
        kind = QuotaError
    elif status in (404, 410):
        kind = NotFoundError
    elif status == 400:
        kind = BadRequestError
    else:
        kind = ApiError
    return kind(text, status=status, code=scrub(body.code[:100], secrets), retry_after=advised)


class StarMagicClient:
    """An async client of the StarMagic API; use as ``async with StarMagicClient(...) as c``."""

    def __init__(self, base_url: str, api_key: str | None, *, files_url: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, retry: RetryPolicy | None = None,
                 timeout: float = 60.0, seed: int | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_rate_limit: Callable[[], None] | None = None, deadline: float = REQUEST_DEADLINE,
                 download_deadline: float = DOWNLOAD_DEADLINE):
        self.base_url = base_url.rstrip("/")
        self.files_url = (files_url or base_url).rstrip("/")
        self._key = api_key
        self.retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        self._sleep = sleep
        self.on_rate_limit = on_rate_limit
        self.http = httpx.AsyncClient(transport=transport or network_transport(), timeout=timeout,
                                      follow_redirects=True, trust_env=False)
        self.requests = 0
        self.deadline = deadline
        self.download_deadline = download_deadline

    def scrub(self, text: object) -> str:
        """Text fit to show: the key (in any form) removed, control characters escaped."""
        return scrub(text, (self._key,) if self._key else ())

    async def __aenter__(self) -> "StarMagicClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    async def _send(self, method: str, url: str, *, auth: bool, once: bool = False, deadline: float | None = None,
                    retry_also: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """One logical request with retries.

        ``once``: a single attempt whose errors go to the caller, and a lost answer (the request
        may have been received) is UnknownOutcomeError, for requests that must not be repeated blind.
        ``retry_also``: statuses retried like a 5xx for this request.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise NotSentError(f"{url!r} is not an http(s) URL with a host; the request was not sent")
        headers = self._auth() if auth else {}
        deadline = deadline or self.deadline
        err: ApiError | None = None
        attempts = 1 if once else self.retry.attempts
        for attempt in range(attempts):
            self.requests += 1
            try:
                async with asyncio.timeout(deadline):
                    resp = await self.http.request(method, url, headers=headers, **kwargs)
            except (httpx.DecodingError, httpx.TooManyRedirects) as exc:
                # An answer came, but not one that can be read (a body its Content-Encoding does not
                # decode) or followed: the request was received, maybe billed.
                if once:
                    raise UnknownOutcomeError(
                        f"the answer to the submission could not be read ({type(exc).__name__}); "
                        "it may have been accepted and billed") from None
                if isinstance(exc, httpx.TooManyRedirects):
                    raise ApiError(f"{urlsplit(url).netloc}: too many redirects") from None
                err = TransientApiError(f"{urlsplit(url).netloc}: an answer that does not decode")
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL, UnicodeError) as exc:
                # Refused by the HTTP stack before a byte was sent: nothing can have been billed.
                raise NotSentError(f"the request to {urlsplit(url).netloc or url!r} could not be sent: "
                                   f"{type(exc).__name__}") from None
            except TimeoutError:
                if once:
                    raise UnknownOutcomeError(
                        f"no complete answer within {deadline:g} s after the submission was sent; "
                        "it may have been accepted and billed") from None
                err = TransientApiError(f"{urlsplit(url).netloc}: no complete answer within {deadline:g} s")
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                err = TransientApiError(f"cannot reach {urlsplit(url).netloc}: {exc or type(exc).__name__}")
            except (httpx.TransportError, OSError) as exc:
                if once:
                    raise UnknownOutcomeError(
                        f"the connection was lost after the submission was sent ({type(exc).__name__}); "
                        "it may have been accepted and billed") from None
                err = TransientApiError(f"{urlsplit(url).netloc}: {exc or type(exc).__name__}")
            else:
                log.debug("%s %s -> %s", method, url, resp.status_code)
                if resp.status_code < 400:
                    return resp
                err = error_from_response(resp, (self._key,) if self._key else ())
                if resp.status_code in retry_also and not isinstance(err, TransientApiError):
                    err = TransientApiError(str(err), status=err.status, code=err.code)
                if once or not isinstance(err, TransientApiError):
                    raise err
                if isinstance(err, RateLimitError) and self.on_rate_limit:
                    self.on_rate_limit()
            if attempt + 1 < attempts:
                await self._sleep(self.retry.delay(attempt, err.retry_after, self._rng))
        assert err is not None
        raise err

    async def submit(self, body: dict[str, Any]) -> Task:
        """POST /v1/images/generations, once: the accepted task (its id must be journaled at once).

        Not retried here: the caller journals each attempt, and frees its slot on a refusal.
        """
        resp = await self._send("POST", f"{self.base_url}/v1/images/generations", auth=True, once=True,
                                json=body)
        try:
            return parse_task(resp.json())
        except ValueError:
            raise UnknownOutcomeError("the API accepted the submission but its answer has no task id; "
                                      "it may have been billed") from None

    async def task(self, task_id: str) -> Task:
        """GET /v1/tasks/{id}. A 400 is retried: a query of an id the API issued has nothing in it to be
        invalid, so the refusal comes from something on the way (a proxy, a gateway), and the task
        is paid for; giving up on it at once would leave its image for the next build."""
        resp = await self._send("GET", f"{self.base_url}/v1/tasks/{quote(task_id, safe='')}", auth=True,
                                retry_also=(400,))
        try:
            task = parse_task(resp.json())
        except ValueError:
            raise TransientApiError(f"task {self.scrub(task_id)}: the answer is not a task object") from None
        if task.error_message is not None or task.error_code is not None:
            task = replace(task, error_message=None if task.error_message is None else self.scrub(task.error_message),
                           error_code=None if task.error_code is None else self.scrub(task.error_code)[:100])
        return task

    async def download(self, url: str, dest_dir: Path, max_bytes: int = MAX_DOWNLOAD_BYTES,
                       transform: Callable[[], Any] | None = None) -> tuple[Path, str, int]:
        """Stream a result link into a temp file in dest_dir: (path, sha256, bytes), within the deadline.

        ``transform`` makes, per attempt, an object whose ``feed(part)`` and ``end()`` return the
        bytes to write in place of what arrived (a provenance stamp); the hash and size are of
        what was written. ``max_bytes`` limits what arrives.
        """
        try:
            async with asyncio.timeout(self.download_deadline):
                return await self._download_attempts(url, dest_dir, max_bytes, transform)
        except TimeoutError:
            raise TransientApiError(f"the download did not finish within {self.download_deadline:g} s") from None

    async def _download_attempts(self, url: str, dest_dir: Path, max_bytes: int,
                                 transform: Callable[[], Any] | None) -> tuple[Path, str, int]:
        err: ApiError | None = None
        for attempt in range(self.retry.attempts):
            self.requests += 1
            try:
                return await self._download_once(url, dest_dir, max_bytes, transform() if transform else None)
            except (httpx.TransportError, OSError) as exc:
                if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                    raise
                err = TransientApiError(f"download interrupted: {type(exc).__name__}")
            except httpx.DecodingError:
                err = TransientApiError("the result's body does not decode as its Content-Encoding says")
            except httpx.TooManyRedirects:
                raise ApiError("the result link redirects too many times") from None
            except TransientApiError as exc:
                err = exc
            if attempt + 1 < self.retry.attempts:
                await self._sleep(self.retry.delay(attempt, err.retry_after, self._rng))
        assert err is not None
        raise err

    async def _download_once(self, url: str, dest_dir: Path, max_bytes: int, transform: Any) -> tuple[Path, str, int]:
        digest = hashlib.sha256()
        received = size = 0
        fd = -1
        tmp = dest_dir / f".download-{os.getpid()}-{self._rng.getrandbits(48):012x}.part"
        try:
            async with self.http.stream("GET", url) as resp:
                log.debug("GET <result link> -> %s", resp.status_code)  # links are never logged
                if resp.status_code >= 400:
                    await resp.aread()
                    err = error_from_response(resp, (self._key,) if self._key else ())
                    if isinstance(err, NotFoundError) or resp.status_code == 403:
                        raise NotFoundError("the result link has expired or is gone (links live 24 hours)",
                                            status=resp.status_code)
                    raise err
                fd = in_folder(tmp, lambda: os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                async for chunk in resp.aiter_bytes(1 << 16):
                    received += len(chunk)
                    if received > max_bytes:
                        raise ApiError(f"the result is larger than {max_bytes // 2**20} MB; refused")
                    size += _write_all(fd, transform.feed(chunk) if transform else chunk, digest)
                if transform is not None:
                    size += _write_all(fd, transform.end(), digest)
                os.fsync(fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
                fd = -1
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        return tmp, digest.hexdigest(), size

    async def upload(self, path: Path, mime: str) -> tuple[str, float | None]:
        """Upload a local file to the file service: (file_url, expires_at as unix seconds or None)."""
        from starbuild.safefile import read_regular

        try:  # checked when planned, read again now: it must still be a regular file
            data = read_regular(path, MAX_DOWNLOAD_BYTES)
        except OSError as exc:
            raise ApiError(f"cannot upload {path.name}: {exc.strerror or exc}") from None
        # An upload of up to 50 MB gets the time of a download, not of an API call.
        resp = await self._send("POST", f"{self.files_url}/api/v1/files/upload/stream", auth=True,
                                deadline=self.download_deadline, files={"file": (path.name, data, mime)})
        try:
            body = resp.json()
            info = body["data"]
            url = info["file_url"]
        except (ValueError, KeyError, TypeError):
            raise ApiError("the file service answered without a file_url") from None
        return url, _expiry(info.get("expires_at"))


def _write_all(fd: int, data: bytes, digest: Any) -> int:
    """Write all of ``data`` and hash it; its length."""
    digest.update(data)
    write_all(fd, data)
    return len(data)


def _expiry(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None
