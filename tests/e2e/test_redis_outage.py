"""Two `orbridge serve` processes on a real Redis that stops for 5 s: an alarm raised during the
outage reaches the room on its own node at once and the other node's clients when Redis is back,
once each; vitals keep flowing on the node that has the monitor. And the same cluster on Redis
Sentinel, through a real failover."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis as redis_py

from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from tests.conftest import mint
from tests.support import RedisProcess, SentinelGroup, ServerProcess

pytestmark = pytest.mark.cluster

FAST = ("--presence-ttl", "3", "--heartbeat-interval", "0.5")
API_KEY = "outage-test-api-key"


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


@pytest.fixture
def nodes(redis: RedisProcess) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a = ServerProcess("--redis", redis.url, "--node-id", "node-a", "--api-key", API_KEY, *FAST)
    b = ServerProcess("--redis", redis.url, "--node-id", "node-b", "--api-key", API_KEY, *FAST)
    yield a, b
    a.stop()
    b.stop()


async def client(node: ServerProcess, role: Role, identity: str) -> RoomClient:
    c = RoomClient(node.url, mint("or-1", role, identity=identity))
    await c.connect()
    await c.join()
    return c


class Room:
    """A monitor and an expert on node A, an expert on node B; `more` for later joiners."""

    def __init__(self, monitor: RoomClient, here: RoomClient, there: RoomClient) -> None:
        self.monitor, self.here, self.there = monitor, here, there
        self.more: list[RoomClient] = []


@pytest_asyncio.fixture
async def room(nodes: tuple[ServerProcess, ServerProcess]) -> AsyncIterator[Room]:
    a, b = nodes
    people = Room(
        await client(a, Role.DEVICE, "monitor-1"),
        await client(a, Role.EXPERT, "dr-wang"),
        await client(b, Role.EXPERT, "dr-li"),
    )
    yield people
    for c in [people.monitor, people.here, people.there, *people.more]:
        await c.close()


def spo2(value: float) -> dict[str, Any]:
    return {"numerics": [{"kind": "spo2", "value": value, "unit": "%"}]}


async def test_an_alarm_during_a_redis_outage_reaches_every_node(
    redis: RedisProcess, nodes: tuple[ServerProcess, ServerProcess], room: Room
) -> None:
    _, b = nodes
    monitor, here, there = room.monitor, room.here, room.there
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
        room.more.append(late)
        assert late.snapshot is not None
        assert [x["id"] for x in late.snapshot["vitals"]["alarms"]] == [alarm["id"]]
        await asyncio.sleep(2.0)  # resyncs have run on both nodes
        assert here.pending("alarm_raised") == [] and there.pending("alarm_raised") == []
        print(f"alarm reached the other node {delay:.2f} s after Redis returned")
    except ProtocolError as exc:
        raise AssertionError(f"refused during the outage: {exc}") from exc


def http(node: ServerProcess, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(node.url + path, headers={"X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def healthy(node: ServerProcess, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if http(node, "/healthz")[0] == 200:
            return True
        await asyncio.sleep(0.1)
    return False


ARROW = {"type": "arrow", "track_id": "TR_0123456789ab", "points": [[0.2, 0.3], [0.5, 0.5]]}


async def test_a_redis_outage_degrades_only_what_needs_redis(
    redis: RedisProcess, nodes: tuple[ServerProcess, ServerProcess], room: Room
) -> None:
    a, b = nodes
    monitor, expert = room.monitor, room.here
    redis.stop()
    await asyncio.sleep(0.5)
    # everything among participants of node A goes on, answered ok
    await monitor.request("publish_vitals", spo2(96))
    assert (await expert.next_event("vitals", wait=2))["numerics"][0]["value"] == 96
    await expert.request("annotate", ARROW)
    await expert.request("update", {"quality": "poor"})
    newcomer = await client(a, Role.SURGEON, "dr-ma")  # a join during the outage
    room.more.append(newcomer)
    assert newcomer.snapshot is not None
    assert newcomer.snapshot.get("degraded") == ["presence"]
    assert "dr-ma" in {p["identity"] for p in newcomer.snapshot["participants"]}
    assert len(newcomer.snapshot["overlay"]) == 1
    status, health = http(a, "/healthz")
    assert status == 503 and health["status"] == "degraded" and health["reasons"]
    status, room = http(a, "/api/rooms/or-1")
    assert status == 200 and room["degraded"] == ["presence"]
    await asyncio.sleep(4.5)  # 5 s in all
    redis.start()
    back = time.monotonic()
    # presence is re-asserted: node B sees node A's participants again, the newcomer too
    while time.monotonic() - back < 10:
        status, room = http(b, "/api/rooms/or-1")
        seen = {p["identity"] for p in room.get("participants", [])}
        if status == 200 and {"dr-ma", "dr-wang", "monitor-1", "dr-li"} <= seen:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"presence not resynchronised: {room}")
    resync = time.monotonic() - back
    assert await healthy(a, within=5), http(a, "/healthz")
    print(f"presence resynchronised {resync:.2f} s after Redis returned")


async def test_a_hung_redis_never_holds_up_a_room_on_one_node(
    redis: RedisProcess, nodes: tuple[ServerProcess, ServerProcess], room: Room
) -> None:
    """Redis freezes (SIGSTOP: connections open, nothing answered) for 6 s: every request on
    node A is still answered within 2 s, the room there hears it, and node B gets the news
    once Redis answers again."""
    monitor, expert, there = room.monitor, room.here, room.there
    redis.freeze()
    try:
        for value in (96, 95, 94):
            started = time.monotonic()
            await monitor.request("publish_vitals", spo2(value))
            assert (await expert.next_event("vitals", wait=2))["numerics"][0]["value"] == value
            await expert.request("annotate", ARROW)
            await expert.request("update", {"quality": "fair"})
            assert time.monotonic() - started < 2.0
            await asyncio.sleep(1.5)
    finally:
        redis.freeze(False)
    await monitor.request("publish_vitals", spo2(93))
    deadline = time.monotonic() + 15
    while True:
        event = await there.next_event("vitals", wait=15)
        if event["numerics"][0]["value"] == 93:
            break
        assert time.monotonic() < deadline


async def test_a_node_starts_without_redis_and_joins_the_cluster_later(
    redis: RedisProcess,
) -> None:
    redis.stop()
    node = ServerProcess("--redis", redis.url, "--node-id", "node-c", "--api-key", API_KEY, *FAST)
    try:
        assert http(node, "/healthz")[0] == 503  # serving, and saying it is degraded
        alone = await client(node, Role.EXPERT, "dr-wang")
        redis.start()
        assert await healthy(node, within=10), http(node, "/healthz")
        await alone.close()
        log = node.log()
        assert log.count("presence backend unavailable") <= 1  # one line per change
    finally:
        node.stop()


async def test_a_sentinel_failover_keeps_the_cluster_whole(tmp_path: Path) -> None:
    """The master dies; the sentinel promotes the replica; both nodes follow it: an alarm
    raised meanwhile reaches the other node, presence is whole again on the new master and
    both nodes are healthy, without a restart."""
    with SentinelGroup(tmp_path) as group:
        common = ("--redis", group.url, "--api-key", API_KEY, *FAST)
        a = ServerProcess(*common, "--node-id", "node-a")
        b = ServerProcess(*common, "--node-id", "node-b")
        people: list[RoomClient] = []
        try:
            assert await healthy(a, within=10) and await healthy(b, within=10)
            people.append(await client(a, Role.DEVICE, "monitor-1"))
            people.append(await client(a, Role.EXPERT, "dr-wang"))
            people.append(await client(b, Role.EXPERT, "dr-li"))
            monitor, here, there = people
            await monitor.request("publish_vitals", spo2(97))
            assert (await there.next_event("vitals", wait=5))["numerics"][0]["value"] == 97
            old_master = group.master.port
            group.master.stop()  # the master is gone for good
            died = time.monotonic()
            await monitor.request("publish_vitals", spo2(85))
            alarm = await here.next_event("alarm_raised", wait=2)
            deadline = time.monotonic() + 20
            while group.master_port() in (old_master, None):
                assert time.monotonic() < deadline, "the sentinel did not fail over"
                await asyncio.sleep(0.1)
            assert group.master_port() == group.replica.port
            remote = await there.next_event("alarm_raised", wait=15)
            assert remote["id"] == alarm["id"]
            delivered = time.monotonic() - died
            # presence is whole again on the new master (re-asserted by the heartbeats)
            expected = {"monitor-1", "dr-wang", "dr-li"}
            deadline = time.monotonic() + 10
            while True:
                status, body = http(b, "/api/rooms/or-1")
                seen = {p["identity"] for p in body.get("participants", [])}
                if status == 200 and not body.get("degraded") and expected <= seen:
                    break
                assert time.monotonic() < deadline, f"presence not whole: {body}"
                await asyncio.sleep(0.1)
            late = await client(b, Role.TRAINEE, "student-chen")
            people.append(late)
            assert late.snapshot is not None
            assert [x["id"] for x in late.snapshot["vitals"]["alarms"]] == [alarm["id"]]
            assert expected <= {p["identity"] for p in late.snapshot["participants"]}
            assert await healthy(a, within=10) and await healthy(b, within=10)
            with redis_py.Redis(port=group.replica.port, decode_responses=True) as new_master:
                assert new_master.keys("orbridge:*")  # presence lives on the new master
            print(f"alarm reached the other node {delivered:.2f} s after the master died")
        finally:
            for c in people:
                await c.close()
            a.stop()
            b.stop()
