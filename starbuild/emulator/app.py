"""The emulated StarMagic API (STARMAGIC_API.md) as one ASGI app.

The Emulator object is the app: tests and ``--offline`` builds call it in-process through
httpx.ASGITransport, ``starbuild emulator`` serves it with uvicorn. It keeps tasks, uploaded
files, a ledger of accepted submissions and request counters in memory, moves time with an
injectable clock and injects faults from a seeded random source.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from urllib.parse import unquote, urlsplit

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from starbuild import models

from .callbacks import CallbackSender
from .config import EmulatorConfig, default_clock
from .faults import (
    ESCAPE_TEXT, RESET, TASK_FAILURE_MESSAGES, Dice, drip, drop_connection, error_body, request_fault, submit_answer,
)
from .files import FileStore, file_endpoint, upload_endpoint
from .references import MISSING, Missing, Reference, check_references
from .render import RenderCache, render_placeholder
from .tasks import PENDING_SHARE, RESULT_NAME, TASK_PREFIX, Task, estimated_time, new_task_id, task_view
from .validation import applicable, check_submission

_FILE_PATH = re.compile(r"^/(?:cdn/files/([^/]+)/.*|api/v1/files/download/([^/]+))$")
_RESULT_PATH = re.compile(r"^/cdn/([^/]+)$")


@dataclass(frozen=True)
class LedgerEntry:
    """One accepted (billed) submission."""

    task_id: str
    model: str
    request: dict
    credits: float
    created: float


def endpoint_of(path: str) -> str | None:
    """The counter name of a request path."""
    if path == "/v1/images/generations":
        return "submit"
    if path.startswith("/v1/tasks/"):
        return "task"
    if path.startswith("/api/v1/files/upload/"):
        return "upload"
    if path.startswith(("/cdn/files/", "/api/v1/files/download/")):
        return "file"
    if path.startswith("/cdn/"):
        return "result"
    if path.startswith("/_emulator/"):
        return "ledger"
    return None


class Emulator:
    """The emulated API; an ASGI app with its state readable from Python."""

    def __init__(self, config: EmulatorConfig | None = None, clock: Callable[[], float] | None = None):
        self.config = config if config is not None else EmulatorConfig()
        self.clock = clock or default_clock
        self.ledger: list[LedgerEntry] = []
        self.counters: Counter = Counter()
        self.injected: Counter = Counter()  # faults injected, by kind ("500", "reset", "task_failed", ...)
        self.tasks: dict[str, Task] = {}
        self.files = FileStore()
        self.renders = RenderCache()
        self._in_flight: dict[str, list[Task]] = {}
        self._dice = Dice(self.config.seed)
        self.callbacks = CallbackSender(
            self.clock, lambda task: task_view(task, self.clock(), self.config.public_url),
            lambda: self.config.callback_retry_delays, lambda: self.config.callback_timeout)
        handlers = {HTTPException: self._http_exception}
        api_routes = [
            Route("/v1/images/generations", self._submit, methods=["POST"]),
            Route("/v1/tasks/{task_id}", self._task, methods=["GET"]),
            Route("/cdn/{name}", self._result, methods=["GET"]),
            Route("/_emulator/ledger", self._ledger, methods=["GET"]),
        ]
        file_routes = [
            Route("/api/v1/files/upload/{kind}", partial(upload_endpoint, self), methods=["POST"]),
            Route("/cdn/files/{file_id}/{name:path}", partial(file_endpoint, self), methods=["GET"]),
            Route("/api/v1/files/download/{file_id}", partial(file_endpoint, self), methods=["GET"]),
        ]
        self._api_app = Starlette(routes=api_routes, exception_handlers=handlers)
        self._files_app = Starlette(routes=file_routes, exception_handlers=handlers)
        # One host for both when they are configured alike (file routes first: /cdn/files/...).
        self._both_app = Starlette(routes=file_routes + api_routes, exception_handlers=handlers)

    def _app_for(self, scope) -> Starlette:
        """The file service answers on its own host only, the API on the others, as on the platform."""
        files = urlsplit(self.config.files_url).netloc.lower()
        if files == urlsplit(self.config.public_url).netloc.lower():
            return self._both_app
        host = next((v.decode("latin-1").lower() for k, v in scope.get("headers", ()) if k == b"host"), "")
        return self._files_app if host == files else self._api_app

    def reset(self) -> None:
        """Forget every task, file, ledger entry and counter; restart the fault dice."""
        self.tasks.clear()
        self.ledger.clear()
        self.counters.clear()
        self.injected.clear()
        self.files.clear()
        self.renders.clear()
        self.callbacks.clear()
        self._in_flight.clear()
        self._dice = Dice(self.config.seed)

    async def __call__(self, scope, receive, send) -> None:
        app = self._app_for(scope)
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        endpoint = endpoint_of(scope["path"])
        if endpoint:
            self.counters[endpoint] += 1
        self.callbacks.poke()

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                self.counters[f"status_{message['status']}"] += 1
            await send(message)

        faults = self.config.faults
        if endpoint in ("task", "result") and self._roll(f"drip_{endpoint}", getattr(faults, f"rate_drip_{endpoint}")):
            counting_send = await drip(counting_send, self.config.faults.drip_seconds)
        if endpoint in ("submit", "task"):
            fault = await request_fault(self, scope.get("headers", []))
            if fault is RESET:
                await drop_connection(send)
                return
            if fault is not None:
                await fault(scope, receive, counting_send)
                return
        try:
            await app(scope, receive, counting_send)
        except ClientDisconnect:
            pass  # the client hung up mid-request (a killed build): nobody is left to answer

    # --- answers ---------------------------------------------------------------------------

    def error(self, status: int, code: str, message: str, *, param: str | None = None,
              headers: dict | None = None, files: bool = False) -> JSONResponse:
        """An error answer in the documented envelope (or the older one, under that fault)."""
        faults = self.config.faults
        legacy = self._roll("legacy_envelope", faults.rate_legacy_envelope)
        if self._roll("escape_text", faults.rate_escape_text):
            message = ESCAPE_TEXT + message
        extra = self._roll("extra_fields_error", faults.rate_extra_fields, count=False)
        body = error_body(status, code, message, legacy=legacy, param=param, extra=extra)
        if files:  # the file service's own envelope, with the API's error object alongside
            body = {"success": False, "code": status, "msg": message, **body}
        return JSONResponse(body, status_code=status, headers=headers)

    def _roll(self, kind: str, rate: float, *, count: bool = True) -> bool:
        hit = self._dice.roll(kind, rate)
        if hit and count:
            self.injected[kind] += 1
        return hit

    async def _http_exception(self, request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        return self.error(exc.status_code, code, exc.detail, headers=exc.headers)

    def _owner(self, request: Request) -> str | None:
        """Who is calling (a digest of the key, never the key), or None when not allowed."""
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        expected = self.config.api_key
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            return None
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def _unauthorized(self, *, files: bool = False) -> JSONResponse:
        return self.error(401, "unauthorized", "Missing or invalid API key: send Authorization: Bearer <key>",
                          files=files)

    # --- submit and query ------------------------------------------------------------------

    async def _submit(self, request: Request) -> Response:
        owner = self._owner(request)
        if owner is None:
            return self._unauthorized()
        try:
            body = await request.json()
        except ValueError:
            return self.error(400, "invalid_request", "body: is not valid JSON", param="body")
        if not isinstance(body, dict):
            return self.error(400, "invalid_request", "body: must be a JSON object", param="body")
        body = applicable(body)
        problems = check_submission(body, allow_loopback_callbacks=self.config.allow_loopback_callbacks)
        if problems:
            message = "; ".join(f"{field}: {text}" for field, text in problems.items())
            return self.error(400, "invalid_request", message, param=next(iter(problems)))
        model = body["model"]
        if model in self.config.denied_models:
            return self.error(403, "model_access_denied", f"This key may not use the model {model}")
        now = self.clock()
        start = now + PENDING_SHARE * self.config.latency
        failure, base = await check_references(body, lambda url: self._resolve(url, request), start)
        # From here to the ledger entry nothing awaits, so concurrent submissions cannot both
        # squeeze under the same limit.
        self._prune(now)
        limit = self.config.faults.max_unfinished
        if limit is not None and self._unfinished(owner, now) >= limit:
            return self.error(429, "rate_limit_exceeded",
                              f"Too many tasks in flight (at most {limit}); wait for running tasks")
        per_image = self.config.faults.reserve_per_image
        credits = models.estimate_credits(body) if per_image is None else per_image * (body.get("n") or 1)
        balance = self.config.credit_balance
        if balance is not None and sum(e.credits for e in self.ledger) + credits > balance + 1e-9:
            return self.error(402, "insufficient_quota", "Insufficient credits for this request; top up")
        task = self._new_task(body, owner, now, credits, failure, base)
        self._render_ahead(task, now)
        answer = task_view(task, now, self.config.public_url, submitted=True)
        if self._roll("slow_submit", self.config.faults.rate_slow_submit):
            await anyio.sleep(self.config.faults.slow_submit_seconds)  # accepted and billed already
        return submit_answer(self, answer)

    def _new_task(self, body: dict, owner: str, now: float, credits: float,
                  failure: tuple[str, str] | None, base: bytes | None) -> Task:
        model = body["model"]
        width, height = models.dimensions(model, body.get("size"), body.get("resolution")) or (1024, 1024)
        created = int(now)
        latency = max(0.0, self.config.latency)
        task = Task(
            id=new_task_id(created, self.tasks.__contains__), created=created, submitted=now,
            model=model, request=copy.deepcopy(body), owner=owner, n=body.get("n") or 1,
            width=width, height=height, credits=credits, latency=latency,
            callback_url=body.get("callback_url"), base=(lambda: base) if base else None,
            transparent=body.get("background") == "transparent",
            estimated=estimated_time(latency, self.config.estimate_scale, self.config.estimate_round))
        if self.config.fresh_samples:
            task.sample = task.id  # ids are random: every submission draws its own image
        self._decide_outcome(task, failure)
        self.tasks[task.id] = task
        self._in_flight.setdefault(owner, []).append(task)
        self.ledger.append(LedgerEntry(task.id, model, copy.deepcopy(body), credits, now))
        if task.callback_url:
            self.callbacks.watch(task)
        return task

    def _decide_outcome(self, task: Task, failure: tuple[str, str] | None) -> None:
        faults = self.config.faults
        task.extra_fields = self._roll("extra_fields", faults.rate_extra_fields)
        if failure is not None:
            task.outcome = "failed"
            task.failure_code, task.failure_message = failure
            task.ends_after = PENDING_SHARE * task.latency  # fails when it tries to fetch its inputs
        elif self._roll("task_failed", faults.rate_task_failed):
            task.outcome = "failed"
            task.failure_code = self._dice.choice("failure_code", faults.failure_codes)
        elif self._roll("cancelled", faults.rate_cancelled):
            task.outcome = "cancelled"
        else:
            if self._roll("results_null", faults.rate_results_null):
                task.results_null_seconds = faults.results_null_seconds
            task.results_objects = self._roll("results_objects", faults.rate_results_objects)
        if task.outcome == "failed" and self._roll("escape_text_task", faults.rate_escape_text):
            task.failure_message = ESCAPE_TEXT + (task.failure_message or TASK_FAILURE_MESSAGES.get(
                task.failure_code or "", "The generation failed"))

    def _prune(self, now: float) -> None:
        """Forget expired tasks; they were stored in submission order."""
        for task_id in list(self.tasks):
            if now < self.tasks[task_id].submitted + self.config.task_ttl:
                break
            del self.tasks[task_id]

    def _unfinished(self, owner: str, now: float) -> int:
        running = [t for t in self._in_flight.get(owner, ()) if t.unfinished(now)]
        self._in_flight[owner] = running
        return len(running)

    def _live_task(self, task_id: str, now: float) -> Task | None:
        task = self.tasks.get(task_id)
        if task is None or now >= task.submitted + self.config.task_ttl:
            return None
        return task

    async def _task(self, request: Request) -> Response:
        owner = self._owner(request)
        if owner is None:
            return self._unauthorized()
        task_id = request.path_params["task_id"]
        if not task_id.startswith(TASK_PREFIX):
            return self.error(400, "invalid_task_id", f"Invalid task id {task_id!r}: ids start with {TASK_PREFIX}")
        now = self.clock()
        task = self._live_task(task_id, now)
        if task is None:
            return self.error(404, "task_not_found", f"Task {task_id} does not exist or has expired")
        if task.owner != owner:
            return self.error(403, "permission_denied", "This key may not see this task")
        return JSONResponse(task_view(task, now, self.config.public_url))

    # --- results and files -----------------------------------------------------------------

    def _result_task(self, name: str, now: float) -> tuple[Task, int] | None:
        match = RESULT_NAME.match(name)
        task = self._live_task(match.group(1), now) if match else None
        if task is None or task.outcome != "completed":
            return None
        index = int(match.group(2))
        if not 0 <= index < task.n or not task.done_at <= now < task.done_at + self.config.ttl:
            return None
        return task, index

    def _render_ahead(self, task: Task, now: float) -> None:
        """Render a task's images halfway through it, as the service has them ready when the task
        ends: a result link then answers at once instead of rendering while many are asked for."""
        halfway = (task.done_at - now) / 2
        if (task.outcome != "completed" or halfway < 0.1 or self.clock is not default_clock
                or self._unfinished(task.owner, now) * task.n > self.renders.max_items // 2):
            return  # nothing to overlap, a test's manual clock, or more than the cache keeps
        import asyncio

        loop = asyncio.get_running_loop()

        def render(index: int) -> None:
            try:
                self._render(task, index)
            except Exception:  # noqa: BLE001 (the download renders again and answers for it)
                pass

        def start() -> None:
            if self.tasks.get(task.id) is task:  # (not after a reset or the task's expiry)
                for index in range(task.n):
                    loop.run_in_executor(None, render, index)

        loop.call_later(halfway, start)

    def _render(self, task: Task, index: int) -> bytes:
        return self.renders.get_or_render((task.id, index), lambda: render_placeholder(
            task.request["prompt"], task.model, task.width, task.height, index, self.config.render,
            task.base() if task.base else None, transparent=task.transparent, sample=task.sample))

    async def _result(self, request: Request) -> Response:
        found = self._result_task(request.path_params["name"], self.clock())
        if found is None:
            return self.error(404, "not_found", "This result link does not exist or has expired")
        data = await run_in_threadpool(self._render, *found)
        return Response(data, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

    def _resolve(self, url: str, request: Request) -> Reference | Missing | None:
        """What the emulator serves at ``url``: a Reference, MISSING, or None for other hosts."""
        parts = urlsplit(url)
        own = {urlsplit(self.config.public_url).netloc.lower(), urlsplit(self.config.files_url).netloc.lower(),
               request.headers.get("host", "").lower()}
        if parts.netloc.lower() not in own:
            return None
        path = unquote(parts.path)
        if match := _FILE_PATH.match(path):
            record = self.files.record(match.group(1) or match.group(2))
            if record is None:
                return MISSING
            return Reference(lambda: record.data, record.created, record.expires_at)
        if match := _RESULT_PATH.match(path):
            result = RESULT_NAME.match(match.group(1))
            task = self.tasks.get(result.group(1)) if result else None
            if task is None or task.outcome != "completed" or int(result.group(2)) >= task.n:
                return MISSING
            index = int(result.group(2))
            until = min(task.done_at + self.config.ttl, task.submitted + self.config.task_ttl)
            return Reference(lambda: self._render(task, index), task.done_at, until)
        return MISSING

    async def _ledger(self, request: Request) -> Response:
        return JSONResponse({
            "submissions": [asdict(entry) for entry in self.ledger],
            "counters": dict(self.counters),
            "injected": dict(self.injected),
            "credits_total": round(sum(entry.credits for entry in self.ledger), 4),
        })
