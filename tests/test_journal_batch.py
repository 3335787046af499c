"""Journal writes of one event-loop turn share a commit; intend is committed before it returns."""

from __future__ import annotations

import asyncio

from starbuild.engine.journal import STORED, SUBMITTED, SUBMITTING, Journal

REQ = {"model": "gpt-image-2", "prompt": "a kite", "size": "1:1", "quality": "low"}


def test_intend_is_visible_to_another_process_at_once_and_the_rest_at_the_end_of_the_turn(tmp_path):
    async def go():
        journal = Journal(tmp_path / "journal")
        other = Journal(tmp_path / "journal")  # a separate connection: what a killed run leaves
        try:
            journal.intend("a" * 64, "kite", REQ)
            assert other.get("a" * 64)["state"] == SUBMITTING  # durable before the submission is sent
            journal.submitted("a" * 64, "kite", REQ, "task-unified-1-abcdefgh", 0.1)
            journal.submitted("b" * 64, "bird", REQ, "task-unified-1-bbbbbbbb", 0.1)
            assert journal.get("a" * 64)["state"] == SUBMITTED  # this run sees its own writes
            assert other.get("a" * 64)["state"] == SUBMITTING and other.get("b" * 64) is None
            commits = journal.commits
            await asyncio.sleep(0)  # the end of the turn
            assert journal.commits == commits + 1  # both writes, one commit
            assert other.get("a" * 64)["state"] == SUBMITTED and other.get("b" * 64)["task_id"]
            journal.stored("a" * 64, {"name": "kite", "request": REQ, "task_id": "t", "files": []})
            await asyncio.sleep(0)
            assert other.get("a" * 64)["state"] == STORED
            assert [h for h, _ in other.inflight()] == ["b" * 64]
        finally:
            journal.close()
            other.close()

    asyncio.run(go())


def test_close_commits_what_is_pending(tmp_path):
    async def go():
        journal = Journal(tmp_path / "journal")
        journal.submitted("c" * 64, "cat", REQ, "task-unified-1-cccccccc", None)
        journal.close()  # before the turn ends, as a cancelled build's finally block does

    asyncio.run(go())
    assert Journal(tmp_path / "journal").get("c" * 64)["state"] == SUBMITTED


def test_outside_an_event_loop_every_write_commits_at_once(tmp_path):
    journal = Journal(tmp_path / "journal")
    other = Journal(tmp_path / "journal")
    journal.submitted("d" * 64, "dog", REQ, "task-unified-1-dddddddd", None)
    assert other.get("d" * 64)["state"] == SUBMITTED


def test_what_waits_for_the_commit_sees_the_task_id_durable(tmp_path):
    """'submitted' is said only once another process (a resumed build) would find the task id."""
    seen: list[str] = []

    async def go():
        journal = Journal(tmp_path / "journal")
        other = Journal(tmp_path / "journal")
        try:
            journal.submitted("d" * 64, "dog", REQ, "task-unified-1-dddddddd", None)
            journal.then(lambda: seen.append(other.get("d" * 64)["state"]))
            assert seen == []  # not before the end of the turn
            await asyncio.sleep(0)
            assert seen == [SUBMITTED]
            journal.then(lambda: seen.append("nothing pending"))  # at once
            assert seen[-1] == "nothing pending"
        finally:
            journal.close()
            other.close()

    asyncio.run(go())
