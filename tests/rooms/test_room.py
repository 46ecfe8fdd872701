"""The Room and its registry: members, the empty timeout, ending, close hooks, tombstones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from orbridge.rooms.annotations.model import make_annotation
from orbridge.rooms.bus import LocalBus
from orbridge.rooms.participant import Participant
from orbridge.rooms.roles import Role, resolve_grants
from orbridge.rooms.room import Room, RoomRegistry, now_ms
from orbridge.rooms.vitals.alarms import Limit
from orbridge.rooms.vitals.model import NUMERICS, make_numeric


def member(sid: str, room: str = "or-1", identity: str | None = None) -> Participant:
    return Participant(room=room, identity=identity or f"p-{sid}", name="P", role=Role.EXPERT,
                       grants=resolve_grants(Role.EXPERT), node="n1", sid=sid,
                       joined_at=now_ms())  # fmt: skip


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def fill(room: Room) -> None:
    room.overlay.add(make_annotation(room.name, "dr-wang", "Dr Wang", "arrow", "TR_1",
                                     [[0.1, 0.1], [0.2, 0.2]]))  # fmt: skip
    spo2 = make_numeric(NUMERICS["spo2"], 84, "%", now_ms(), "monitor")
    room.vitals.latest["spo2"] = spo2.public()
    room.vitals.alarms.evaluate(spo2)
    room.vitals.alarms.set_limits({"hr": Limit(low=40, high=140)})


async def test_a_room_closes_once_empty_for_the_timeout_and_forgets_everything() -> None:
    closed: list[tuple[str, str]] = []
    registry = RoomRegistry(empty_timeout_s=0.2)

    async def hook(room: Room, reason: str, by: str) -> None:
        closed.append((room.name, reason))
        assert room.overlay.items  # hooks see the consultation before it is forgotten

    registry.close_hooks.append(hook)
    room = registry.add_member(member("a"))
    fill(room)
    registry.remove_member("or-1", "a")
    assert registry.get("or-1") is room  # not yet: the timeout runs
    await eventually(lambda: registry.get("or-1") is None)
    assert closed == [("or-1", "empty")]
    assert room.closed and not room.overlay.items and not room.vitals.latest
    assert not room.vitals.alarms.active and room.vitals.alarms.limits["hr"].high == 120
    again = registry.add_member(member("b"))
    assert again is not room and not again.overlay.items
    assert again.vitals.snapshot()["numerics"] == [] and again.vitals.snapshot()["alarms"] == []
    await registry.stop()


async def test_a_member_coming_back_in_time_keeps_the_consultation() -> None:
    registry = RoomRegistry(empty_timeout_s=0.2)
    room = registry.add_member(member("a"))
    fill(room)
    registry.remove_member("or-1", "a")
    assert registry.add_member(member("b")) is room  # back before the timeout
    await asyncio.sleep(0.5)
    assert registry.get("or-1") is room and room.overlay.items
    await registry.stop()


async def test_members_elsewhere_keep_the_room_open_and_an_outage_closes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers: list[bool | Exception] = [True, RuntimeError("redis down"), False]
    asked: list[str] = []

    async def occupied(name: str) -> bool:
        asked.append(name)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    registry = RoomRegistry(empty_timeout_s=0.1, occupied=occupied)
    room = registry.open("or-1")  # opened by a bus message: nobody here
    with caplog.at_level(logging.WARNING, "orbridge.rooms"):
        await eventually(lambda: len(asked) == 2)
        await asyncio.sleep(0.01)  # the second answer handled
        assert registry.get("or-1") is room  # someone on another node, then presence down
        assert "cannot tell whether room or-1 is empty" in caplog.text
        await eventually(lambda: registry.get("or-1") is None)
    assert asked == ["or-1"] * 3
    await registry.stop()


async def test_ending_a_consultation_closes_it_on_every_node_through_the_bus() -> None:
    bus = LocalBus()
    registry = RoomRegistry(empty_timeout_s=60, bus=bus)
    await registry.start()
    seen: list[tuple[str, str, str]] = []

    async def failing(room: Room, reason: str, by: str) -> None:
        raise RuntimeError("a broken capability")

    async def hook(room: Room, reason: str, by: str) -> None:
        seen.append((room.name, reason, by))

    registry.close_hooks += [failing, hook]  # one failing hook does not stop the others
    room = registry.add_member(member("a"))
    fill(room)
    ended = await registry.end("or-1", "mod-li")
    assert seen == [("or-1", "ended", "mod-li")] and registry.get("or-1") is None
    assert not room.overlay.items and registry.counts["closed_ended"] == 1
    # a message stamped before the end (in flight from another node) opens nothing
    assert not registry.accepts("or-1", ended - 5)
    assert registry.accepts("or-1", ended + 1) and registry.accepts("or-2", ended - 5)
    await registry.stop()


async def test_the_tombstone_is_forgotten_after_a_while() -> None:
    registry = RoomRegistry(empty_timeout_s=60, tombstone_s=0.05)
    registry.open("or-1")
    ended = now_ms()
    await registry.close("or-1", "ended", ended_ms=ended)
    assert not registry.accepts("or-1", ended - 1)
    await asyncio.sleep(0.1)
    assert registry.accepts("or-1", ended - 1)
    assert await registry.close("or-9", "ended") is False  # nothing open there
    await registry.stop()


async def test_members_are_an_index_per_room() -> None:
    registry = RoomRegistry(empty_timeout_s=60)
    registry.add_member(member("a", "or-1"))
    registry.add_member(member("b", "or-1"))
    registry.add_member(member("c", "or-2"))
    assert {p.sid for p in registry.members("or-1")} == {"a", "b"}
    renamed = member("a", "or-1", identity="dr-new")
    registry.update_member(renamed)
    assert {p.identity for p in registry.members("or-1")} == {"dr-new", "p-b"}
    registry.remove_member("or-1", "a")
    registry.remove_member("or-1", "zz")  # unknown: nothing happens
    assert [p.sid for p in registry.members("or-1")] == ["b"]
    assert registry.members("or-3") == []
    await registry.stop()


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RoomRegistry(empty_timeout_s=0)
