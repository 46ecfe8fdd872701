"""The presence contract, run against both backends (in-process and a real Redis)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from orbridge.rooms.participant import Participant
from orbridge.rooms.presence import MemoryPresence, NodeInfo, PresenceKey, PresenceStore
from orbridge.rooms.presence_redis import RedisPresence
from orbridge.rooms.roles import DEFAULT_GRANTS, Role

TTL_MS = 600
_clock = itertools.count(int(time.time() * 1000))


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[PresenceStore]:
    if request.param == "memory":
        presence: PresenceStore = MemoryPresence(TTL_MS)
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        presence = RedisPresence(url, TTL_MS, prefix=prefix)
    await presence.start()
    yield presence
    await presence.close()


def person(identity: str, room: str = "r1", sid: str | None = None, role: Role = Role.EXPERT,
           node: str = "n1") -> Participant:  # fmt: skip
    return Participant(
        room=room,
        identity=identity,
        name=identity.title(),
        role=role,
        grants=DEFAULT_GRANTS[role],
        node=node,
        sid=sid or f"sid-{identity}",
        joined_at=next(_clock),  # distinct, increasing: join order is by this
    )


def key(p: Participant) -> PresenceKey:
    return PresenceKey(p.room, p.identity, p.sid)


async def expire() -> None:
    await asyncio.sleep(TTL_MS / 1000 + 0.25)


async def test_join_and_leave(store: PresenceStore) -> None:
    wang, li = person("wang"), person("li", role=Role.SURGEON)
    assert await store.add(wang) is None
    assert await store.add(li) is None
    members = await store.participants("r1")
    assert [p.identity for p in members] == ["wang", "li"]
    assert members[1] == li  # every field survives the round trip
    assert await store.get("r1", "li") == li
    assert await store.remove(key(wang)) == wang
    assert [p.identity for p in await store.participants("r1")] == ["li"]
    assert await store.remove(key(wang)) is None  # twice is harmless
    assert await store.get("r1", "wang") is None


async def test_rooms_are_separate_and_summarized(store: PresenceStore) -> None:
    await store.add(person("a", room="r1", role=Role.SURGEON))
    await store.add(person("b", room="r1", role=Role.EXPERT))
    await store.add(person("c", room="r1", role=Role.EXPERT))
    await store.add(person("d", room="r2", role=Role.TRAINEE))
    summaries = {s.room: s for s in await store.rooms()}
    assert set(summaries) == {"r1", "r2"}
    assert summaries["r1"].participants == 3
    assert summaries["r1"].by_role == {"expert": 2, "surgeon": 1}
    assert summaries["r2"].by_role == {"trainee": 1}
    await store.remove(key(person("d", room="r2")))
    assert [s.room for s in await store.rooms()] == ["r1"]


async def test_same_identity_replaces_and_old_connection_cannot_remove(
    store: PresenceStore,
) -> None:
    first = person("wang", sid="s1")
    second = person("wang", sid="s2", node="n2")
    await store.add(first)
    assert await store.add(second) == first
    # The old connection's disconnect must not remove the new record.
    assert await store.remove(key(first)) is None
    assert await store.get("r1", "wang") == second
    # ...nor keep it alive.
    assert await store.refresh([key(first)]) == [key(first)]


async def test_replace_updates_only_the_owner(store: PresenceStore) -> None:
    wang = person("wang")
    await store.add(wang)
    updated = wang.with_changes(quality="poor", attributes={"muted": "yes"})
    assert await store.replace(updated)
    assert await store.get("r1", "wang") == updated
    assert not await store.replace(updated.with_changes(sid="other"))
    assert not await store.replace(person("ghost"))


async def test_expiry_without_heartbeat(store: PresenceStore) -> None:
    await store.add(person("wang"))
    await expire()
    assert await store.participants("r1") == []
    assert await store.get("r1", "wang") is None
    assert await store.rooms() == []


async def test_heartbeat_keeps_alive(store: PresenceStore) -> None:
    wang, li = person("wang"), person("li")
    await store.add(wang)
    await store.add(li)
    for _ in range(4):  # well past one TTL in total
        await asyncio.sleep(TTL_MS / 1000 / 3)
        assert await store.refresh([key(wang)]) == []
    assert [p.identity for p in await store.participants("r1")] == ["wang"]
    # the unrefreshed one is lost and reported as such
    assert await store.refresh([key(li)]) == [key(li)]


async def test_reap_claims_each_expired_participant_once(store: PresenceStore) -> None:
    await store.add(person("wang"))
    await store.add(person("li", room="r2"))
    await expire()
    claims = await asyncio.gather(store.reap(), store.reap(), store.reap())
    claimed = sorted(p.identity for batch in claims for p in batch)
    assert claimed == ["li", "wang"]
    assert await store.reap() == []


async def test_rejoin_after_expiry_is_not_a_replacement(store: PresenceStore) -> None:
    await store.add(person("wang", sid="s1"))
    await expire()
    assert await store.add(person("wang", sid="s2")) is None
    assert (await store.get("r1", "wang")).sid == "s2"  # type: ignore[union-attr]


async def test_node_registry(store: PresenceStore) -> None:
    a = NodeInfo("node-a", "http://127.0.0.1:1", 1, "0.1.0")
    b = NodeInfo("node-b", "http://127.0.0.1:2", 2, "0.1.0")
    await store.register_node(a)
    await store.register_node(b)
    assert sorted(n.node_id for n in await store.nodes()) == ["node-a", "node-b"]
    await store.unregister_node("node-a")
    assert [n.node_id for n in await store.nodes()] == ["node-b"]
    await expire()
    assert await store.nodes() == []


async def test_ping(store: PresenceStore) -> None:
    assert await store.ping()


async def test_redis_unreachable_is_reported() -> None:
    from tests.support import free_port

    presence = RedisPresence(f"redis://127.0.0.1:{free_port()}/0", TTL_MS)
    assert not await presence.ping()
    await presence.close()
