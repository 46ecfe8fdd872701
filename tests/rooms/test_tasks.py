"""Background tasks: referenced until they end, and every failure logged."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from orbridge.rooms.tasks import Tasks


async def test_a_failure_is_logged_with_its_owner_and_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Tasks("media")

    async def boom() -> None:
        raise ValueError("no such track")

    with caplog.at_level(logging.ERROR, "orbridge.tasks"):
        task = tasks.spawn(boom(), name="end:TR_1")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert tasks.failed == 1 and len(tasks) == 0
    [record] = caplog.records
    assert "media: background task end:TR_1 failed: no such track" in record.getMessage()
    assert record.exc_info is not None


async def test_tasks_are_kept_alive_and_can_be_waited_for_or_cancelled() -> None:
    tasks = Tasks("test")
    done: list[int] = []

    async def work(n: int) -> None:
        await asyncio.sleep(0.01)
        done.append(n)

    for n in range(3):
        tasks.spawn(work(n))
    gc.collect()  # asyncio holds tasks weakly: the group must keep them
    assert len(tasks) == 3
    await tasks.wait()
    assert sorted(done) == [0, 1, 2] and len(tasks) == 0
    forever = tasks.spawn(asyncio.sleep(3600))
    await tasks.cancel()
    assert forever.cancelled() and tasks.failed == 0
