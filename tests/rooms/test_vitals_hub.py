"""The vitals hub of two nodes on a real Redis that goes away: an alarm reaches this node's
listeners at once and the other node's as soon as Redis is back, exactly once each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from orbridge.rooms.bus import RedisBus
from orbridge.rooms.room import RoomRegistry
from orbridge.rooms.vitals.hub import VitalsHub
from orbridge.rooms.vitals.model import NUMERICS, VitalsBatch, make_numeric
from tests.support import RedisProcess

pytestmark = pytest.mark.redis


class Node:
    def __init__(self, url: str) -> None:
        self.bus = RedisBus(url, "test:vitals", retry_s=0.1)
        self.hub = VitalsHub(self.bus, RoomRegistry())
        self.heard: list[dict[str, Any]] = []
        self.hub.listeners.append(self._hear)

    async def _hear(self, message: dict[str, Any]) -> None:
        self.heard.append(message)

    def alarms(self, kind: str = "alarm_raised") -> list[str]:
        return [m["alarm"]["id"] for m in self.heard if m["type"] == kind]


def spo2(value: float) -> VitalsBatch:
    t = int(time.time() * 1000)
    return VitalsBatch("or-1", t, [make_numeric(NUMERICS["spo2"], value, "%", t, "monitor-1")])


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - state owned by the code under test
            await asyncio.sleep(0.02)


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[tuple[RedisProcess, Node, Node]]:
    with RedisProcess() as redis:
        a, b = Node(redis.url), Node(redis.url)
        await a.hub.start()
        await b.hub.start()
        await until(lambda: a.bus.up and b.bus.up)
        yield redis, a, b
        await a.hub.close()
        await b.hub.close()


async def test_an_alarm_during_an_outage_is_delivered_here_at_once_there_when_back(
    cluster: tuple[RedisProcess, Node, Node],
) -> None:
    redis, a, b = cluster
    redis.stop()
    answer = await a.hub.ingest(spo2(85))  # does not fail
    [(event, alarm_id)] = [(x["event"], x["id"]) for x in answer["alarms"]]
    assert event == "raised"
    assert a.alarms() == [alarm_id]  # this node's room hears it now
    for _ in range(20):  # the monitor goes on sending during the outage
        await a.hub.ingest(spo2(84))
    await asyncio.sleep(0.5)
    assert b.alarms() == []
    redis.start()
    await until(lambda: b.alarms() == [alarm_id])
    assert [a["id"] for a in b.hub.snapshot("or-1")["alarms"]] == [alarm_id]  # late joiners
    await asyncio.sleep(1.0)  # resyncs from both sides have run: nobody hears it twice
    assert a.alarms() == [alarm_id] and b.alarms() == [alarm_id]
    assert a.bus.stats["resyncs"] >= 1 and b.bus.stats["resyncs"] >= 1


async def test_an_alarm_cleared_during_the_outage_is_cleared_everywhere(
    cluster: tuple[RedisProcess, Node, Node],
) -> None:
    redis, a, b = cluster
    await a.hub.ingest(spo2(85))
    await until(lambda: len(b.alarms()) == 1)
    redis.stop()
    await a.hub.ingest(spo2(97))
    assert len(a.alarms("alarm_cleared")) == 1
    redis.start()
    await until(lambda: len(b.alarms("alarm_cleared")) == 1)
    assert b.hub.snapshot("or-1")["alarms"] == []
    await asyncio.sleep(1.0)
    assert len(b.alarms()) == 1  # the cleared alarm is not raised again by a resync


async def test_an_alarm_raised_while_another_node_was_away_reaches_it(
    cluster: tuple[RedisProcess, Node, Node],
) -> None:
    """The alarm left node A before Redis went down, while node B read nothing: B must still
    get it once Redis is back (it reads on from the last entry it saw, and A resends)."""
    redis, a, b = cluster
    redis.stop()
    redis.start()  # a fresh Redis: nothing of the stream survived
    await a.hub.ingest(spo2(85))
    await until(lambda: len(b.alarms()) == 1)
    assert b.alarms() == a.alarms()
