"""The Socket.IO protocol against a real in-process server (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import jwt
import pytest

from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from tests.conftest import LiveNode, StartNode, mint
from tests.support import SECRET


async def test_join_snapshot_and_room_events(node: LiveNode) -> None:
    surgeon = await node.client("or-1", Role.SURGEON, identity="dr-ma", name="Dr Ma")
    assert surgeon.snapshot is not None
    assert surgeon.snapshot["room"] == "or-1"
    assert surgeon.snapshot["self"]["identity"] == "dr-ma"
    assert [p["identity"] for p in surgeon.snapshot["participants"]] == ["dr-ma"]

    expert = await node.client("or-1", Role.EXPERT, identity="dr-wang", name="Dr Wang")
    snap = expert.snapshot
    assert snap is not None
    roles = {p["identity"]: p["role"] for p in snap["participants"]}
    assert roles == {"dr-ma": "surgeon", "dr-wang": "expert"}
    me = snap["self"]
    assert me["name"] == "Dr Wang" and me["transport"] == "websocket"
    assert "annotate" in me["grants"] and "publish_video" not in me["grants"]

    joined = await surgeon.next_event("participant_joined")
    assert joined["participant"]["identity"] == "dr-wang"
    assert joined["participant"]["role"] == "expert"
    assert expert.pending("participant_joined") == []  # the joiner is not told of itself

    updated = await expert.request("update", {"quality": "poor", "attributes": {"muted": "true"}})
    assert updated["participant"]["quality"] == "poor"
    event = await surgeon.next_event("participant_updated")
    assert event["participant"]["attributes"] == {"muted": "true"}

    await expert.close()
    left = await surgeon.next_event("participant_left")
    assert left == {"identity": "dr-wang", "reason": "disconnected"}
    presence = await node.node.presence.participants("or-1")
    assert [p.identity for p in presence] == ["dr-ma"]


async def test_a_failing_join_hook_does_not_fail_the_join(
    node: LiveNode, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(participant: Any) -> None:
        raise RuntimeError("a capability failed")

    node.node.namespace.join_hooks.insert(0, broken)
    with caplog.at_level(logging.ERROR, "orbridge.signaling"):
        client = await node.client("or-1", Role.EXPERT, identity="dr-wang")
    assert client.snapshot is not None and client.snapshot["self"]["identity"] == "dr-wang"
    assert "join hook failed for dr-wang" in caplog.text
    assert "a capability failed" not in str(client.snapshot)


async def test_rooms_do_not_hear_each_other(node: LiveNode) -> None:
    a = await node.client("room-a", Role.EXPERT)
    await node.client("room-b", Role.EXPERT)
    with pytest.raises(asyncio.TimeoutError):
        await a.next_event("participant_joined", wait=0.5)


async def test_leave_then_join_again(node: LiveNode) -> None:
    watcher = await node.client("r", Role.MODERATOR)
    trainee = await node.client("r", Role.TRAINEE, identity="t1")
    await watcher.next_event("participant_joined")
    assert await trainee.request("leave") is None
    assert (await watcher.next_event("participant_left"))["reason"] == "left"
    with pytest.raises(ProtocolError) as err:
        await trainee.request("snapshot")
    assert err.value.code == "not_joined"
    await trainee.join()
    assert (await watcher.next_event("participant_joined"))["participant"]["identity"] == "t1"
    with pytest.raises(ProtocolError) as err:
        await trainee.join()
    assert err.value.code == "already_joined"


async def test_snapshot_event(node: LiveNode) -> None:
    a = await node.client("r", Role.SURGEON, identity="a")
    await node.client("r", Role.TRAINEE, identity="b")
    snap = await a.request("snapshot")
    assert [p["identity"] for p in snap["participants"]] == ["a", "b"]


async def test_duplicate_identity_replaces_the_old_connection(node: LiveNode) -> None:
    """The owner reconnecting (with the session's latest token) takes over its old socket."""
    watcher = await node.client("r", Role.MODERATOR, identity="mod")
    old = await node.client("r", Role.EXPERT, identity="dr-wang")
    await watcher.next_event("participant_joined")
    refreshed = (await old.request("refresh_token"))["token"]
    new = await node.client_with(refreshed)
    assert (await old.next_event("removed"))["reason"] == "duplicate_identity"
    await asyncio.wait_for(old.disconnected.wait(), 5)
    assert (await watcher.next_event("participant_joined"))["participant"]["identity"] == "dr-wang"
    await asyncio.sleep(0.3)
    assert watcher.pending("participant_left") == []  # the identity never left
    members = await node.node.presence.participants("r")
    assert sorted(p.identity for p in members) == ["dr-wang", "mod"]
    assert await new.request("snapshot")


async def test_moderator_removes_a_participant(node: LiveNode) -> None:
    mod = await node.client("r", Role.MODERATOR, identity="mod")
    victim = await node.client("r", Role.TRAINEE, identity="noisy")
    await mod.next_event("participant_joined")
    answer = await mod.request("remove_participant", {"identity": "noisy", "reason": "wrong room"})
    assert answer["identity"] == "noisy" and answer["banned_until"] > 0
    removed = await victim.next_event("removed")
    assert removed == {"reason": "removed", "by": "mod", "message": "wrong room"}
    await asyncio.wait_for(victim.disconnected.wait(), 5)
    assert await mod.next_event("participant_left") == {"identity": "noisy", "reason": "removed"}
    await asyncio.sleep(0.3)
    assert mod.pending("participant_left") == []  # told once, not again on disconnect
    with pytest.raises(ProtocolError) as err:
        await mod.request("remove_participant", {"identity": "noisy"})
    assert err.value.code == "not_found"


@pytest.mark.parametrize("role", [Role.TRAINEE, Role.EXPERT, Role.SURGEON, Role.DEVICE])
async def test_only_a_moderator_may_remove(node: LiveNode, role: Role) -> None:
    target = await node.client("r", Role.SURGEON, identity="target")
    someone = await node.client("r", role, identity="someone")
    with pytest.raises(ProtocolError) as err:
        await someone.request("remove_participant", {"identity": "target"})
    assert err.value.code == "forbidden"
    assert "remove_participants" in err.value.message
    # nothing happened to the target, and the refused connection still works
    assert await target.request("snapshot")
    assert await someone.request("snapshot")
    assert target.pending("removed") == []


BAD_PAYLOADS = [
    ("update", "not an object", "invalid_payload"),
    ("update", ["a", "list"], "invalid_payload"),
    ("update", {"quality": "superb"}, "invalid_payload"),
    ("update", {"unknown_field": 1}, "invalid_payload"),
    ("update", {"name": ""}, "invalid_payload"),
    ("update", {"name": 42}, "invalid_payload"),
    ("update", {}, "invalid_payload"),
    ("update", {"attributes": {"Bad Key": "x"}}, "invalid_payload"),
    ("update", {"attributes": {f"k{i}": "v" for i in range(17)}}, "invalid_payload"),
    ("update", {"attributes": {"note": "x" * 5000}}, "invalid_payload"),
    ("update", {"name": "x" * 20000}, "payload_too_large"),
    ("remove_participant", {"identity": "../etc/passwd"}, "forbidden"),
    ("no_such_event", {}, "unknown_event"),
    ("join", {"quality": ["a"]}, "invalid_payload"),
    ("join", {}, "already_joined"),
]


@pytest.mark.parametrize(("event", "payload", "code"), BAD_PAYLOADS)
async def test_bad_payloads_are_refused_and_nothing_breaks(
    node: LiveNode, event: str, payload: object, code: str
) -> None:
    watcher = await node.client("r", Role.MODERATOR, identity="watcher")
    sender = await node.client("r", Role.EXPERT, identity="sender")
    await watcher.next_event("participant_joined")
    with pytest.raises(ProtocolError) as err:
        await sender.request(event, payload)
    assert err.value.code == code
    assert "Traceback" not in err.value.message
    # connection up, state untouched, the room undisturbed
    assert (await sender.request("update", {"quality": "good"}))["participant"]["quality"] == "good"
    assert (await watcher.next_event("participant_updated"))["participant"]["quality"] == "good"
    assert watcher.pending("participant_left") == []
    me = await node.node.presence.get("r", "sender")
    assert me is not None and me.name == "Tester"


async def test_moderator_payload_validation(node: LiveNode) -> None:
    mod = await node.client("r", Role.MODERATOR)
    for payload in ({"identity": "../etc"}, {"identity": ""}, {}, {"identity": "x", "reason": 5}):
        with pytest.raises(ProtocolError) as err:
            await mod.request("remove_participant", payload)
        assert err.value.code == "invalid_payload", payload


async def test_events_before_join_are_refused(node: LiveNode) -> None:
    client = await node.client("r", Role.EXPERT, join=False)
    for event in ("update", "snapshot", "leave"):
        with pytest.raises(ProtocolError) as err:
            await client.request(event, {"quality": "good"} if event == "update" else None)
        assert err.value.code == "not_joined"
    assert (await client.join())["self"]["role"] == "expert"


async def test_rate_limit(start_node: StartNode) -> None:
    node = await start_node(event_rate=5, event_burst=5)
    client = await node.client("r", Role.EXPERT)
    codes = []
    for _ in range(12):
        try:
            await client.request("snapshot")
            codes.append("ok")
        except ProtocolError as exc:
            codes.append(exc.code)
    assert "rate_limited" in codes
    assert codes[:4] == ["ok"] * 4  # the burst (join took one token)
    await asyncio.sleep(1.0)
    assert await client.request("snapshot")  # the bucket refills


async def test_payload_above_the_transport_limit_closes_only_that_connection(
    node: LiveNode,
) -> None:
    watcher = await node.client("r", Role.MODERATOR, identity="watcher")
    flooder = await node.client("r", Role.EXPERT, identity="flooder")
    await watcher.next_event("participant_joined")
    await flooder.sio.emit("update", {"name": "x" * (2 * 1024 * 1024)})
    await asyncio.wait_for(flooder.disconnected.wait(), 10)
    assert (await watcher.next_event("participant_left"))["identity"] == "flooder"
    assert await watcher.request("snapshot")


# connection refusals ------------------------------------------------------------------


async def refused(node: LiveNode, token: object, room: str | None = None) -> ProtocolError:
    client = RoomClient(node.url, token)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError) as err:
        await client.connect(room=room)
    await client.close()
    return err.value


async def test_missing_token_is_refused(node: LiveNode) -> None:
    assert (await refused(node, "")).code == "token_missing"
    assert (await refused(node, None)).code == "token_missing"


async def test_expired_token_is_refused(node: LiveNode) -> None:
    token = mint("r", Role.EXPERT, ttl_s=60, now=time.time() - 3600)
    err = await refused(node, token)
    assert err.code == "token_expired"
    assert "expired" in err.message


async def test_forged_tokens_are_refused(node: LiveNode) -> None:
    other = "another-secret-0123456789-abcdefgh"
    from orbridge.rooms import tokens

    forged = tokens.mint(other, room="r", role=Role.MODERATOR, name="Mallory")
    assert (await refused(node, forged)).code == "token_invalid"

    payload = jwt.decode(mint("r", Role.TRAINEE), options={"verify_signature": False})
    payload["role"] = "moderator"  # tampered after signing
    header, _, signature = mint("r", Role.TRAINEE).split(".")
    body = jwt.api_jws.base64url_encode(jwt.api_jws.json.dumps(payload).encode()).decode()
    assert (await refused(node, f"{header}.{body}.{signature}")).code == "token_invalid"

    unsigned = jwt.encode(payload, key=None, algorithm="none")
    assert (await refused(node, unsigned)).code == "token_invalid"

    # Signed with our secret but granting a trainee what no trainee may have.
    payload["role"] = "trainee"
    payload["grants"] = ["annotate", "publish_video"]
    overreach = jwt.encode(payload, SECRET, algorithm="HS256")
    assert (await refused(node, overreach)).code == "token_invalid"
    assert (await refused(node, "garbage")).code == "token_invalid"
    assert (await refused(node, {"a": 1})).code == "token_missing"


async def test_wrong_room_token_is_refused(node: LiveNode) -> None:
    err = await refused(node, mint("room-a", Role.EXPERT), room="room-b")
    assert err.code == "token_wrong_room"
    ok = RoomClient(node.url, mint("room-a", Role.EXPERT))
    await ok.connect(room="room-a")
    assert (await ok.join())["room"] == "room-a"
    await ok.close()


async def test_refusals_and_errors_are_counted(node: LiveNode) -> None:
    await refused(node, "garbage")
    client = await node.client("r", Role.TRAINEE)
    with pytest.raises(ProtocolError):
        await client.request("remove_participant", {"identity": "x"})
    text = (await node.node.metrics.render(node.node.presence, 1)).decode()
    assert 'orbridge_errors_total{code="token_invalid"} 1.0' in text
    assert 'orbridge_errors_total{code="forbidden"} 1.0' in text
    assert 'orbridge_events_total{event="join"} 1.0' in text
    assert 'orbridge_participants{role="trainee"} 1.0' in text
    assert "orbridge_rooms 1.0" in text
