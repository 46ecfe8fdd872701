"""Two `orbridge serve` processes on a real Redis that stops for 5 s: an alarm raised during the
outage reaches the room on its own node at once and the other node's clients when Redis is back,
once each; vitals keep flowing on the node that has the monitor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from tests.conftest import mint
from tests.support import RedisProcess, ServerProcess

pytestmark = pytest.mark.cluster

FAST = ("--presence-ttl", "3", "--heartbeat-interval", "0.5")


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


@pytest.fixture
def nodes(redis: RedisProcess) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a = ServerProcess("--redis", redis.url, "--node-id", "node-a", *FAST)
    b = ServerProcess("--redis", redis.url, "--node-id", "node-b", *FAST)
    yield a, b
    a.stop()
    b.stop()


async def client(node: ServerProcess, role: Role, identity: str) -> RoomClient:
    c = RoomClient(node.url, mint("or-1", role, identity=identity))
    await c.connect()
    await c.join()
    return c


def spo2(value: float) -> dict[str, Any]:
    return {"numerics": [{"kind": "spo2", "value": value, "unit": "%"}]}


async def test_an_alarm_during_a_redis_outage_reaches_every_node(
    redis: RedisProcess, nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = nodes
    monitor = await client(a, Role.DEVICE, "monitor-1")
    here = await client(a, Role.EXPERT, "dr-wang")
    there = await client(b, Role.EXPERT, "dr-li")
    clients = [monitor, here, there]
    try:
        await monitor.request("publish_vitals", spo2(97))
        await there.next_event("vitals", wait=5)
        redis.stop()
        await asyncio.sleep(0.5)
        answers = [await monitor.request("publish_vitals", spo2(85))]
        raised_at = time.monotonic()
        alarm = await here.next_event("alarm_raised", wait=2)
        assert alarm["kind"] == "spo2" and alarm["condition"] == "low"
        assert time.monotonic() - raised_at < 2
        for _ in range(20):
            answers.append(await monitor.request("publish_vitals", spo2(84)))
            await asyncio.sleep(0.2)
        assert len(answers) == 21  # every one answered ok (ProtocolError otherwise)
        assert there.pending("alarm_raised") == []
        redis.start()
        back = time.monotonic()
        remote = await there.next_event("alarm_raised", wait=10)
        assert remote["id"] == alarm["id"]
        delay = time.monotonic() - back
        late = await client(b, Role.TRAINEE, "student-chen")
        clients.append(late)
        assert late.snapshot is not None
        assert [x["id"] for x in late.snapshot["vitals"]["alarms"]] == [alarm["id"]]
        await asyncio.sleep(2.0)  # resyncs have run on both nodes
        assert here.pending("alarm_raised") == [] and there.pending("alarm_raised") == []
        print(f"alarm reached the other node {delay:.2f} s after Redis returned")
    except ProtocolError as exc:
        raise AssertionError(f"refused during the outage: {exc}") from exc
    finally:
        for c in clients:
            await c.close()
