"""Injected faults and documented variants: present at rate 1, absent at rate 0, seeded."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from starbuild.emulator import Emulator, EmulatorConfig, Faults, ManualClock, serve_in_thread
from starbuild.emulator.config import FAILURE_CODES, rate_fields
from emulator_fixtures import KEY, anyio_backend, auth, in_process_client  # noqa: F401

pytestmark = pytest.mark.anyio

BODY = {"model": "gpt-image-2", "prompt": "a fault-tolerant robot"}


class Target:
    """An in-process emulator with a ManualClock and a client that sends the key."""

    def __init__(self, latency: float = 10.0, **faults):
        self.clock = ManualClock()
        self.emulator = Emulator(EmulatorConfig(latency=latency, faults=Faults(**faults)), clock=self.clock)
        self.client = in_process_client(self.emulator, auth(KEY))

    async def __aenter__(self) -> Target:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.__aexit__(*exc)

    async def submit(self, **changes) -> httpx.Response:
        return await self.client.post("/v1/images/generations", json={**BODY, **changes})

    async def query(self, task_id: str) -> httpx.Response:
        return await self.client.get(f"/v1/tasks/{task_id}")

    def quiet(self) -> None:
        """Turn the request faults off, e.g. to query tasks submitted under them."""
        self.emulator.config.faults = Faults(max_unfinished=self.emulator.config.faults.max_unfinished)

    async def final(self, task_id: str) -> dict:
        self.clock.advance(self.emulator.config.latency)
        return (await self.query(task_id)).json()


REQUEST_FAULTS = {
    # fault field: (status, how to recognise the answer)
    "rate_429": (429, lambda r: r.json()["error"]["code"] == "rate_limit_exceeded" and "retry-after" not in r.headers),
    "rate_429_retry_after": (429, lambda r: r.json()["error"]["type"] == "rate_limit_error"
                             and float(r.headers["retry-after"]) > 0),
    "rate_500": (500, lambda r: r.json()["error"] == {"code": "internal_error", "type": "api_error",
                                                      "message": r.json()["error"]["message"]}),
    "rate_502": (502, lambda r: r.headers["content-type"].startswith("text/html")),
    "rate_503": (503, lambda r: r.headers["content-type"].startswith("text/plain")),
}


@pytest.mark.parametrize("fault", list(REQUEST_FAULTS))
async def test_request_faults_answer_every_submit_and_query_at_rate_one(fault):
    status, recognise = REQUEST_FAULTS[fault]
    async with Target() as target:
        target.quiet()
        task_id = (await target.submit()).json()["id"]
        setattr(target.emulator.config.faults, fault, 1.0)
        for _ in range(5):
            for response in (await target.submit(), await target.query(task_id)):
                assert response.status_code == status and recognise(response), response.text
        assert len(target.emulator.ledger) == 1  # faulted submissions are never accepted
        assert target.emulator.injected[fault.removeprefix("rate_")] == 10


async def test_no_fault_shows_at_rate_zero():
    async with Target(latency=1.0) as target:
        for _ in range(40):
            response = await target.submit(n=2)
            assert response.status_code == 200
            done = await target.final(response.json()["id"])
            assert done["status"] == "completed" and all(isinstance(u, str) for u in done["results"])
            assert "usage" in done and "estimated_time" in done["task_info"] and "region" not in done
        error = (await target.submit(size="5:3")).json()["error"]
        assert error["code"] == "invalid_request" and "fallback_suggestion" not in error
    assert not target.emulator.injected
    assert len(target.emulator.ledger) == 40


async def test_reset_in_process_surfaces_as_a_transport_error():
    async with Target(rate_reset=1.0) as target:
        with pytest.raises(httpx.TransportError):
            await target.submit()
        with pytest.raises(httpx.TransportError):
            await target.query("task-unified-1757156493-abcdefgh")
        assert target.emulator.ledger == []


async def test_reset_over_http_drops_the_connection():
    emulator = Emulator(EmulatorConfig(faults=Faults(rate_reset=1.0)))
    with serve_in_thread(emulator) as url:
        async with httpx.AsyncClient(base_url=url, headers=auth(KEY)) as client:
            with pytest.raises(httpx.TransportError):
                await client.post("/v1/images/generations", json=BODY)
            emulator.config.faults.rate_reset = 0.0
            assert (await client.post("/v1/images/generations", json=BODY)).status_code == 200
    assert len(emulator.ledger) == 1 and emulator.injected["reset"] == 1


async def test_slow_answers_arrive_after_the_delay():
    async with Target(rate_slow=1.0, slow_seconds=0.3) as target:
        started = time.monotonic()
        response = await target.submit()
        assert response.status_code == 200  # slow, then answered normally
        assert time.monotonic() - started >= 0.3
        target.emulator.config.faults.rate_slow = 0.0
        started = time.monotonic()
        await target.submit()
        assert time.monotonic() - started < 0.3


async def test_failed_tasks_carry_a_task_error_with_a_configured_code():
    async with Target(rate_task_failed=1.0) as target:
        codes = set()
        for _ in range(60):
            task = (await target.submit()).json()
            assert task["status"] == "pending"
            done = await target.final(task["id"])
            assert done["status"] == "failed" and "results" not in done
            assert done["error"]["type"] == "task_error" and done["error"]["message"]
            codes.add(done["error"]["code"])
        assert codes <= set(FAILURE_CODES) and len(codes) > 5
    async with Target(rate_task_failed=1.0, failure_codes=("generation_timeout",)) as target:
        done = await target.final((await target.submit()).json()["id"])
        assert done["error"]["code"] == "generation_timeout"
    assert len(target.emulator.ledger) == 1  # failed tasks were accepted and billed


async def test_cancelled_tasks_end_with_status_cancelled():
    async with Target(rate_cancelled=1.0) as target:
        done = await target.final((await target.submit()).json()["id"])
        assert done["status"] == "cancelled" and "results" not in done


async def test_results_null_then_results():
    async with Target(rate_results_null=1.0, results_null_seconds=5.0) as target:
        task_id = (await target.submit(n=2)).json()["id"]
        done = await target.final(task_id)
        assert done["status"] == "completed" and done["progress"] == 100 and done["results"] is None
        target.clock.advance(4.9)
        assert (await target.query(task_id)).json()["results"] is None
        target.clock.advance(0.1)
        results = (await target.query(task_id)).json()["results"]
        assert len(results) == 2
        assert (await target.client.get(results[0])).status_code == 200


async def test_results_as_objects_with_urls():
    async with Target(rate_results_objects=1.0) as target:
        done = await target.final((await target.submit(n=3)).json()["id"])
        assert len(done["results"]) == 3
        for item in done["results"]:
            assert set(item) == {"url"}
            assert (await target.client.get(item["url"])).headers["content-type"] == "image/png"


async def test_legacy_envelope_has_an_integer_code_param_and_suggestion():
    async with Target(rate_legacy_envelope=1.0) as target:
        error = (await target.submit(size="5:3")).json()["error"]
        assert error["code"] == 400 and error["param"] == "size"
        assert error["type"] == "invalid_request_error" and "size" in error["message"]
        assert isinstance(error["fallback_suggestion"], str)
        assert (await target.query("nope")).json()["error"]["code"] == 400
        target.emulator.config.faults.rate_429 = 1.0
        error = (await target.submit()).json()["error"]
        assert error["code"] == 429 and error["fallback_suggestion"] == "retry after 60 seconds"
        assert error["param"] is None


async def test_extra_fields_everywhere_and_no_usage_on_queries():
    async with Target(rate_extra_fields=1.0, rate_task_failed=0.0) as target:
        task = (await target.submit()).json()
        known = {"created", "id", "model", "object", "progress", "status", "task_info", "type", "usage"}
        assert set(task) > known and "estimated_time" in task["task_info"]
        query = (await target.query(task["id"])).json()
        assert "usage" not in query and "estimated_time" not in query["task_info"]
        assert set(query) - known - {"results"}
        assert set(query["task_info"]) > {"can_cancel"}
        error = (await target.submit(n=99)).json()
        assert set(error) > {"error"} and set(error["error"]) > {"code", "message", "type"}
    async with Target(rate_extra_fields=1.0, rate_task_failed=1.0) as target:
        done = await target.final((await target.submit()).json()["id"])
        assert set(done["error"]) > {"code", "message", "type"}


async def test_max_unfinished_gives_429_until_tasks_finish():
    async with Target(max_unfinished=2) as target:
        assert (await target.submit()).status_code == 200
        target.clock.advance(5.0)
        assert (await target.submit()).status_code == 200
        refused = await target.submit()
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        async with in_process_client(target.emulator, auth("sk-another-account")) as other:
            assert (await other.post("/v1/images/generations", json=BODY)).status_code == 200  # per key
        target.clock.advance(5.0)  # the first task finishes
        assert (await target.submit()).status_code == 200
        assert (await target.submit()).status_code == 429
        target.clock.advance(10.0)
        assert (await target.submit()).status_code == 200
    assert len(target.emulator.ledger) == 5


async def test_max_unfinished_holds_under_concurrent_submissions():
    async with Target(max_unfinished=3) as target:
        responses = await asyncio.gather(*(target.submit() for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 7
    assert len(target.emulator.ledger) == 3


async def test_faults_are_deterministic_for_a_seed():
    async def outcomes(seed: int) -> list:
        emulator = Emulator(EmulatorConfig(seed=seed, faults=Faults(rate_500=0.3, rate_task_failed=0.5)),
                            clock=ManualClock())
        seen = []
        async with in_process_client(emulator, auth(KEY)) as client:
            for _ in range(40):
                response = await client.post("/v1/images/generations", json=BODY)
                seen.append(response.status_code)
            emulator.config.faults.rate_500 = 0.0
            for entry in emulator.ledger:
                seen.append((await client.get(f"/v1/tasks/{entry.task_id}")).json()["status"])
        return seen

    first = await outcomes(7)
    assert first == await outcomes(7)
    assert first != await outcomes(8)
    assert 0.1 < first[:40].count(500) / 40 < 0.5  # roughly the rate, and the same every run


async def test_one_fault_rate_does_not_reshuffle_another():
    async def failed_pattern(**extra) -> list[str]:
        async with Target(rate_task_failed=0.5, **extra) as target:
            ids = [(await target.submit()).json()["id"] for _ in range(20)]
            target.clock.advance(10.0)
            return [(await target.query(i)).json()["status"] for i in ids]

    assert await failed_pattern() == await failed_pattern(rate_results_objects=0.5, rate_extra_fields=0.5)


async def test_ledger_counts_only_accepted_submissions():
    async with Target(rate_429=0.5) as target:
        statuses = [(await target.submit()).status_code for _ in range(30)]
        statuses.append((await target.submit(size="5:3")).status_code)
        async with in_process_client(target.emulator) as anonymous:
            statuses.append((await anonymous.post("/v1/images/generations", json=BODY)).status_code)
        ledger = (await target.client.get("/_emulator/ledger")).json()
    accepted = statuses.count(200)
    assert 0 < accepted < 30 and 429 in statuses
    assert len(target.emulator.ledger) == accepted == len(ledger["submissions"])
    assert ledger["counters"]["submit"] == 32 and ledger["counters"]["status_200"] == accepted


def test_every_rate_field_is_validated():
    for name in rate_fields():
        with pytest.raises(ValueError):
            Faults(**{name: 1.5})
    with pytest.raises(ValueError):
        Faults(failure_codes=())
    assert len(Faults().failure_codes) == 13


async def test_failed_tasks_may_use_codes_a_client_does_not_know():
    async with Target(rate_task_failed=1.0, failure_codes=["brand_new_code"]) as target:
        done = await target.final((await target.submit()).json()["id"])
        assert done["error"]["code"] == "brand_new_code" and done["error"]["message"]


async def test_budget_faults_shape_the_submit_answer_but_not_the_bill():
    import json as std_json

    async with Target(reserve_per_image=1.0, rate_usage_huge=1.0, rate_progress_overflow=1.0) as target:
        answer = await target.submit(n=3)
        assert answer.status_code == 200 and '"progress": 1e400' in answer.text
        assert '"credits_reserved": 1e400' in answer.text
        assert std_json.loads(answer.text)["id"] == target.emulator.ledger[0].task_id
        assert target.emulator.ledger[0].credits == 3.0
    async with Target(rate_usage_missing=1.0) as target:
        assert "usage" not in (await target.submit()).json()
    async with Target(rate_usage_nan=1.0) as target:
        assert "NaN" in (await target.submit()).text
    async with Target(rate_usage_negative=1.0) as target:
        assert (await target.submit()).json()["usage"]["credits_reserved"] < 0


async def test_slow_submit_answers_come_after_the_task_is_billed():
    import asyncio

    async with Target(rate_slow_submit=1.0, slow_submit_seconds=0.3) as target:
        pending = asyncio.ensure_future(target.submit())
        await asyncio.sleep(0.1)
        assert len(target.emulator.ledger) == 1 and not pending.done()
        assert (await pending).status_code == 200
