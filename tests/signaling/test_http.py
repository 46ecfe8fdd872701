"""HTTP: health, metrics, and the rooms API with its authorization."""

from __future__ import annotations

import aiohttp

from orbridge.rooms.roles import Role
from tests.conftest import LiveNode, StartNode, mint
from tests.support import free_port


async def get(url: str, credential: str | None = None, header: str = "Authorization"):  # type: ignore[no-untyped-def]
    headers = {}
    if credential is not None:
        headers[header] = f"Bearer {credential}" if header == "Authorization" else credential
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        ctype = response.headers.get("Content-Type", "")
        body = await response.json() if "json" in ctype else await response.text()
        return response.status, body


async def test_healthz_memory(node: LiveNode) -> None:
    status, body = await get(node.url + "/healthz")
    assert status == 200
    assert body["status"] == "ok"
    assert body["presence"] == {"backend": "memory", "reachable": True}


async def test_healthz_reports_redis(
    start_node: StartNode, redis_url: str, redis_prefix: str
) -> None:
    node = await start_node(redis_url=redis_url, redis_prefix=redis_prefix)
    status, body = await get(node.url + "/healthz")
    assert status == 200 and body["presence"] == {"backend": "redis", "reachable": True}
    # Redis goes away: health says so (503) and the node keeps serving HTTP.
    from orbridge.rooms.presence_redis import RedisPresence

    node.node.presence = RedisPresence(f"redis://127.0.0.1:{free_port()}/0", 3000)
    status, body = await get(node.url + "/healthz")
    assert status == 503
    assert body["status"] == "degraded" and body["presence"]["reachable"] is False


async def test_metrics_prometheus_format(node: LiveNode) -> None:
    await node.client("r", Role.SURGEON)
    await node.client("r", Role.EXPERT)
    await node.client("s", Role.EXPERT)
    status, text = await get(node.url + "/metrics")
    assert status == 200
    assert "# TYPE orbridge_events_total counter" in text
    assert "orbridge_rooms 2.0" in text
    assert 'orbridge_participants{role="expert"} 2.0' in text
    assert 'orbridge_participants{role="surgeon"} 1.0' in text
    assert 'orbridge_events_total{event="join"} 3.0' in text
    assert "orbridge_node_connections 3.0" in text
    assert "orbridge_presence_up 1.0" in text
    assert 'orbridge_media{what="sessions"} 3.0' in text
    assert 'orbridge_media_codecs_created{kind="video",op="decoder"}' in text


async def test_rooms_api_requires_credentials(start_node: StartNode) -> None:
    node = await start_node(api_keys=["admin-key-123"])
    await node.client("or-1", Role.SURGEON, identity="dr-ma")
    await node.client("or-2", Role.EXPERT, identity="dr-wang")

    status, body = await get(node.url + "/api/rooms")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await get(node.url + "/api/rooms", "wrong-key")
    assert status == 401 and body["error"]["code"] == "token_invalid"
    status, body = await get(node.url + "/api/rooms", mint("or-1", Role.EXPERT))
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await get(node.url + "/api/rooms/or-1", mint("or-1", Role.SURGEON))
    assert status == 403

    # An API key sees every room and the nodes.
    status, body = await get(node.url + "/api/rooms", "admin-key-123")
    assert status == 200
    assert [r["room"] for r in body["rooms"]] == ["or-1", "or-2"]
    assert body["nodes"][0]["node_id"] == node.node.info.node_id
    status, body = await get(node.url + "/api/rooms", "admin-key-123", header="X-API-Key")
    assert status == 200

    # A moderator's token sees its own room only.
    moderator = mint("or-1", Role.MODERATOR)
    status, body = await get(node.url + "/api/rooms", moderator)
    assert status == 200 and [r["room"] for r in body["rooms"]] == ["or-1"] and "nodes" not in body
    status, body = await get(node.url + "/api/rooms/or-1", moderator)
    assert status == 200
    (person,) = body["participants"]
    assert person["identity"] == "dr-ma" and person["role"] == "surgeon"
    assert person["node"] == node.node.info.node_id and person["state"] == "connected"
    assert isinstance(person["joined_at"], int)
    assert "sid" not in person
    status, body = await get(node.url + "/api/rooms/or-2", moderator)
    assert status == 403 and body["error"]["code"] == "token_wrong_room"


async def test_rooms_api_validates_the_room_name(start_node: StartNode) -> None:
    node = await start_node(api_keys=["admin-key-123"])
    status, body = await get(node.url + "/api/rooms/bad%20name", "admin-key-123")
    assert status == 400 and body["error"]["code"] == "invalid_room"
    status, body = await get(node.url + "/api/rooms/empty-room", "admin-key-123")
    assert status == 200 and body["participants"] == []
