"""Several `orbridge serve` processes sharing one Redis: presence and broadcasts across nodes,
a node killed with SIGKILL, and a clean SIGTERM shutdown."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import RoomClient
from tests.conftest import mint
from tests.support import ServerProcess

pytestmark = pytest.mark.cluster
API_KEY = "cluster-test-api-key"


def api(node: ServerProcess, path: str) -> Any:
    request = urllib.request.Request(node.url + path, headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def identities(node: ServerProcess, room: str) -> list[str]:
    return [p["identity"] for p in api(node, f"/api/rooms/{room}")["participants"]]


@pytest.fixture
def spawn(redis_url: str, redis_prefix: str) -> Iterator[Any]:
    nodes: list[ServerProcess] = []

    def start(name: str, *extra: str) -> ServerProcess:
        node = ServerProcess(
            "--redis", redis_url, "--node-id", name, "--api-key", API_KEY, *extra,
            env={"ORBRIDGE_REDIS_PREFIX": redis_prefix},
        )  # fmt: skip
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


FAST = ("--presence-ttl", "3", "--heartbeat-interval", "0.5")


async def client(node: ServerProcess, room: str, role: Role, identity: str) -> RoomClient:
    c = RoomClient(node.url, mint(room, role, identity=identity))
    await c.connect()
    await c.join()
    return c


async def test_presence_and_broadcasts_across_nodes(spawn: Any) -> None:
    a, b = spawn("node-a", *FAST), spawn("node-b", *FAST)
    mod = await client(a, "or-1", Role.MODERATOR, "mod")
    expert = await client(b, "or-1", Role.EXPERT, "dr-wang")
    try:
        # node A's client hears of a join on node B, with B's snapshot holding both
        joined = await mod.next_event("participant_joined")
        assert joined["participant"]["identity"] == "dr-wang"
        assert joined["participant"]["node"] == "node-b"
        assert expert.snapshot is not None
        assert {p["identity"]: p["node"] for p in expert.snapshot["participants"]} == {
            "mod": "node-a", "dr-wang": "node-b",
        }  # fmt: skip
        # presence read from either node is the same
        assert sorted(identities(a, "or-1")) == sorted(identities(b, "or-1")) == ["dr-wang", "mod"]
        assert sorted(n["node_id"] for n in api(a, "/api/rooms")["nodes"]) == ["node-a", "node-b"]
        # a broadcast sent from node B reaches the client on node A
        await expert.request("update", {"quality": "fair"})
        updated = await mod.next_event("participant_updated")
        assert updated["participant"]["quality"] == "fair"
        # a moderator on A removes a participant connected to B
        await mod.request("remove_participant", {"identity": "dr-wang"})
        assert (await expert.next_event("removed"))["reason"] == "removed"
        await asyncio.wait_for(expert.disconnected.wait(), 5)
        assert identities(b, "or-1") == ["mod"]
    finally:
        await mod.close()
        await expert.close()


async def test_killed_node_leaves_no_ghosts(spawn: Any, redis_url: str, redis_prefix: str) -> None:
    a, b = spawn("node-a", *FAST), spawn("node-b", *FAST)
    watcher = await client(a, "or-1", Role.MODERATOR, "watcher")
    victims = [await client(b, "or-1", Role.EXPERT, f"expert-{i}") for i in range(3)]
    try:
        for _ in victims:
            await watcher.next_event("participant_joined")
        assert len(identities(a, "or-1")) == 4
        b.kill()
        killed = time.monotonic()
        left = [await watcher.next_event("participant_left", wait=10) for _ in victims]
        elapsed = time.monotonic() - killed
        assert sorted(e["identity"] for e in left) == ["expert-0", "expert-1", "expert-2"]
        assert {e["reason"] for e in left} == {"timeout"}
        assert elapsed <= 3 + 0.5 + 1.5  # TTL + one heartbeat + scheduling margin
        assert identities(a, "or-1") == ["watcher"]
        assert [n["node_id"] for n in api(a, "/api/rooms")["nodes"]] == ["node-a"]
        # and in Redis itself: no record of the dead node's participants remains
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        records = r.hgetall(f"{redis_prefix}room:or-1:data")
        assert list(records) == ["watcher"]
        assert r.zrange(f"{redis_prefix}room:or-1:alive", 0, -1) == ["watcher"]
        r.close()
    finally:
        await watcher.close()
        for v in victims:
            await v.close()


async def test_kill_with_default_ttl_gone_within_15s(spawn: Any) -> None:
    a, b = spawn("node-a"), spawn("node-b")  # default TTL 10 s, heartbeat 3 s
    victim = await client(b, "or-1", Role.SURGEON, "dr-ma")
    assert identities(a, "or-1") == ["dr-ma"]
    b.kill()
    killed = time.monotonic()
    for _ in range(80):  # 20 s at most
        if not await asyncio.to_thread(identities, a, "or-1"):
            break
        await asyncio.sleep(0.25)
    gone_after = time.monotonic() - killed
    await victim.close()
    assert identities(a, "or-1") == []
    assert gone_after <= 15.0, f"presence expired {gone_after:.1f} s after SIGKILL"


async def test_sigterm_tells_participants_and_removes_presence(spawn: Any) -> None:
    a, b = spawn("node-a", *FAST), spawn("node-b", *FAST)
    watcher = await client(a, "or-1", Role.MODERATOR, "watcher")
    leaving = await client(b, "or-1", Role.EXPERT, "dr-wang")
    try:
        await watcher.next_event("participant_joined")
        assert b.terminate() == 0
        assert (await leaving.next_event("server_shutdown"))["reason"] == "server_shutdown"
        await asyncio.wait_for(leaving.disconnected.wait(), 5)
        # told at once (not after a TTL), and presence is already clean
        left = await watcher.next_event("participant_left", wait=2)
        assert left == {"identity": "dr-wang", "reason": "server_shutdown"}
        assert identities(a, "or-1") == ["watcher"]
        assert [n["node_id"] for n in api(a, "/api/rooms")["nodes"]] == ["node-a"]
    finally:
        await watcher.close()
        await leaving.close()


async def test_json_logs(spawn: Any) -> None:
    node = spawn("node-json", *FAST, "--log-format", "json")
    c = await client(node, "or-1", Role.EXPERT, "dr-wang")
    await c.close()
    node.terminate()
    lines = [json.loads(line) for line in node.log().splitlines() if line.strip()]
    assert any("joined room or-1" in e["msg"] for e in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in lines)
