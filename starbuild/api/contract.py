"""The API contract as a product: STARMAGIC_API.md's documented behaviour, checked against any server.

``run_checks`` runs every check of ``contract_checks.CHECKS`` against a server and returns one
CheckResult each. Only documented behaviour is checked (status codes, error codes and types, the
shapes of task objects and upload answers, sizes, what is ignored); the emulator's own wording and
policies stay in its tests.

Billing: a check declares how many tasks it submits that the API bills. It runs only when the
allowance left covers them, and every such submission is counted before it is sent and refused
past the allowance, so a run never submits more billable tasks than allowed. Probes of
parameters the API documents as refused (400) are not billable; a server that accepts one
anyway has billed a task: that check fails, it is counted, and no further refusal probe is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PASS, FAIL, SKIP = "pass", "fail", "skipped"


class CheckFailed(Exception):
    """The server did not behave as documented."""


class OverBudget(Exception):
    """A billable submission would pass the allowance; nothing was sent."""


def expect(condition: bool, message: str) -> None:
    """Fail the check with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


@dataclass(frozen=True)
class Check:
    """One documented behaviour, how many billable tasks it submits, and what it needs first."""

    name: str
    doc: str
    run: Callable[["Probe"], Awaitable[None]]
    billable: int = 0
    needs: str | None = None  # the check whose outcome (a completed task) this one reuses


@dataclass
class CheckResult:
    name: str
    status: str
    detail: str = ""
    billed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "billed": self.billed}


@dataclass
class ContractReport:
    results: list[CheckResult]
    allowance: int
    billed: int

    @property
    def ok(self) -> bool:
        return all(r.status != FAIL for r in self.results)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def to_json(self) -> dict[str, Any]:
        return {"checks": [r.to_json() for r in self.results], "allowance": self.allowance, "billed": self.billed,
                "summary": {s: self.count(s) for s in (PASS, FAIL, SKIP)}}


@dataclass
class Probe:
    """The server under test, as the checks see it, with the billing allowance enforced."""

    client: httpx.AsyncClient      # the API host, with the key
    files: httpx.AsyncClient       # the file service's host, with the key
    anon: httpx.AsyncClient        # no key at all (result links and auth checks)
    allowance: int
    task_timeout: float = 300.0
    billed: int = 0
    refusals_billed: int = 0       # documented refusals the server accepted (and so billed)
    shared: dict[str, Any] = field(default_factory=dict)  # what a check leaves for those that need it

    async def submit(self, body: dict, *, billable: bool = True) -> httpx.Response:
        """POST a task; a billable one only within the allowance, counted before it is sent."""
        if billable:
            if self.billed >= self.allowance:
                raise OverBudget(f"would submit billable task {self.billed + 1} of {self.allowance} allowed")
            self.billed += 1
        elif self.refusals_billed:
            raise OverBudget("the server billed a submission it should have refused; no more such probes")
        try:
            response = await self.client.post("/v1/images/generations", json=body)
        except httpx.ConnectError:  # never reached the server: nothing was submitted
            self.billed -= 1 if billable else 0
            raise
        if not billable and response.status_code == 200:
            self.billed += 1
            self.refusals_billed += 1
        return response

    async def accepted(self, body: dict) -> dict:
        response = await self.submit(body)
        expect(response.status_code == 200, f"submit answered {response.status_code}, not 200: {_text(response)}")
        task = response.json()
        expect(isinstance(task, dict) and isinstance(task.get("id"), str), "the answer has no task id")
        return task

    async def settle(self, task_id: str) -> dict:
        """The task's terminal answer (results present when completed), polling with backoff."""
        deadline = time.monotonic() + self.task_timeout
        wait = 0.1
        while True:
            response = await self.client.get(f"/v1/tasks/{task_id}")
            expect(response.status_code == 200, f"task query answered {response.status_code}: {_text(response)}")
            body = response.json()
            status = body.get("status")
            expect(status in ("pending", "processing", "completed", "failed", "cancelled"),
                   f"undocumented task status {status!r}")
            if status in ("failed", "cancelled") or (status == "completed" and body.get("results")):
                return body
            expect(time.monotonic() < deadline, f"task {task_id} did not finish within {self.task_timeout:g} s")
            await asyncio.sleep(wait)
            wait = min(wait * 2, 2.0)

    async def completed(self, body: dict) -> dict:
        done = await self.settle((await self.accepted(body))["id"])
        expect(done.get("status") == "completed", f"the task ended {done.get('status')}: {done.get('error')}")
        return done


def result_urls(task: dict) -> list[str]:
    """Result links as strings, from either documented form (strings or {"url": ...})."""
    return [r["url"] if isinstance(r, dict) else r for r in task.get("results") or []]


def _text(response: httpx.Response) -> str:
    return " ".join(response.text.split())[:200]


async def _run_one(check: Check, probe: Probe, outcomes: dict[str, str]) -> CheckResult:
    if check.needs and outcomes.get(check.needs) != PASS:
        return CheckResult(check.name, SKIP, f"needs {check.needs}, which did not pass")
    if check.billable > probe.allowance - probe.billed:
        return CheckResult(check.name, SKIP, f"skipped by budget: submits {check.billable} billable task(s); "
                                             f"allow them with --allow-billing")
    before = probe.billed
    try:
        await check.run(probe)
        status, detail = PASS, ""
    except CheckFailed as exc:
        status, detail = FAIL, str(exc)
    except OverBudget as exc:
        status, detail = SKIP, f"skipped by budget: {exc}"
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        status, detail = FAIL, f"{type(exc).__name__}: {exc}"
    return CheckResult(check.name, status, detail, probe.billed - before)


async def arun_checks(base_url: str, key: str, *, files_url: str | None = None, allowance: int = 0,
                      checks: list[Check] | None = None, task_timeout: float = 300.0,
                      transport: httpx.AsyncBaseTransport | None = None) -> ContractReport:
    """Run the contract checks against the server at ``base_url``; never bills past ``allowance``."""
    from starbuild.api.contract_checks import CHECKS

    def client(base: str, key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=base, headers=headers, timeout=60.0, transport=transport,
                                 follow_redirects=True)

    async with client(base_url, key) as api, client(files_url or base_url, key) as files, \
            client(base_url, None) as anon:
        probe = Probe(api, files, anon, allowance, task_timeout)
        results: list[CheckResult] = []
        outcomes: dict[str, str] = {}
        for check in CHECKS if checks is None else checks:
            result = await _run_one(check, probe, outcomes)
            outcomes[check.name] = result.status
            results.append(result)
    return ContractReport(results, allowance, probe.billed)


def run_checks(base_url: str, key: str, **kwargs: Any) -> ContractReport:
    """Synchronous wrapper of arun_checks."""
    return asyncio.run(arun_checks(base_url, key, **kwargs))
