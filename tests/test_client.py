"""The API client and scheduler policies: retries, advice from the server, lost answers, secrecy."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from conftest import KEY, api_build, cancel_after_first_submission, matrix_config
from starbuild.api.client import RetryPolicy, StarMagicClient
from starbuild.api.wire import parse_error, parse_task
from starbuild.emulator import Emulator, EmulatorConfig, Faults, serve_in_thread
from starbuild.errors import RateLimitError, TransientApiError, UnknownOutcomeError
from starbuild.engine.outcome import Outcome
from starbuild.engine.runner import AdaptiveLimit

BODY = {"model": "gpt-image-2", "prompt": "a kite", "size": "1:1", "quality": "low"}


def _client(app, delays: list[float], policy: RetryPolicy | None = None) -> StarMagicClient:
    async def record(seconds: float) -> None:
        delays.append(seconds)

    return StarMagicClient("http://api", KEY, transport=httpx.ASGITransport(app=app), sleep=record,
                           retry=policy or RetryPolicy(attempts=4, base=0.5, cap=8, max_advised=120), seed=1)


def test_client_honours_retry_after():
    em = Emulator(EmulatorConfig(faults=Faults(rate_429_retry_after=1.0)))
    delays: list[float] = []

    async def go():
        async with _client(em, delays) as c:
            await c.task("task-unified-1757156493-abcdefgh")

    with pytest.raises(RateLimitError):
        asyncio.run(go())
    assert len(delays) == 3 and len(set(delays)) == 1 and delays[0] > 0


def test_client_submits_once_and_leaves_the_retry_to_the_caller():
    em = Emulator(EmulatorConfig(faults=Faults(rate_429_retry_after=1.0)))
    delays: list[float] = []

    async def go():
        async with _client(em, delays) as c:
            await c.submit(BODY)

    with pytest.raises(RateLimitError) as info:
        asyncio.run(go())
    assert delays == [] and em.counters["submit"] == 1 and em.ledger == []
    assert info.value.retry_after and info.value.retry_after > 0


def test_client_honours_fallback_suggestion_of_legacy_envelope():
    em = Emulator(EmulatorConfig(faults=Faults(rate_500=1.0, rate_legacy_envelope=1.0)))
    delays: list[float] = []

    async def go():
        async with _client(em, delays, RetryPolicy(attempts=3, base=0.5, cap=8, max_advised=30)) as c:
            await c.task("task-unified-1757156493-abcdefgh")

    with pytest.raises(TransientApiError) as info:
        asyncio.run(go())
    assert delays == [30, 30]  # "retry after 60 seconds", capped by the policy
    assert info.value.status == 500


def test_client_backoff_is_capped_and_jittered():
    em = Emulator(EmulatorConfig(faults=Faults(rate_503=1.0)))
    delays: list[float] = []

    async def go():
        async with _client(em, delays, RetryPolicy(attempts=8, base=0.5, cap=4, max_advised=30)) as c:
            await c.task("task-unified-1757156493-abcdefgh")

    with pytest.raises(TransientApiError):
        asyncio.run(go())
    assert len(delays) == 7 and max(delays) <= 4
    assert all(0.5 * min(4, 0.5 * 2 ** i) <= d <= min(4, 0.5 * 2 ** i) for i, d in enumerate(delays))


def test_client_never_sends_key_to_result_links(project):
    seen: list[tuple[str, str | None]] = []
    em = Emulator(EmulatorConfig(render="plain"))

    async def spy(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            seen.append((scope["path"], headers.get(b"authorization", b"").decode() or None))
        await em(scope, receive, send)

    project.config(matrix_config(2))
    assert api_build(project, em, transport=httpx.ASGITransport(app=spy)).exit_code == 0
    api_calls = [auth for path, auth in seen if path.startswith("/v1/")]
    downloads = [auth for path, auth in seen if not path.startswith("/v1/")]
    assert api_calls and all(a == f"Bearer {KEY}" for a in api_calls)
    assert downloads and all(a is None for a in downloads)


def test_client_lost_submit_answer_is_reported_not_repeated(project):
    em = Emulator(EmulatorConfig(render="plain", faults=Faults(rate_reset=1.0)))
    project.config(matrix_config(1))
    with serve_in_thread(em) as url:
        report = api_build(project, em, base_url=url)
        assert report.exit_code == 1
        error = report.results[0].error
        assert "may have been accepted and billed" in error
        submits = em.counters["submit"]
        assert submits == 1  # sent once, never retried
        again = api_build(project, em, base_url=url)
        assert again.results[0].outcome == Outcome.FAILED
        assert "--retry-unknown" in again.results[0].error and em.counters["submit"] == submits
        em.config.faults = Faults()
        third = api_build(project, em, base_url=url, retry_unknown=True)
    assert third.exit_code == 0 and third.results[0].outcome == Outcome.BUILT


def test_client_wire_variants_parse():
    objects = parse_task({"id": "t", "status": "completed", "results": [{"url": "u1"}, {"url": "u2"}]})
    assert objects.results == ("u1", "u2") and objects.done
    racing = parse_task({"id": "t", "status": "completed", "results": None})
    assert not racing.done
    cancelled = parse_task({"id": "t", "status": "cancelled", "extra": {"x": 1}})
    assert cancelled.status == "failed" and cancelled.error_code == "request_cancelled" and cancelled.done
    bare = parse_task({"id": "t", "status": "processing", "progress": 40})
    assert bare.credits_reserved is None and bare.estimated_time is None and bare.progress == 40
    legacy = parse_error({"error": {"code": 429, "message": "slow down", "param": None,
                                    "fallback_suggestion": "retry after 60 seconds"}}, 429)
    assert legacy.code == "429" and legacy.retry_after == 60
    html = parse_error(None, 502)
    assert html.code == "502"


def test_adaptive_limit_starts_small_finds_the_cap_and_holds_it():
    now = [0.0]

    async def go():
        limit = AdaptiveLimit(32, clock=lambda: now[0])
        assert limit.limit == AdaptiveLimit.START
        for _ in range(8):
            limit.success()  # slow start: one more per accepted submission
        assert limit.limit == AdaptiveLimit.START + 8
        limit.throttle(holding=8)  # the server refused while holding 8 of ours
        assert limit.limit == 8
        for _ in range(100):
            limit.success()
        assert limit.limit == 8  # no probing above the cap for a while
        now[0] += AdaptiveLimit.HOLD + 1
        for _ in range(8):
            limit.success()
        assert limit.limit == 9  # then one step per `limit` successes
        limit.throttle()  # a 429 with no task of ours held: halve, once per burst
        assert limit.limit == 4
        limit.throttle()
        assert limit.limit == 4

    asyncio.run(go())


def test_adaptive_limit_wakes_waiters_in_order_one_slot_each():
    async def go():
        limit = AdaptiveLimit(2)
        order: list[int] = []

        async def worker(i: int) -> None:
            await limit.acquire()
            order.append(i)
            await asyncio.sleep(0.01)
            limit.release()

        await asyncio.gather(*(worker(i) for i in range(6)))
        assert order == list(range(6)) and limit.in_use == 0

        await limit.acquire()
        await limit.acquire()
        waiter = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        waiter.cancel()  # a cancelled waiter gives up its place without taking a slot
        await asyncio.gather(waiter, return_exceptions=True)
        limit.release()
        assert limit.in_use == 1 and not limit._waiters

    asyncio.run(go())


def test_submit_429s_free_the_slot_and_never_leave_an_unknown_outcome(project):
    """A 429 on submit is not retried while holding the slot or the journal's 'submitting' mark:
    a build that gives up on it leaves a plain unbuilt asset, submitted normally next time."""
    em = Emulator(EmulatorConfig(render="plain", faults=Faults(rate_429_retry_after=1.0)))
    project.config(matrix_config(2, extra="  task_timeout: 1\n"))
    report = api_build(project, em, retry=RetryPolicy(attempts=2, base=0.01, cap=0.02, max_advised=0.05))
    assert report.exit_code == 1 and em.ledger == []
    assert all("429" in r.error for r in report.results)
    em.config.faults = Faults()
    again = api_build(project, em)
    assert again.exit_code == 0 and {r.outcome for r in again.results} == {Outcome.BUILT}


def test_rate_limit_spaces_submissions(project):
    em = Emulator(EmulatorConfig(render="plain"))
    project.config(matrix_config(4, extra="  rate_limit: 20/sec\n"))
    api_build(project, em)
    times = [e.created for e in em.ledger]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # The limiter spaces the starts; the first journal write (a sqlite file being created) may
    # delay one submission by a few ms, so the span is checked, and each gap only loosely.
    assert len(gaps) == 3 and times[-1] - times[0] >= 3 * 0.045 and min(gaps) >= 0.02, gaps


def test_a_finished_task_frees_its_slot_before_its_download(project):
    """`concurrency` counts tasks the server is working on: with one slot, the second submission
    goes out while the first image is still downloading."""
    em = Emulator(EmulatorConfig(render="plain"))
    events: list[str] = []

    async def spy(scope, receive, send):
        path = scope.get("path", "")
        if path.startswith("/cdn/"):
            events.append("download start")
            await asyncio.sleep(0.3)
            await em(scope, receive, send)
            events.append("download end")
            return
        if path == "/v1/images/generations":
            events.append("submit")
        await em(scope, receive, send)

    project.config(matrix_config(2, concurrency=1))
    report = api_build(project, em, transport=httpx.ASGITransport(app=spy))
    assert report.exit_code == 0 and len(em.ledger) == 2
    assert events.index("submit", 1) < events.index("download end")


def test_adaptive_limit_a_waiter_cancelled_as_a_slot_frees_raises_cancelled():
    async def go():
        limit = AdaptiveLimit(1)
        await limit.acquire()
        first = asyncio.create_task(limit.acquire())
        second = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        first.cancel()  # its place is dropped by the release below before it runs
        limit.release()
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError) and results[1] is None
        assert limit.in_use == 1 and not limit._waiters

    asyncio.run(go())


def test_ctrl_c_while_a_submission_is_on_the_wire_never_pays_twice(project):
    """Cancelled (as Ctrl-C cancels a build) after the server accepted the task but before its
    answer arrived: the next build reports the outcome unknown instead of submitting again."""
    em = Emulator(EmulatorConfig(render="plain"))
    project.config(matrix_config(1))
    cancel_after_first_submission(project, em, 30)
    again = api_build(project, em)
    assert again.exit_code == 1 and "--retry-unknown" in again.results[0].error
    assert len(em.ledger) == 1
    third = api_build(project, em, retry_unknown=True)
    assert third.exit_code == 0 and len(em.ledger) == 2  # paid again only when asked to
