"""A recording whose node dies is repaired by another node of the group (issue #11 item 5):
two `orbridge serve` processes with their default node ids share one Redis and one recordings
directory; node A records what `orbridge publish --synthetic` sends; node B, passing over the
directory every half second, leaves A's recording alone while A is alive, and repairs it once
A has been killed with SIGKILL and has left presence."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from orbridge.recording.manifest import Manifest
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import RoomClient
from tests.conftest import mint
from tests.support import ROOT, SECRET, ServerProcess

pytestmark = pytest.mark.cluster


def live_node_ids(client: redis.Redis, prefix: str) -> set[str]:
    now_ms = int(time.time() * 1000)
    return {i.decode() for i in client.zrangebyscore(f"{prefix}nodes", now_ms, "+inf")}


async def test_a_dead_nodes_recording_is_repaired_by_another_never_while_it_lives(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    recordings = tmp_path / "recordings"

    def node(name: str) -> ServerProcess:
        return ServerProcess(
            "--redis", redis_url, "--data-dir", str(tmp_path / name), "--recordings-dir",
            str(recordings), "--presence-ttl", "2", "--heartbeat-interval", "0.5",
            env={"ORBRIDGE_REDIS_PREFIX": redis_prefix,
                 "ORBRIDGE_RECORDING_REPAIR_INTERVAL": "0.5"},
        )  # fmt: skip

    a = await asyncio.to_thread(node, "a")
    b: ServerProcess | None = None
    moderator = RoomClient(a.url, mint("or-1", Role.MODERATOR, "Dr Li", "mod-li"))
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orbridge.signaling.cli",
        "publish", "--url", a.url, "--room", "or-1",
        "--secret", SECRET, "--synthetic", "--size", "320x240", "--identity", "dr-ma",
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        await moderator.connect()
        await moderator.join()
        await moderator.next_event("track_published", wait=20)
        started = await moderator.request("start_recording", {"consent": "written"})
        directory = recordings / started["id"]
        node_a = (tmp_path / "a" / "node_id").read_text().strip()
        assert Manifest.load(directory).node == node_a

        # B starts while A records: neither its start nor its passes touch A's recording
        b = await asyncio.to_thread(node, "b")
        node_b = (tmp_path / "b" / "node_id").read_text().strip()
        assert node_b != node_a
        assert live_node_ids(client, redis_prefix) == {node_a, node_b}
        await asyncio.sleep(4.0)  # B's start pass and some eight more
        assert Manifest.load(directory).state == "recording"
        assert "repaired" not in b.log()

        await moderator.close()
        await asyncio.to_thread(a.kill)
        killed = time.monotonic()
        # until B repairs it: A leaves presence within its 2 s TTL, then its files have to
        # stay quiet for 10 s (a live recording rewrites its manifest every 5 s)
        left_presence = None
        deadline = killed + 30
        while Manifest.load(directory).state == "recording":
            assert time.monotonic() < deadline, b.log()[-3000:]
            if left_presence is None and node_a not in live_node_ids(client, redis_prefix):
                left_presence = time.monotonic()
            await asyncio.sleep(0.1)
        repaired = time.monotonic()
        assert left_presence is not None and left_presence <= repaired
        print(f"\nA left presence {left_presence - killed:.1f} s after its kill -9; "
              f"B repaired its recording {repaired - killed:.1f} s after")  # fmt: skip
    finally:
        await moderator.close()
        if publisher.returncode is None:
            publisher.kill()
        await publisher.wait()
        client.close()
        await asyncio.to_thread(a.stop)
        if b is not None:
            await asyncio.to_thread(b.stop)

    manifest = Manifest.load(directory)
    assert manifest.state == "interrupted" and manifest.node == node_a
    assert manifest.stopped_ms is not None and manifest.stopped_ms > manifest.started_ms
    [track] = manifest.tracks
    assert [s.file for s in track.segments] == ["laparoscope-dr-ma-001.webm"]
    assert track.segments[0].duration is not None and track.segments[0].duration > 3.0
    assert all(p.left_ms is not None for p in manifest.participants)
    assert f"recording {manifest.id} was interrupted (node {node_a} stopped" in b.log()
    assert not (directory / ".repair.lock").exists()
