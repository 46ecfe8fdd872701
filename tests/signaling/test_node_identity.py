"""The node id a server runs as (issue #11 item 5): the data directory's, kept across starts;
one process per data directory; a warning when presence already shows this node id alive."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from orbridge.rooms.presence import MemoryPresence, NodeInfo
from orbridge.rooms.presence_redis import RedisPresence
from orbridge.signaling.app import warn_if_node_id_alive
from tests.conftest import StartNode


async def test_nodes_sharing_a_data_dir_get_their_own_ids_and_the_first_keeps_it(
    start_node: StartNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = await start_node()
    kept = (tmp_path / "node_id").read_text().strip()
    assert first.node.info.node_id == kept
    assert first.node.recordings.node_id == kept
    with caplog.at_level(logging.WARNING, "orbridge"):
        second = await start_node()  # the same data directory (the fixture's tmp_path)
    assert second.node.info.node_id not in (kept, "")
    assert f"another running orbridge process uses the data directory {tmp_path}" in caplog.text
    assert (tmp_path / "node_id").read_text().strip() == kept


async def test_a_configured_node_id_is_used_as_given(start_node: StartNode, tmp_path: Path) -> None:
    live = await start_node(node_id="node-a")
    assert live.node.info.node_id == live.node.recordings.node_id == "node-a"
    assert not (tmp_path / "node_id").exists()


def info(node_id: str, address: str, started_at: int = 1_700_000_000_000) -> NodeInfo:
    return NodeInfo(node_id=node_id, address=address, started_at=started_at, version="test")


@pytest.mark.redis
async def test_a_live_node_with_this_id_in_presence_is_warned_about(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    presence = RedisPresence(redis_url, 5000, prefix=redis_prefix)
    try:
        await presence.register_node(info("node-a", "http://10.0.0.1:8080"))
        await presence.register_node(info("node-b", "http://10.0.0.2:8080"))
        assert await presence.live_node_ids() == {"node-a", "node-b"}
        with caplog.at_level(logging.WARNING, "orbridge"):
            assert not await warn_if_node_id_alive(presence, info("node-c", "http://x:1"))
            assert not caplog.text
            assert await warn_if_node_id_alive(presence, info("node-a", "http://10.0.0.9:8080"))
            assert "two nodes share one node id" in caplog.text
            assert "http://10.0.0.1:8080" in caplog.text
            caplog.clear()
            assert await warn_if_node_id_alive(presence, info("node-a", "http://10.0.0.1:8080"))
            assert "this node's previous run" in caplog.text
        await presence.unregister_node("node-a")
        assert await presence.live_node_ids() == {"node-b"}
    finally:
        await presence.close()


async def test_presence_unreachable_or_in_process_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "orbridge"):
        memory = MemoryPresence(5000)
        assert not await warn_if_node_id_alive(memory, info("node-a", "http://a"))
        down = RedisPresence("redis://127.0.0.1:1/0", 5000)  # nothing listens there
        try:
            assert not await warn_if_node_id_alive(down, info("node-a", "http://a"))
        finally:
            await down.close()
    assert not caplog.text
