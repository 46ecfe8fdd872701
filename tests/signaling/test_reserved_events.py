"""Socket.IO and Engine.IO life-cycle names sent by a client as ordinary events (a hostile
client): refused `unknown_event`, and nothing about the sender or its room changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError
from orbridge.signaling.sio.namespace import RESERVED_EVENTS
from tests.conftest import LiveNode


async def raw_ack(client: Any, event: str, *args: Any) -> Any:
    return await client.sio.call(event, *args, timeout=5)


@pytest.mark.parametrize("name", sorted(RESERVED_EVENTS))
async def test_a_reserved_name_is_refused_and_changes_nothing(node: LiveNode, name: str) -> None:
    surgeon = await node.client("or-1", Role.SURGEON, identity="dr-ma")
    trainee = await node.client("or-1", Role.TRAINEE, identity="student-chen")
    moderator_of_b = node.token("or-2", Role.MODERATOR, identity="mod-li")
    before = node.node.namespace.claims[trainee.sio.get_sid("/")]
    bucket = node.node.namespace.buckets[trainee.sio.get_sid("/")]
    tokens_before = bucket.tokens

    answer = await raw_ack(trainee, name, {"token": moderator_of_b, "room": "or-2"})
    assert answer["ok"] is False and answer["error"]["code"] == "unknown_event"
    assert "reserved" in answer["error"]["message"]

    sid = trainee.sio.get_sid("/")
    assert node.node.namespace.claims[sid] is before  # claims not replaced
    assert node.node.namespace.buckets[sid] is bucket  # rate limiter not refilled
    assert bucket.tokens <= tokens_before + 1  # (refills with time only)
    presence = await node.node.presence.participants("or-1")
    assert {p.identity for p in presence} == {"dr-ma", "student-chen"}
    # still a trainee of or-1: may not record, and still receives the room's events
    with pytest.raises(ProtocolError) as refused:
        await trainee.request("start_recording", {"consent": "verbal"})
    assert refused.value.code == "forbidden"
    await surgeon.request("update", {"quality": "good"})
    updated = await trainee.next_event("participant_updated")
    assert updated["participant"]["identity"] == "dr-ma"
    assert surgeon.pending("participant_left") == []


async def test_connect_with_a_moderator_token_of_another_room_escalates_nothing(
    node: LiveNode,
) -> None:
    """The reported attack: a trainee of or-1 holding a moderator token of or-2."""
    surgeon = await node.client("or-1", Role.SURGEON, identity="dr-ma")
    trainee = await node.client("or-1", Role.TRAINEE, identity="student-chen")
    token = node.token("or-2", Role.MODERATOR, identity="mod-li")
    for args in ((None, {"token": token}), ({"token": token},), ()):
        answer = await raw_ack(trainee, "connect", *[a for a in args if a is not None])
        assert answer["error"]["code"] == "unknown_event"
    for event, payload in (
        ("start_recording", {"consent": "verbal"}),
        ("remove_participant", {"identity": "dr-ma"}),
        ("set_alarm_limits", {"limits": {"spo2": {"low": 1}}}),
        ("publish_vitals", {"numerics": [{"kind": "hr", "value": 30}]}),
    ):
        with pytest.raises(ProtocolError) as refused:
            await trainee.request(event, payload)
        assert refused.value.code in ("forbidden", "invalid_payload"), event
    assert node.node.recordings.recording("or-1") is None
    presence = await node.node.presence.participants("or-1")
    assert {p.identity for p in presence} == {"dr-ma", "student-chen"}
    assert surgeon.pending("removed") == []


async def test_a_client_sent_disconnect_leaves_no_invisible_listener(node: LiveNode) -> None:
    surgeon = await node.client("or-1", Role.SURGEON, identity="dr-ma")
    trainee = await node.client("or-1", Role.TRAINEE, identity="student-chen")
    answer = await raw_ack(trainee, "disconnect", "client disconnect")
    assert answer["error"]["code"] == "unknown_event"
    await asyncio.sleep(0.2)
    presence = await node.node.presence.participants("or-1")
    assert "student-chen" in {p.identity for p in presence}  # still listed: it still listens
    assert surgeon.pending("participant_left") == []
    # and the real life cycle still works: a real disconnect removes it
    await trainee.close()
    left = await surgeon.next_event("participant_left")
    assert left["identity"] == "student-chen"


def test_no_protocol_event_has_a_reserved_name(node: LiveNode) -> None:
    assert set(node.node.namespace.events) & RESERVED_EVENTS == set()
    assert len(node.node.namespace.events) > 10
