"""The room bus on a real redis-server that goes away, comes back, or hangs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from orbridge.rooms.bus import LocalBus, RedisBus
from tests.support import RedisProcess

pytestmark = pytest.mark.redis


class Inbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling state owned by the code under test
            await asyncio.sleep(0.02)


@pytest.fixture
def redis() -> Any:
    with RedisProcess() as server:
        yield server


@pytest_asyncio.fixture
async def buses(
    redis: RedisProcess,
) -> AsyncIterator[Callable[[], Awaitable[tuple[RedisBus, Inbox]]]]:
    made: list[RedisBus] = []

    async def make() -> tuple[RedisBus, Inbox]:
        bus = RedisBus(redis.url, "test:bus", retry_s=0.1)
        inbox = Inbox()
        await bus.start(inbox)
        made.append(bus)
        await until(lambda: bus.up)
        return bus, inbox

    yield make
    for bus in made:
        await bus.close()


async def test_every_node_receives_once_the_sender_at_once(buses: Any) -> None:
    a, inbox_a = await buses()
    _b, inbox_b = await buses()
    await a.publish({"type": "vitals", "n": 1})
    assert inbox_a.messages == [{"type": "vitals", "n": 1}]  # before any round trip
    await until(lambda: len(inbox_b.messages) == 1)
    await asyncio.sleep(0.3)
    assert inbox_a.messages == [{"type": "vitals", "n": 1}]  # its own echo is skipped
    assert inbox_b.messages == [{"type": "vitals", "n": 1}]


async def test_an_outage_loses_nothing_that_fits_the_outbox(
    buses: Any, redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    a, inbox_a = await buses()
    _b, inbox_b = await buses()
    redis.stop()
    with caplog.at_level(logging.WARNING, "orbridge.bus"):
        for n in range(50):
            await a.publish({"type": "annotation", "n": n})  # never raises
        assert [m["n"] for m in inbox_a.messages] == list(range(50))
        await until(lambda: not a.up and not _b.up)
        await asyncio.sleep(1.0)  # many retries...
        assert inbox_b.messages == []
        redis.start()
        await until(lambda: len(inbox_b.of("annotation")) == 50)
    assert [m["n"] for m in inbox_b.of("annotation")] == list(range(50))  # in order
    lost = [r for r in caplog.records if "unavailable" in r.getMessage()]
    back = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len(lost) == 2 and len(back) == 2  # ...one line per state change and bus, not per retry
    await until(lambda: a.backlog == 0)  # B may read an entry before A has counted it sent


async def test_a_full_outbox_drops_the_oldest_but_keeps_sticky_messages(
    redis: RedisProcess,
) -> None:
    bus = RedisBus(redis.url, "test:bus", outbox=10, retry_s=0.1)
    inbox = Inbox()
    redis.stop()
    await bus.start(inbox)
    try:
        await bus.publish({"type": "alarm_raised", "id": "a1"}, sticky=True)
        for n in range(30):
            await bus.publish({"type": "vitals", "n": n})
        assert bus.backlog == 10 and bus.stats["dropped"] == 21
        kept = [p for _, p in bus._outbox]
        assert '"alarm_raised"' in kept[0]  # the alarm survives, the oldest vitals went
        assert all('"n":2' in p or '"n":' in p for p in kept[1:])
        assert len(inbox.messages) == 31  # this node got everything
    finally:
        await bus.close()


async def test_a_node_starts_without_redis_and_joins_when_it_appears(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    redis.stop()
    bus = RedisBus(redis.url, "test:bus", retry_s=0.1)
    other_inbox = Inbox()
    await bus.start(Inbox())  # does not raise
    await until(lambda: "Redis unavailable" in caplog.text)
    assert bus.up is False
    await bus.publish({"type": "vitals", "n": 1})
    redis.start()
    other = RedisBus(redis.url, "test:bus", retry_s=0.1)
    await other.start(other_inbox)
    try:
        await until(lambda: bus.up and other.up)
        assert caplog.text.count("Redis unavailable") == 1  # logged once, not per retry
        await bus.publish({"type": "vitals", "n": 2})
        await until(lambda: any(m.get("n") == 2 for m in other_inbox.messages))
    finally:
        await bus.close()
        await other.close()


async def test_resync_runs_on_both_sides_after_an_outage(buses: Any, redis: RedisProcess) -> None:
    a, _ = await buses()
    b, _ = await buses()
    calls = {"a": 0, "b": 0}

    async def hook_a() -> None:
        calls["a"] += 1

    async def hook_b() -> None:
        calls["b"] += 1

    a.on_resync.append(hook_a)
    b.on_resync.append(hook_b)
    redis.stop()
    await until(lambda: not a.up and not b.up)
    redis.start()
    # each resubscribes (its own resync) and hears the other's request (another one)
    await until(lambda: calls["a"] >= 2 and calls["b"] >= 2)


async def test_a_hung_redis_never_blocks_the_publisher(buses: Any, redis: RedisProcess) -> None:
    a, inbox_a = await buses()
    _b, inbox_b = await buses()
    redis.freeze()
    try:
        async with asyncio.timeout(1.0):  # local delivery does not wait for Redis
            for n in range(20):
                await a.publish({"type": "vitals", "n": n})
        assert len(inbox_a.messages) == 20
    finally:
        redis.freeze(False)
    await until(lambda: len(inbox_b.of("vitals")) == 20, timeout=20)


async def test_the_local_bus_delivers_at_once() -> None:
    bus = LocalBus()
    inbox = Inbox()
    await bus.start(inbox)
    await bus.publish({"type": "vitals"}, sticky=True)
    assert inbox.messages == [{"type": "vitals"}]
    assert bus.on_resync == []
