"""kill -9 of a recording server (issue #6): `orbridge serve` records what `orbridge publish
--synthetic` sends (the pictures carry their capture time); the server is killed; the file
decodes up to within 2 s of the kill, and the restarted server repairs the manifest: with
--node-id, and with the default node id, kept in the data directory (issue #11 item 5: it used
to change at every start, and the restarted node left the recording in `recording`)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orbridge.recording.manifest import Manifest
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import RoomClient
from tests.conftest import mint
from tests.recording.conftest import decode_file
from tests.support import ROOT, SECRET, ServerProcess


@pytest.mark.parametrize("node_id", ["node-a", None], ids=["node-id", "default-node-id"])
async def test_kill_9_mid_recording_loses_at_most_two_seconds(
    tmp_path: Path, node_id: str | None
) -> None:
    recordings = tmp_path / "recordings"
    flags = (*(("--node-id", node_id) if node_id else ()), "--data-dir", str(tmp_path),
             "--recordings-dir", str(recordings))  # fmt: skip
    server = await asyncio.to_thread(ServerProcess, *flags)
    moderator = RoomClient(server.url, mint("or-1", Role.MODERATOR, "Dr Li", "mod-li"))
    await moderator.connect()
    await moderator.join()
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orbridge.signaling.cli",
        "publish", "--url", server.url, "--room", "or-1",
        "--secret", SECRET, "--synthetic", "--size", "320x240", "--identity", "dr-ma",
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await moderator.next_event("track_published", wait=20)
        started = await moderator.request("start_recording", {"consent": "written"})
        await asyncio.sleep(5.0)
        killed_ms = time.time() * 1000
        server.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(server.proc.wait, 10)
    finally:
        await moderator.close()
        if publisher.returncode is None:
            publisher.kill()
        await publisher.wait()
        await asyncio.to_thread(server.stop)

    directory = recordings / started["id"]
    files = sorted(directory.glob("laparoscope-dr-ma-*.webm"))
    assert [f.name for f in files] == ["laparoscope-dr-ma-001.webm"]
    decoded = await asyncio.to_thread(decode_file, files[0], True)
    codes = [code for code in decoded.codes if code]
    assert len(codes) == decoded.frames >= 60  # every frame decodes, none is corrupt
    loss = (killed_ms - codes[-1][0]) / 1000
    print(f"\nserver kill -9: {decoded.frames} frames decodable, last {loss:.2f} s before kill")
    assert loss < 2.0
    assert Manifest.load(directory).state == "recording"  # as the crash left it
    if node_id is None:  # generated at the first start, 0600 in the 0700 data directory
        node_id_file = tmp_path / "node_id"
        assert stat.S_IMODE(os.stat(node_id_file).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700
        node_id = node_id_file.read_text().strip()
    assert Manifest.load(directory).node == node_id

    # the node comes back: the recording is marked interrupted, with what the file holds
    server = await asyncio.to_thread(ServerProcess, *flags)
    try:
        manifest = Manifest.load(directory)
        assert manifest.state == "interrupted" and manifest.stopped_ms is not None
        [segment] = manifest.tracks[0].segments
        assert segment.duration is not None
        assert abs(segment.duration - (decoded.times[-1] + 1 / 30)) < 0.1
        assert manifest.stopped_ms <= killed_ms + 100
        assert all(p.left_ms is not None for p in manifest.participants)
        assert f"recording {started['id']} was interrupted (this node stopped" in server.log()
        assert (tmp_path / "node_id").exists() == (node_id != "node-a")
        if node_id != "node-a":  # the same node id at the second start
            assert (tmp_path / "node_id").read_text().strip() == node_id
    finally:
        await asyncio.to_thread(server.stop)
