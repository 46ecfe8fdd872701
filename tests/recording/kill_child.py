"""Child process of the kill -9 test: records a real-time synthetic stream until killed.

Usage: ``python -m tests.recording.kill_child PATH CODEC``. Prints ``recording`` once the
first packet was handed to the writer, then records until SIGKILL (or 30 s, a safety stop).
"""

from __future__ import annotations

import asyncio
import sys
import time

from orbridge.media.sim.sources import SyntheticVideoTrack
from orbridge.recording.live.writer import SegmentWriter


async def main(path: str, codec: str) -> None:
    track = SyntheticVideoTrack(320, 240, fps=30, bitrate=600_000, codec=codec, gop_seconds=2.0)  # type: ignore[arg-type]
    writer = SegmentWriter(path, codec, loop=asyncio.get_running_loop())
    started = time.monotonic()
    announced = False
    while time.monotonic() - started < 30:
        packet = await track.recv()
        writer.write(packet, int(time.time() * 1000))
        if not announced:
            announced = True
            print("recording", flush=True)
    await writer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
