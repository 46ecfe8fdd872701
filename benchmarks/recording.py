"""Recording cost in the server: one 1280x720 30 fps VP8 track (~2.5 Mbps), recorded by a real
`orbridge serve` (pinned to core 0) from a real publisher (`orbridge publish --file`, core 1).

The server's CPU is read over alternating windows with the recording off and on (forwarding the
same track to nobody either way), so the difference is what recording adds: the recorder sink,
the writer thread, the event log and manifest. The same run then measures the recorder core
against aiortc's MediaRecorder (which decodes and re-encodes) with ``benchmarks.recorder_cost``.

    .venv/bin/python -m benchmarks.recording --window 10 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import recorder_cost
from benchmarks.common import cpu_seconds, pinned_server
from orbridge.media.sim.clip import write_clip
from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import RoomClient
from tests.support import ROOT

SECRET = "recording-benchmark-secret-0123456789abcd"
KEYS = ("pacing_only_core", "orbridge_core", "aiortc_mediarecorder_core",
        "ratio_aiortc_over_orbridge")  # fmt: skip


async def server_side(url: str, pid: int, clip: Path, window: float, rounds: int) -> dict[str, Any]:
    publisher = await asyncio.create_subprocess_exec(
        "taskset", "-c", "1", sys.executable, "-m", "orbridge.signaling.cli",
        "publish", "--url", url,
        "--room", "or-1", "--secret", SECRET, "--file", str(clip), "--identity", "or-cam",
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    token = tokens.mint(SECRET, room="or-1", role=Role.MODERATOR, name="Bench", identity="mod")
    moderator = RoomClient(url, token)
    off: list[float] = []
    on: list[float] = []
    files: list[str] = []
    try:
        await moderator.connect()
        await moderator.join()
        await moderator.next_event("track_published", wait=30)
        await asyncio.sleep(2.0)  # let the publisher settle

        async def sample() -> float:
            wall0, cpu0 = time.perf_counter(), cpu_seconds(pid)
            await asyncio.sleep(window)
            return (cpu_seconds(pid) - cpu0) / (time.perf_counter() - wall0)

        for _ in range(rounds):
            off.append(await sample())
            await moderator.request("start_recording", {"consent": "not_required"})
            await asyncio.sleep(1.0)  # the first keyframe and file creation are not steady state
            on.append(await sample())
            stopped = await moderator.request("stop_recording", {})
            files += stopped["files"]
    finally:
        await moderator.close()
        publisher.terminate()
        await publisher.wait()
    cost = sum(on) / len(on) - sum(off) / len(off)
    return {
        "server_core_not_recording": [round(v, 4) for v in off],
        "server_core_recording": [round(v, 4) for v in on],
        "recording_core": round(cost, 4),
        "files": files,
    }


async def main(window: float, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="orbridge-recbench-") as tmp:
        directory = Path(tmp)
        clip = await asyncio.to_thread(
            write_clip, directory / "clip.webm", seconds=10.0, width=1280, height=720, fps=30,
            codec="VP8", bitrate=2_500_000, gop_seconds=2.0,
        )  # fmt: skip
        args = ("--data-dir", str(directory), "--recordings-dir", str(directory / "rec"))
        with pinned_server(SECRET, 0, args) as (server, url):
            live = await server_side(url, server.pid, clip, window, rounds)
    sink = await recorder_cost.main(window)
    return {
        "stream": "VP8 1280x720 30 fps ~2.5 Mbps",
        "server": live,
        "recorder_alone": {k: sink[k] for k in KEYS},
        "goal_below_core": 0.03,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds per CPU window")
    parser.add_argument("--rounds", type=int, default=2, help="off/on window pairs")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.window, args.rounds)), indent=1))


if __name__ == "__main__":
    cli()
