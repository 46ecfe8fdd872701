"""Micro-benchmark: CPU cost of recording one HD VP8 track, ours vs aiortc's MediaRecorder.

``python -m benchmarks.recorder_cost [--seconds 10]`` writes a 1280x720 30 fps ~2.5 Mbps VP8 clip
(``write_clip``), streams it with ``FileVideoTrack`` (packets paced in real time, as they would
arrive), and records the same stream twice:

* ``orbridge``: packets -> :class:`~recording.live.writer.SegmentWriter` (no transcoding);
* ``aiortc``: what a plain aiortc server does, the receiver decodes the packets and
  ``MediaRecorder`` re-encodes them into WebM.

Prints JSON: process CPU seconds (all threads, ``time.process_time``) over wall seconds, i.e.
the fraction of one core, for each, minus the cost of just pacing the packets (measured
first), and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import av
from aiortc.contrib.media import MediaRecorder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from orbridge.media.sim.clip import write_clip
from orbridge.media.sim.sources import FileVideoTrack
from orbridge.recording.live.writer import SegmentWriter


class _DecodingTrack(MediaStreamTrack):
    """Decodes a packet track into frames, as aiortc's receiver does without the tap."""

    kind = "video"

    def __init__(self, source: FileVideoTrack) -> None:
        super().__init__()
        self.source = source
        self.decoder = av.CodecContext.create("vp8", "r")

    async def recv(self) -> av.VideoFrame:
        while True:
            packet = await self.source.recv()
            frames = self.decoder.decode(packet)
            if frames:
                frame = frames[0]
                frame.pts, frame.time_base = packet.pts, packet.time_base
                return frame


async def _measure(seconds: float, run: Any) -> dict[str, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await run(seconds)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "core": cpu / wall}


async def _pace_only(clip: Path, seconds: float) -> None:
    track = FileVideoTrack(clip)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await track.recv()
    track.stop()


async def _ours(clip: Path, out: Path, seconds: float) -> dict[str, Any]:
    track = FileVideoTrack(clip)
    writer = SegmentWriter(out, "VP8", loop=asyncio.get_running_loop())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        packet = await track.recv()
        writer.write(packet, int(time.time() * 1000))
    info = await writer.close()
    track.stop()
    return {"packets": info.packets, "bytes": info.bytes, "error": info.error}


async def _aiortc(clip: Path, out: Path, seconds: float) -> None:
    source = FileVideoTrack(clip)
    track = _DecodingTrack(source)
    recorder = MediaRecorder(str(out))
    recorder.addTrack(track)
    await recorder.start()
    await asyncio.sleep(seconds)
    await recorder.stop()
    source.stop()


async def main(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="orbridge-bench-") as tmp:
        directory = Path(tmp)
        clip = await asyncio.to_thread(
            write_clip,
            directory / "clip.webm",
            seconds=min(seconds, 10.0),
            width=1280,
            height=720,
            fps=30,
            codec="VP8",
            bitrate=2_500_000,
            gop_seconds=2.0,
        )
        base = await _measure(seconds, lambda s: _pace_only(clip, s))
        details: dict[str, Any] = {}

        async def ours(s: float) -> None:
            details.update(await _ours(clip, directory / "ours.webm", s))

        mine = await _measure(seconds, ours)
        theirs = await _measure(seconds, lambda s: _aiortc(clip, directory / "aiortc.webm", s))
        ours_core = max(mine["core"] - base["core"], 0.0)
        aiortc_core = max(theirs["core"] - base["core"], 0.0)
        with av.open(str(directory / "ours.webm")) as container:
            frames = sum(1 for _ in container.decode(video=0))
    return {
        "stream": "VP8 1280x720 30 fps ~2.5 Mbps, packets paced in real time",
        "seconds": seconds,
        "pacing_only_core": round(base["core"], 4),
        "orbridge_core": round(ours_core, 4),
        "aiortc_mediarecorder_core": round(aiortc_core, 4),
        "ratio_aiortc_over_orbridge": round(aiortc_core / ours_core, 1) if ours_core else None,
        "orbridge_raw": mine,
        "aiortc_raw": theirs,
        "orbridge_file": {**details, "frames_decoded": frames},
        "goal_orbridge_below": 0.03,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    try:
        result = asyncio.run(main(args.seconds))
    except MediaStreamError as exc:  # the clip ended early: should not happen with loop=True
        raise SystemExit(f"source ended: {exc}") from exc
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    cli()
