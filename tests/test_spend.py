"""The credits ledger and `starbuild spend`: exactly the events that happened, totals that match the bill."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from conftest import KEY, api_build, cancel_after_first_submission
from starbuild.emulator import Emulator, EmulatorConfig
from starbuild.engine.outcome import Outcome
from starbuild.spend.ledger import LEDGER_NAME, Ledger, read_events
from starbuild.spend.report import parse_since, summarize
from starbuild.errors import UsageError

MISSING_INPUT = "http://starmagic.emulator/cdn/missing.png"  # the emulator's own host, serving nothing


def losing_answers(em: Emulator, word: bytes = b"LOST"):
    """The emulator, except that a submission whose body holds ``word`` is accepted (and billed)
    and its answer is lost on the way back, as when a connection drops."""

    async def app(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/images/generations":
            return await em(scope, receive, send)
        messages = [await receive()]
        while messages[-1].get("more_body"):
            messages.append(await receive())
        queue = iter(messages)

        async def replay():
            return next(queue, {"type": "http.disconnect"})

        if word not in b"".join(m.get("body", b"") for m in messages):
            return await em(scope, replay, send)

        async def swallow(message):
            pass

        await em(scope, replay, swallow)
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    return app


def config(images: str) -> str:
    return "version: 1\ndefaults:\n  model: gpt-image-2\n  size: '1:1'\n  quality: low\nimages:\n" + images


def ledger(project) -> list[dict]:
    return list(read_events(project.root.parent / ".cache" / LEDGER_NAME))


def by_asset(events: list[dict]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = defaultdict(list)
    for e in events:
        out[e["asset"]].append((e["event"], e["outcome"]))
    return dict(out)


@pytest.fixture
def mixed_build(project):
    """Three online builds; the last has a cache hit, a failed task, a lost answer and a success."""
    em = Emulator(EmulatorConfig(render="plain"))
    app = losing_answers(em)
    transport = httpx.ASGITransport(app=app)
    project.config(config("  hit: {prompt: 'first idea'}\n"))
    assert api_build(project, em, transport=transport).exit_code == 0
    project.config(config("  hit: {prompt: 'second idea'}\n"))
    assert api_build(project, em, transport=transport).exit_code == 0
    before = len(ledger(project))
    project.config(config("  hit: {prompt: 'first idea'}\n  ok: {prompt: fresh}\n"
                          f"  bad: {{prompt: broken, inputs: ['{MISSING_INPUT}']}}\n  lost: {{prompt: LOST}}\n"))
    report = api_build(project, em, transport=transport)
    outcomes = {r.name: r.outcome for r in report.results}
    assert outcomes == {"hit": Outcome.CACHED, "ok": Outcome.BUILT, "bad": Outcome.FAILED, "lost": Outcome.FAILED}
    return em, report, ledger(project)[before:], ledger(project)


def test_ledger_holds_exactly_the_events_of_a_mixed_build(mixed_build):
    em, report, events, _ = mixed_build
    assert by_asset(events) == {
        "hit": [("cache_hit", "cached")],
        "ok": [("reserve", "pending"), ("settle", "accepted")],
        "bad": [("reserve", "pending"), ("settle", "accepted"), ("failed", "failed")],
        "lost": [("reserve", "pending"), ("unknown", "unknown")],
    }
    assert len({e["run"] for e in events}) == 1
    billed = {e.task_id: e for e in em.ledger}
    for e in events:
        assert e["spec_hash"] and e["model"] == "gpt-image-2" and e["size"] == "1:1" and e["quality"] == "low"
        assert e["time"].endswith("Z") and e["n"] == 1
        if e["event"] == "settle":  # what the API reserved for exactly that task
            assert e["credits_reserved"] == billed[e["task_id"]].credits
    failed = next(e for e in events if e["event"] == "failed")
    assert failed["code"] == "image_processing_error" and failed["task_id"] in billed
    settled_bad = next(e for e in events if e["event"] == "settle" and e["asset"] == "bad")
    assert failed["task_id"] == settled_bad["task_id"]
    reserves = {e["attempt"] for e in events if e["event"] == "reserve"}
    assert reserves == {e["attempt"] for e in events if e["event"] in ("settle", "unknown")}
    hit = next(e for e in events if e["event"] == "cache_hit")
    assert hit["credits_saved"] == next(e.credits for e in em.ledger if e.request["prompt"] == "first idea")


def test_spend_json_totals_match_the_emulators_bill(mixed_build, project):
    em, _, _, _ = mixed_build
    res = project.run("spend", "--json")
    assert res.exit_code == 0, res.stderr
    spend = res.json
    lost = [e for e in em.ledger if e.request["prompt"] == "LOST"]
    answered = [e for e in em.ledger if e.request["prompt"] != "LOST"]
    assert len(answered) == 4 and len(lost) == 1
    assert spend["images"] == 4
    assert spend["credits_reserved"] == pytest.approx(sum(e.credits for e in answered))
    # The unknown outcome was in fact billed: the floor plus what it may add is the whole bill.
    assert spend["unknown"] == 1 and spend["credits_unknown"] == pytest.approx(lost[0].credits)
    assert spend["credits_reserved"] + spend["credits_unknown"] == pytest.approx(sum(e.credits for e in em.ledger))
    assert spend["cache_hits"] == 1 and spend["failed"] == 1 and spend["credits_saved"] > 0
    assert set(spend) >= {"images", "credits_reserved", "cache_hits", "credits_saved", "unknown", "groups"}
    grouped = project.run("spend", "--json", "--by", "asset").json
    groups = {g["key"]: g for g in grouped["groups"]}
    assert sorted(groups) == ["bad", "hit", "lost", "ok"]
    assert groups["hit"]["images"] == 2 and groups["hit"]["cache_hits"] == 1
    assert groups["lost"]["unknown"] == 1 and groups["lost"]["images"] == 0
    assert sum(g["credits_reserved"] for g in groups.values()) == pytest.approx(spend["credits_reserved"])
    text = project.run("spend")
    assert "4 images" in text.stdout and "unknown outcomes: 1" in text.stdout and "floor" in text.stdout
    table = project.run("spend", "--by", "asset").stdout.splitlines()
    assert table[-5].split() == ["asset", "images", "credits", "cache", "hits", "saved", "unknown"]
    assert [row.split()[0] for row in table[-4:]] == ["bad", "hit", "lost", "ok"]
    assert table[-2].split()[1:] == ["0", "0", "0", "0", "1"]
    assert KEY not in (project.root.parent / ".cache" / LEDGER_NAME).read_text()


def test_spend_since_and_grouping_by_day_and_model(mixed_build, project):
    _, _, _, everything = mixed_build
    assert project.run("spend", "--json", "--since", "2099-01-01").json["images"] == 0
    for since in ("30d", "12h", "2w", "2020-01-01", "2020-01-01T00:00:00Z"):
        assert project.run("spend", "--json", "--since", since).json["images"] == 4, since
    today = everything[-1]["time"][:10]
    assert [g["key"] for g in project.run("spend", "--json", "--by", "day").json["groups"]] == [today]
    models = project.run("spend", "--json", "--by", "model").json["groups"]
    assert [(g["key"], g["images"]) for g in models] == [("gpt-image-2", 4)]
    for bad in ("30", "3x", "yesterday", "-2d", "2026-13-01"):
        res = project.run("spend", "--since", bad)
        assert res.exit_code == 2 and "--since" in res.stderr and "Traceback" not in res.stderr, bad
    assert project.run("spend", "--by", "colour").exit_code == 2


def test_spend_since_parses_durations_and_dates():
    now = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    assert parse_since("30d", now) == now - timedelta(days=30)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_since("2026-11-01T10:00:00+02:00", now).utcoffset() == timedelta(hours=2)
    with pytest.raises(UsageError):
        parse_since("soon", now)


def test_ledger_a_killed_run_leaves_an_open_reserve_counted_unknown_and_a_torn_line_is_tolerated(tmp_path):
    path = tmp_path / LEDGER_NAME
    first = Ledger(path, tmp_path, env={})
    attempt = first.reserve("a", "h" * 64, {"model": "gpt-image-2", "size": "1:1", "quality": "low"}, 0.11)
    first.settle(attempt, "task-unified-1-aaaaaaaa", 0.11)
    first.reserve("b", "g" * 64, {"model": "gpt-image-2", "size": "1:1", "quality": "low"}, 0.11)
    first.close()  # ... and the run is killed while b's submission is on the wire, mid-way through a line:
    with open(path, "ab") as fh:
        fh.write(b'{"time":"2026-11-23T10:00:00.000Z","event":"sett')
    second = Ledger(path, tmp_path, env={})
    second.asset_result(type("R", (), {"outcome": "cached", "name": "c", "spec_hash": "f" * 64,
                                       "request": {"model": "gpt-image-2"}, "task_id": None})(), 0.5)
    second.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[3].startswith(b'{"time":"2026-11-23T10:00:00.000Z","event":"sett') and lines[3].endswith(b"sett")
    events = list(read_events(path))
    assert [e["event"] for e in events] == ["reserve", "settle", "reserve", "cache_hit"]
    totals = summarize(events)
    assert totals["images"] == 1 and totals["credits_reserved"] == pytest.approx(0.11)
    assert totals["unknown"] == 1 and totals["cache_hits"] == 1 and totals["credits_saved"] == 0.5


def test_ledger_offline_builds_record_nothing(project):
    project.config(config("  a: {prompt: placeholder}\n"))
    assert project.run("build", "--offline").exit_code == 0
    assert not (project.root.parent / ".cache" / LEDGER_NAME).exists()
    res = project.run("spend", "--json")
    assert res.exit_code == 0 and res.json["images"] == 0 and res.json["groups"] == []


def test_ledger_records_git_commit_and_branch(project):
    project.config(config("  a: {prompt: one}\n"))
    git = ["git", "-C", str(project.root), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "art/new-icons"], check=True)
    subprocess.run([*git, "add", "starbuild.yaml"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "icons"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert api_build(project, Emulator(EmulatorConfig(render="plain"))).exit_code == 0
    events = ledger(project)
    assert events and all(e["commit"] == head and e["branch"] == "art/new-icons" for e in events)
    groups = project.run("spend", "--json", "--by", "branch").json["groups"]
    assert [(g["key"], g["images"]) for g in groups] == [("art/new-icons", 1)]


def test_ledger_refused_submissions_settle_at_zero(project):
    em = Emulator(EmulatorConfig(render="plain", credit_balance=0.05))  # 402 on the first submission
    project.config(config("  a: {prompt: one}\n"))
    report = api_build(project, em)
    assert report.exit_code in (1, 3) and not em.ledger
    events = ledger(project)
    assert [(e["event"], e["outcome"], e["code"]) for e in events] == [
        ("reserve", "pending", None), ("settle", "refused", "insufficient_quota")]
    spend = summarize(events)
    assert spend["images"] == 0 and spend["credits_reserved"] == 0 and spend["unknown"] == 0


@pytest.mark.parametrize("answer_after, expected", [
    (0.3, [("reserve", "pending"), ("settle", "accepted")]),   # the late answer comes while the build stops
    (30.0, [("reserve", "pending"), ("unknown", "unknown")]),  # it never comes: the outcome is unknown
])
def test_ledger_a_build_stopped_while_submitting(project, monkeypatch, answer_after, expected):
    """Ctrl-C cancels a build after the API accepted a task but before its answer arrived."""
    from starbuild.engine import runner

    monkeypatch.setattr(runner, "LATE_ANSWER_SECONDS", 1.0)
    em = Emulator(EmulatorConfig(render="plain"))
    project.config(config("  a: {prompt: one}\n"))
    cancel_after_first_submission(project, em, answer_after)
    assert [(e["event"], e["outcome"]) for e in ledger(project)] == expected
    again = api_build(project, em)  # resumes the task, or refuses to pay again: no money moves, no event
    assert len(ledger(project)) == 2 and len(em.ledger) == 1
    spend = summarize(ledger(project))
    if expected[-1][0] == "unknown":
        assert again.exit_code == 1 and ledger(project)[-1]["code"] == "interrupted"
        assert spend["unknown"] == 1 and spend["credits_unknown"] == pytest.approx(em.ledger[0].credits)
    else:
        assert again.exit_code == 0 and again.results[0].outcome == Outcome.RESUMED
        assert spend["unknown"] == 0 and spend["credits_reserved"] == pytest.approx(em.ledger[0].credits)


def test_ledger_lines_written_together_share_a_sync_and_close_syncs_the_rest(tmp_path, monkeypatch):
    """A busy build's lines share fdatasyncs (one per line woke a thread and synced twice per image);
    every line is synced by the time the ledger is closed."""
    import time as _time

    from starbuild.spend import ledger as ledger_module

    synced: list[int] = []
    monkeypatch.setattr(ledger_module, "_sync", lambda fd: synced.append(fd))
    led = ledger_module.open_ledger(tmp_path / "cache", tmp_path)
    for i in range(30):  # a line every 2 ms, as a busy build writes them
        led.append({"event": "note", "asset": f"a{i}"})
        _time.sleep(0.002)
    _time.sleep(ledger_module._Syncer.GROUP * 6)
    assert 1 <= len(synced) <= 6, synced  # a sync per line would be 30
    before = len(synced)
    led.append({"event": "note", "asset": "last"})
    led.close()
    assert len(synced) > before
    lines = (tmp_path / "cache" / ledger_module.LEDGER_NAME).read_text().splitlines()
    assert len(lines) == 31 and '"asset":"last"' in lines[-1]
