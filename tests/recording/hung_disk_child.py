"""Child process of the hung-disk test: records into a FIFO that nobody has opened yet.

Usage: ``python -m tests.recording.hung_disk_child FIFO``. Queues 10 s of 1280x720 VP8
for the writer, then prints ``tick N`` from its event loop every 20 ms for 1 s: a writer
that froze the process (the GIL held in a blocked write) prints nothing. Then it reports the
writer's state, waits for the parent to drain the FIFO, closes and prints ``closed PACKETS``.
A separate process because a frozen interpreter cannot report its own freeze.
"""

from __future__ import annotations

import asyncio
import sys

from orbridge.recording.live.writer import SegmentWriter
from tests.recording.conftest import encode_packets

FRAMES = 300


async def main(fifo: str) -> None:
    packets = encode_packets("VP8", 30, 1280, 720, 30, 30, 0, 2_500_000)
    writer = SegmentWriter(fifo, "VP8", queue_size=FRAMES + 10, loop=asyncio.get_running_loop())
    for i in range(FRAMES):
        writer.write_data(bytes(packets[i % 30]), i * 3000, i % 30 == 0, 0)
    for tick in range(50):
        await asyncio.sleep(0.02)
        print(f"tick {tick}", flush=True)
    print(f"written {writer.stats.packets_written} queued {writer.qsize}", flush=True)
    info = await writer.close(grace=20)
    print(f"closed {info.packets} error {info.error}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
