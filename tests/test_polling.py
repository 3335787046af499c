"""The poll schedule (engine/polling.py) and callbacks (SPEC.md §11): requests per image, lateness,
the callback listener's 404s."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest

from conftest import api_build, matrix_config
from starbuild.api.callbacks import CallbackHub
from starbuild.config.callback import Callback
from starbuild.emulator import Emulator, EmulatorConfig, serve_in_thread
from starbuild.engine.outcome import Outcome
from starbuild.engine.polling import PollSchedule, Watched


# --- the schedule against a simulated API: a deterministic clock, the emulator's progress curve ---

class Sim:
    """Tasks of ``duration`` seconds submitted ``gap`` apart; looks follow the schedule exactly."""

    def __init__(self, duration: float, estimate: float | None, count: int = 40, gap: float = 0.02,
                 callbacks: bool = False, jitter: float = 0.0):
        import random

        self.now = 0.0
        self.schedule = PollSchedule(base=0.5, cap=10.0, callbacks=callbacks, clock=lambda: self.now)
        self.duration = duration
        self.tasks = [Watched(f"t{i}", started=i * gap, estimated=estimate) for i in range(count)]
        self.looks = {w.task_id: 0 for w in self.tasks}
        self.late: list[float] = []
        rng = random.Random(7)  # where the server really started each task, after our guess
        self.offset = {w.task_id: rng.uniform(0, jitter) for w in self.tasks}

    def progress(self, w: Watched) -> tuple[str, int]:
        elapsed = self.now - w.started - self.offset[w.task_id]
        if elapsed >= self.duration:
            return "completed", 100
        if elapsed < 0.1 * self.duration:
            return "pending", 0
        return "processing", min(99, max(1, int(100 * elapsed / self.duration)))

    def run(self) -> "Sim":
        todo = set(self.tasks)
        plans: dict[Watched, tuple[float, int]] = {}
        while todo:
            for w in todo:  # a task plans once submitted, again after its own look or when the learned figures move
                if w.started <= self.now and (w not in plans or plans[w][1] != self.schedule.version):
                    plans[w] = (max(self.schedule.next_look(w), self.now), self.schedule.version)
            submitted = min((t.started for t in todo if t not in plans), default=math.inf)
            w = min(plans, key=lambda t: plans[t][0], default=None)
            if w is None or submitted < plans[w][0]:
                self.now = submitted
                continue
            self.now = plans.pop(w)[0]
            status, progress = self.progress(w)
            self.looks[w.task_id] += 1
            self.schedule.observe(w, status, progress)
            if status == "completed":
                self.schedule.finished(w)
                self.late.append(self.now - (w.started + self.offset[w.task_id] + self.duration))
                todo.discard(w)
        return self

    @property
    def per_image(self) -> float:
        return sum(self.looks.values()) / len(self.tasks)


@pytest.mark.parametrize("duration,estimate", [
    (2.5, 3), (2.5, 2), (12, 12), (12, 10), (12, 15), (60, 60), (60, 45), (60, 90), (20, None), (2.5, None)])
def test_schedule_looks_shortly_after_the_end_and_rarely_before(duration, estimate):
    sim = Sim(duration, estimate).run()
    # submit + looks + download: at most 3.5 requests per image means 1.5 looks
    assert sim.per_image <= 1.5, sim.looks
    assert max(sim.late) <= 0.06 * duration + 0.2, sorted(sim.late)[-5:]
    assert min(sim.late) >= 0


def test_a_look_comes_just_after_the_predicted_end_even_where_starts_jitter():
    """At C = 50 and 1 s tasks, the delay after each predicted end is paid every round (the next
    submission waits for the look): looks come 25 ms after a steady task's end, and where the
    server starts tasks up to 150 ms after our guess, few come early."""
    steady = Sim(1.0, 1, count=300, gap=0.05).run()  # a new task every 50 ms
    assert steady.per_image <= 1.1 and min(steady.late) >= 0
    assert sorted(steady.late)[len(steady.late) // 2] <= 0.03
    jittery = Sim(1.0, 1, count=300, gap=0.05, jitter=0.15).run()
    assert jittery.per_image <= 1.1, jittery.per_image  # few looks come early
    assert max(jittery.late) <= 2 * 0.15


def test_the_first_wait_is_not_capped():
    sim = Sim(60, 60, count=1)
    w = sim.tasks[0]
    sim.schedule.probes = 99  # no probe: the plain first look
    assert sim.schedule.next_look(w) >= 60


def test_learning_wakes_tasks_planned_on_a_wrong_estimate():
    """Estimates rounded down: the first probe's progress moves every other task's first look."""
    sim = Sim(2.5, 2, count=10)
    first = [sim.schedule.next_look(w) for w in sim.tasks]
    sim.run()
    assert first[0] < 1.3 and first[5] >= 2.0  # the first tasks probe early, the others wait the estimate
    assert sim.schedule.ratio.value == pytest.approx(1.25, rel=0.03)
    assert sum(sim.looks.values()) <= 10 + 3  # one look each, plus the probes


def test_callbacks_make_polling_a_slow_safety_net():
    sim = Sim(12, 12, count=1, callbacks=True)
    sim.tasks[0].token = "t"  # its submission carried a callback URL
    assert sim.schedule.next_look(sim.tasks[0]) >= 12 + 15
    resumed = Watched("old", started=0.0, known_start=False)  # of an earlier run: no callback coming
    assert sim.schedule.next_look(resumed) == 0.0
    sim.schedule.observe(resumed, "processing", 50)
    assert sim.schedule.next_look(resumed) <= 10.0


# --- end to end, against the emulator ---------------------------------------------------------

def _task_queries(em: Emulator) -> int:
    return em.counters["task"]


@pytest.mark.parametrize("rounding", ["up", "down"])
def test_build_polls_about_once_per_image(project, rounding):
    em = Emulator(EmulatorConfig(render="plain", latency=1.5, estimate_round=rounding))
    project.config(matrix_config(8, concurrency=8))
    report = api_build(project, em, poll_base=0.5, poll_cap=10.0)
    assert report.count(Outcome.BUILT) == 8
    requests = em.counters["submit"] + em.counters["task"] + em.counters["result"]
    assert requests / 8 <= 3.5, dict(em.counters)
    assert len(em.ledger) == 8


def test_callbacks_complete_tasks_with_two_requests_per_image(project):
    em = Emulator(EmulatorConfig(render="plain", latency=1.0, allow_loopback_callbacks=True))
    project.config(matrix_config(6, concurrency=6, extra="  callback:\n    listen: 127.0.0.1:0\n"))
    with serve_in_thread(em) as url:
        report = api_build(project, em, base_url=url, poll_base=0.5, poll_cap=10.0)
    assert report.count(Outcome.BUILT) == 6, [r.error for r in report.results]
    assert em.counters["task"] == 0 and em.counters["submit"] == 6 and em.counters["result"] == 6
    delivered = [e for e in em.callbacks.log if e["outcome"] == 204]
    assert len(delivered) == 6
    urls = {e.request["callback_url"] for e in em.ledger}
    assert len(urls) == 6 and all(u.startswith("http://127.0.0.1:") for u in urls)
    assert project.lock()["assets"]["icons/i0"]["files"]


def test_callback_with_a_wrong_token_or_task_is_404_and_changes_nothing():
    async def go():
        async with CallbackHub(Callback(listen="127.0.0.1:0")) as hub:
            w = Watched("task-unified-1-abcdefgh", started=0.0)
            url = hub.register(w)
            body = {"id": w.task_id, "status": "completed", "results": ["http://x/r.png"]}
            async with httpx.AsyncClient() as client:
                wrong = await client.post(url[:-3] + "xyz", json=body)
                other = await client.post(url, json={**body, "id": "task-unified-1-zzzzzzzz"})
                get = await client.get(url)
                garbage = await client.post(url, content=b"not json")
                assert [r.status_code for r in (wrong, other, get, garbage)] == [404] * 4
                assert w.callback is None and hub.received == 0
                right = await client.post(url, json=body)
                assert right.status_code == 204 and w.callback == body
                hub.drop(w)
                again = await client.post(url, json=body)
                assert again.status_code == 404

    asyncio.run(go())


@pytest.mark.parametrize("url", ["http://hooks.example.com/x", "ftp://127.0.0.1/x", "https://"])
def test_callback_url_must_be_https_unless_loopback(project, url):
    project.config(matrix_config(1, extra=f"  callback:\n    url: {url}\n    listen: 127.0.0.1:0\n"))
    res = project.run("validate")
    assert res.exit_code == 2 and "provider.callback.url" in res.stderr, res.stderr


def test_callback_needs_a_url_unless_listening_on_loopback(project):
    project.config(matrix_config(1, extra="  callback:\n    listen: 0.0.0.0:8765\n"))
    res = project.run("validate")
    assert res.exit_code == 2 and "url is required" in res.stderr, res.stderr


@pytest.mark.parametrize("scale,rounding,expected",
                         [(1.0, "up", 3), (1.0, "down", 2), (0.5, "up", 2), (3.0, "down", 7)])
def test_the_emulator_rounds_and_scales_estimated_time_as_told(scale, rounding, expected):
    em = Emulator(EmulatorConfig(render="plain", latency=2.5, estimate_scale=scale, estimate_round=rounding))

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=em), base_url="http://e") as client:
            answer = await client.post("/v1/images/generations", headers={"Authorization": "Bearer k"},
                                       json={"model": "gpt-image-2", "prompt": "a kite", "size": "1:1"})
            return answer.json()["task_info"]["estimated_time"]

    assert asyncio.run(go()) == expected


def test_the_emulator_command_takes_the_estimate_options(monkeypatch):
    from click.testing import CliRunner

    from starbuild.emulator.command import emulator_command

    served = {}
    monkeypatch.setattr("starbuild.emulator.server.serve", lambda emulator, *a, **k: served.update(em=emulator))
    result = CliRunner().invoke(emulator_command, ["--estimate-scale", "0.8", "--estimate-round", "down"])
    assert result.exit_code == 0, result.output
    assert (served["em"].config.estimate_scale, served["em"].config.estimate_round) == (0.8, "down")
