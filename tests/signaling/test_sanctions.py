"""Removal is a ban, tokens are re-checked (#11.4): bans across nodes, revoked token chains,
the server's maximum token lifetime, expiry on live connections, refresh_token, and who may
take over a connected identity."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest

from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from tests.conftest import LiveNode, StartNode, mint
from tests.support import SECRET


async def nodes(start_node: StartNode, backend: str, request: pytest.FixtureRequest,
                **settings: Any) -> tuple[LiveNode, LiveNode]:  # fmt: skip
    """(the moderator's node, the removed one's): one node, or two sharing Redis."""
    if backend == "memory":
        node = await start_node(**settings)
        return node, node
    redis = {"redis_url": request.getfixturevalue("redis_url"),
             "redis_prefix": request.getfixturevalue("redis_prefix")}  # fmt: skip
    return await start_node(**redis, **settings), await start_node(**redis, **settings)


async def refused(node: LiveNode, token: str) -> str:
    with pytest.raises(ProtocolError) as err:
        await node.client_with(token)
    return err.value.code


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_removed_expert_cannot_rejoin_with_any_token(
    start_node: StartNode, backend: str, request: pytest.FixtureRequest
) -> None:
    here, there = await nodes(start_node, backend, request)
    mod = await here.client("or-1", Role.MODERATOR, identity="mod")
    link = mint("or-1", Role.EXPERT, "Dr Wang", "dr-wang")
    victim = await there.client_with(link)
    await mod.next_event("participant_joined")
    answer = await mod.request("remove_participant", {"identity": "dr-wang"})
    assert answer["identity"] == "dr-wang" and answer["banned_until"] > time.time() * 1000
    assert (await victim.next_event("removed"))["reason"] == "removed"
    await asyncio.wait_for(victim.disconnected.wait(), 5)
    await asyncio.sleep(0.5)
    # the same link (on either node): its chain is revoked
    assert await refused(there, link) == "token_revoked"
    assert await refused(here, link) == "token_revoked"
    # a fresh token for the same identity: banned from this room
    assert await refused(there, mint("or-1", Role.EXPERT, "Dr Wang", "dr-wang")) == "banned"
    # ...but not from another room
    elsewhere = await there.client("or-2", Role.EXPERT, identity="dr-wang")
    assert elsewhere.snapshot is not None


async def test_a_ban_for_a_chosen_time_ends_and_ban_s_0_only_removes(node: LiveNode) -> None:
    mod = await node.client("or-1", Role.MODERATOR, identity="mod")
    await node.client("or-1", Role.TRAINEE, identity="student-a")
    await node.client("or-1", Role.TRAINEE, identity="student-b")
    await mod.request("remove_participant", {"identity": "student-a", "ban_s": 1})
    await mod.request("remove_participant", {"identity": "student-b", "ban_s": 0})
    await asyncio.sleep(0.4)
    assert await refused(node, mint("or-1", Role.TRAINEE, identity="student-a")) == "banned"
    back = await node.client("or-1", Role.TRAINEE, identity="student-b")  # a new token: ok
    assert back.snapshot is not None
    await asyncio.sleep(1.0)
    again = await node.client("or-1", Role.TRAINEE, identity="student-a")
    assert again.snapshot is not None
    with pytest.raises(ProtocolError) as err:
        await mod.request("remove_participant", {"identity": "student-a", "ban_s": -1})
    assert err.value.code == "invalid_payload"


async def test_bans_end_with_the_consultation(node: LiveNode) -> None:
    mod = await node.client("or-1", Role.MODERATOR, identity="mod")
    await node.client("or-1", Role.EXPERT, identity="dr-wang")
    await mod.request("remove_participant", {"identity": "dr-wang"})  # the rest of it
    await asyncio.sleep(0.3)
    assert await refused(node, mint("or-1", Role.EXPERT, identity="dr-wang")) == "banned"
    await mod.request("end_consultation")
    await asyncio.sleep(0.5)
    tomorrow = await node.client("or-1", Role.EXPERT, identity="dr-wang")
    assert tomorrow.snapshot is not None


async def test_the_server_refuses_a_token_that_lives_too_long(node: LiveNode) -> None:
    now = int(time.time())
    forever = jwt.encode(
        {"iss": "orbridge", "sub": "dr-x", "room": "or-1", "name": "X", "role": "expert",
         "grants": ["subscribe_video"], "iat": now, "exp": 253402300799, "jti": "a" * 32},
        SECRET, algorithm="HS256",
    )  # fmt: skip
    assert await refused(node, forever) == "token_invalid"
    two_days = mint("or-1", Role.EXPERT, identity="dr-y", ttl_s=2 * 86400)
    assert await refused(node, two_days) == "token_invalid"
    day = await node.client_with(mint("or-1", Role.EXPERT, identity="dr-z", ttl_s=86400))
    assert day.snapshot is not None


async def test_an_expired_token_stops_working_on_a_live_connection(node: LiveNode) -> None:
    watcher = await node.client("or-1", Role.MODERATOR, identity="mod")
    short = await node.client_with(mint("or-1", Role.EXPERT, identity="dr-short", ttl_s=2))
    await watcher.next_event("participant_joined")
    arrow = {"type": "arrow", "track_id": "TR_0123456789ab", "points": [[0.2, 0.3], [0.5, 0.5]]}
    await short.request("annotate", arrow)
    # the server's leeway is 5 s: by 2 + 5 + 1 (sweep) s the connection is closed
    notice = await short.next_event("removed", wait=12)
    assert notice["reason"] == "token_expired"
    await asyncio.wait_for(short.disconnected.wait(), 5)
    left = await watcher.next_event("participant_left", wait=5)
    assert left == {"identity": "dr-short", "reason": "token_expired"}


async def test_refresh_token_extends_a_session_and_keeps_its_claims(node: LiveNode) -> None:
    client = await node.client_with(mint("or-1", Role.EXPERT, "Dr Wang", "dr-wang", ttl_s=3))
    answer = await client.request("refresh_token")
    fresh = tokens.verify(SECRET, answer["token"])
    old = tokens.verify(SECRET, client.token)
    assert fresh.expires_at == answer["expires_at"] >= old.expires_at
    assert (fresh.room, fresh.identity, fresh.name, fresh.role, fresh.grants) == (
        old.room, old.identity, old.name, old.role, old.grants,
    )  # fmt: skip
    assert fresh.jti != old.jti and fresh.chain == old.jti
    for _ in range(5):  # 10 s on a 3 s token, refreshed every 2 s
        await asyncio.sleep(2.0)
        await client.request("refresh_token")
    assert await client.request("snapshot")
    assert client.pending("removed") == []


async def test_refresh_keeps_a_short_token_short_and_caps_a_long_one(start_node: StartNode) -> None:
    node = await start_node(max_token_ttl=3600)
    client = await node.client_with(mint("or-1", Role.EXPERT, identity="dr-a", ttl_s=600))
    assert tokens.verify(SECRET, (await client.request("refresh_token"))["token"]).lifetime_s == 600
    claims = tokens.verify(SECRET, mint("or-1", Role.EXPERT, identity="dr-b", ttl_s=7200))
    capped = tokens.refresh(SECRET, claims, max_ttl_s=3600)
    assert tokens.verify(SECRET, capped).lifetime_s == 3600


async def test_a_copied_link_cannot_kick_out_its_owner(node: LiveNode) -> None:
    """The surgeon's console refreshed its token after joining; someone with the join link
    (forwarded in a chat) is refused while the surgeon is there, and the surgeon stays."""
    link = mint("or-1", Role.SURGEON, "Dr Ma", "dr-ma")
    owner = await node.client_with(link)
    session = (await owner.request("refresh_token"))["token"]
    assert await refused(node, link) == "duplicate_identity"
    await asyncio.sleep(0.3)
    assert owner.pending("removed") == [] and await owner.request("snapshot")
    # the owner itself, reconnecting with its session token after a blip, takes over
    again = await node.client_with(session)
    assert (await owner.next_event("removed"))["reason"] == "duplicate_identity"
    assert again.snapshot is not None
    # once the owner's session has ended, the link works again
    await again.request("leave")
    await again.close()
    await asyncio.sleep(0.3)
    later: RoomClient = await node.client_with(link)
    assert later.snapshot is not None


async def test_a_ban_in_one_room_leaves_the_identity_free_elsewhere(node: LiveNode) -> None:
    mod = await node.client("or-1", Role.MODERATOR, identity="mod")
    other = await node.client("or-2", Role.EXPERT, identity="dr-wang")  # same person elsewhere
    await node.client("or-1", Role.EXPERT, identity="dr-wang")
    await mod.request("remove_participant", {"identity": "dr-wang"})
    refreshed = await other.request("refresh_token")  # or-2 is not concerned
    assert tokens.verify(SECRET, refreshed["token"]).room == "or-2"
