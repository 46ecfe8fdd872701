"""A consultation's life: the next session in a room name starts with nothing from the last.

Today's operation in or-1 must not show yesterday's drawings, yesterday's patient's vitals or
alarms, or yesterday's alarm limits. Run with presence in process (one node) and in Redis
(two nodes: members on both, the end told across the bus).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from orbridge.rooms.roles import Role
from orbridge.rooms.vitals.alarms import DEFAULT_LIMITS
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from tests.conftest import LiveNode, StartNode

ARROW = {"type": "arrow", "track_id": "TR_0123456789ab", "points": [[0.2, 0.3], [0.5, 0.55]]}
DEFAULTS = {k: v.public() for k, v in DEFAULT_LIMITS.items()}


async def nodes(start_node: StartNode, backend: str, request: pytest.FixtureRequest,
                **settings: Any) -> tuple[LiveNode, LiveNode]:  # fmt: skip
    """(where the OR is, where the experts are): one node in process, two sharing Redis."""
    if backend == "memory":
        node = await start_node(**settings)
        return node, node
    redis = {"redis_url": request.getfixturevalue("redis_url"),
             "redis_prefix": request.getfixturevalue("redis_prefix")}  # fmt: skip
    return await start_node(**redis, **settings), await start_node(**redis, **settings)


async def yesterday(or_node: LiveNode, expert_node: LiveNode) -> list[RoomClient]:
    """A consultation that leaves drawings, a patient's vitals, an alarm and changed limits."""
    surgeon = await or_node.client("or-1", Role.SURGEON, identity="dr-ma")
    monitor = await or_node.client("or-1", Role.DEVICE, identity="monitor-1")
    expert = await expert_node.client("or-1", Role.EXPERT, identity="dr-wang")
    moderator = await expert_node.client("or-1", Role.MODERATOR, identity="mod-li")
    await expert.request("annotate", ARROW)
    await moderator.request("set_alarm_limits", {"limits": {"hr": {"low": 45, "high": 130}}})
    numerics = [{"kind": "spo2", "value": 84}, {"kind": "hr", "value": 71}]
    await monitor.request("publish_vitals", {"numerics": numerics})
    await expert.next_event("alarm_raised")
    await expert.next_event("annotation")
    # what a late joiner of *this* consultation gets, on either node
    late = await expert_node.client("or-1", Role.TRAINEE, identity="student-1")
    await until(lambda: bool(late.snapshot and late.snapshot["vitals"]["numerics"]))
    snapshot = late.snapshot
    assert snapshot is not None and len(snapshot["overlay"]) == 1
    assert {n["kind"] for n in snapshot["vitals"]["numerics"]} == {"spo2", "hr"}
    assert len(snapshot["vitals"]["alarms"]) == 1
    assert snapshot["vitals"]["limits"]["hr"]["low"] == 45
    return [surgeon, monitor, expert, moderator, late]


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def assert_clean(snapshot: dict[str, Any] | None) -> None:
    assert snapshot is not None
    assert snapshot["overlay"] == []
    assert snapshot["vitals"] == {"numerics": [], "alarms": [], "limits": DEFAULTS}
    assert snapshot["recording"] is None


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_room_that_emptied_starts_the_next_session_clean(
    start_node: StartNode, backend: str, request: pytest.FixtureRequest
) -> None:
    or_node, expert_node = await nodes(start_node, backend, request, room_empty_timeout=1.0)
    for client in await yesterday(or_node, expert_node):
        await client.close()
    for node in {id(n): n for n in (or_node, expert_node)}.values():
        await until(lambda node=node: node.node.registry.get("or-1") is None)
    today = await expert_node.client("or-1", Role.EXPERT, identity="dr-zhang")
    assert_clean(today.snapshot)
    today_on_or_node = await or_node.client("or-1", Role.EXPERT, identity="dr-li")
    assert_clean(today_on_or_node.snapshot)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_moderator_ends_the_consultation_for_everyone(
    start_node: StartNode, backend: str, request: pytest.FixtureRequest
) -> None:
    or_node, expert_node = await nodes(start_node, backend, request)
    surgeon, monitor, expert, moderator, late = await yesterday(or_node, expert_node)
    with pytest.raises(ProtocolError) as refused:
        await expert.request("end_consultation")
    assert refused.value.code == "forbidden"
    started = await moderator.request("start_recording", {"consent": "written"})

    ended = await moderator.request("end_consultation")
    assert ended["room"] == "or-1" and isinstance(ended["ended_ms"], int)
    for client in (surgeon, monitor, expert, moderator, late):  # on both nodes
        notice = await client.next_event("consultation_ended")
        assert notice == {"room": "or-1", "by": "mod-li", "reason": "ended"}
        assert (await client.next_event("removed"))["reason"] == "consultation_ended"
        await asyncio.wait_for(client.disconnected.wait(), 5)
    stopped = await moderator.next_event("recording_stopped")
    assert stopped["id"] == started["id"] and stopped["reason"] == "consultation_ended"

    # at once, with no timeout: the next session in or-1 is a new consultation
    again = await or_node.client("or-1", Role.EXPERT, identity="dr-wang")
    assert_clean(again.snapshot)
    assert [p["identity"] for p in again.snapshot["participants"]] == ["dr-wang"]  # type: ignore[index]
    other = await expert_node.client("or-1", Role.EXPERT, identity="dr-zhang")
    assert_clean(other.snapshot)
