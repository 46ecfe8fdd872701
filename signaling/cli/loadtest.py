"""`orbridge loadtest`: N subscribers join a room and receive its tracks; one JSON line out.

Subscribers speak the normal protocol (join, subscribe, subscriber_offer/answer). Most of them
use a *light* receive mode: the DTLS transport's decrypted RTP is counted (a frame = a video
packet with the marker bit) instead of going through aiortc's receive pipeline (RTP parsing,
jitter buffer, depacketization), so a 2-core machine can load a server with many subscribers
without the load generator costing more than the server. `--decode K` makes K of them full
aiortc clients that decode the picture; for a synthetic source (`orbridge publish --synthetic`)
their frames' timestamp code gives the glass-to-glass latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from orbridge.media import aiortc_compat, tap
from orbridge.media.client import MediaClient
from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError, RoomClient

JOIN_TIMEOUT_S = 30.0


@dataclass
class SubscriberResult:
    index: int
    decode: bool
    joined_at: float = 0.0
    first_frame_at: float | None = None
    frames: int = 0
    bytes: int = 0
    window_frames: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    error: str | None = None

    def frame(self, now: float, size: int, counting: bool) -> None:
        if self.first_frame_at is None:
            self.first_frame_at = now
        self.frames += 1
        self.bytes += size
        if counting:
            self.window_frames += 1


def _video_payload_types(pc: RTCPeerConnection) -> set[int]:
    types = set()
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            for codec in aiortc_compat.transceiver_codecs(transceiver):
                if codec.mimeType.lower() != "video/rtx":
                    types.add(codec.payloadType)
    return types


class Run:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.counting = False
        self.results: list[SubscriberResult] = []
        self.clients: list[tuple[RoomClient, MediaClient]] = []

    def _light(self, result: SubscriberResult) -> Any:
        """Replace the subscriber connection's RTP handling with a frame counter."""

        def install(pc: RTCPeerConnection) -> None:
            video_pts = _video_payload_types(pc)
            for transceiver in pc.getTransceivers():
                transport = transceiver.receiver.transport

                async def count(data: bytes, arrival_time_ms: int, run: Run = self) -> None:
                    # RTP header byte 1: marker bit and payload type
                    if len(data) > 12 and (data[1] & 0x7F) in video_pts:
                        result.bytes += len(data)
                        if data[1] & 0x80:
                            result.frame(time.monotonic(), 0, run.counting)

                aiortc_compat.replace_rtp_handler(transport, count)

        return install

    async def _consume(self, result: SubscriberResult, track: MediaStreamTrack) -> None:
        from orbridge.media.sim.timecode import read_timestamp  # only decoding subscribers need it

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.VideoFrame):
                continue
            now = time.monotonic()
            result.frame(now, 0, self.counting)
            if self.counting:
                code = read_timestamp(frame.to_ndarray(format="gray"))
                if code is not None:
                    result.latencies_ms.append(time.time() * 1000 - code[0])

    async def _start(self, index: int, decode: bool) -> None:
        opts = self.opts
        result = SubscriberResult(index, decode)
        self.results.append(result)
        token = opts.token or tokens.mint(
            opts.secret, room=opts.room, role=Role.TRAINEE, name=f"Load {index}",
            identity=f"load-{os.getpid()}-{index}", ttl_s=3600,
        )  # fmt: skip
        room = RoomClient(opts.url, token, request_timeout=JOIN_TIMEOUT_S)
        if decode:
            media = MediaClient(room, on_pc=lambda pc: tap.set_receive_mode(pc, "decode"))
        else:
            media = MediaClient(room, before_answer=self._light(result))
        self.clients.append((room, media))
        try:
            await room.connect(room=opts.room)
            result.joined_at = time.monotonic()
            await room.join()

            async def on_track(info: dict[str, Any], track: MediaStreamTrack) -> None:
                if decode and track.kind == "video":
                    await self._consume(result, track)
                else:  # audio (or light mode's idle tracks): nothing to do but drain
                    with contextlib.suppress(MediaStreamError):
                        while decode:
                            await track.recv()

            await media.subscribe(on_track)
        except (ProtocolError, OSError, TimeoutError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"

    async def run(self) -> dict[str, Any]:
        opts = self.opts
        n, k = opts.subscribers, min(opts.decode, opts.subscribers)
        starts = []
        for i in range(n):
            starts.append(asyncio.ensure_future(self._start(i, i < k)))
            await asyncio.sleep(opts.ramp)
        await asyncio.gather(*starts)
        # wait (bounded) until everyone has a first frame, then measure a clean window
        for _ in range(int(JOIN_TIMEOUT_S * 10)):
            if all(r.first_frame_at is not None or r.error for r in self.results):
                break
            await asyncio.sleep(0.1)
        self.counting = True
        window_start = time.monotonic()
        await asyncio.sleep(opts.duration)
        self.counting = False
        window = time.monotonic() - window_start
        for room, media in self.clients:
            await media.close()
            await room.close()
        return self.report(window)

    def report(self, window: float) -> dict[str, Any]:
        ok = [r for r in self.results if r.error is None and r.first_frame_at is not None]
        fps = [r.window_frames / window for r in ok]
        first = sorted((r.first_frame_at - r.joined_at) * 1000 for r in ok)  # type: ignore[operator]
        latencies = sorted(x for r in ok if r.decode for x in r.latencies_ms)
        return {
            "subscribers": len(self.results),
            "receiving": len(ok),
            "failed": len(self.results) - len(ok),
            "errors": sorted({r.error for r in self.results if r.error})[:5],
            "decoding": sum(1 for r in self.results if r.decode),
            "window_s": round(window, 2),
            "fps": {"min": _round(min(fps, default=0)), "mean": _round(_mean(fps)),
                    "max": _round(max(fps, default=0))},
            "join_to_first_frame_ms": {"p50": _pct(first, 50), "p95": _pct(first, 95)},
            "glass_to_glass_ms": (
                {"p50": _pct(latencies, 50), "p95": _pct(latencies, 95), "samples": len(latencies)}
                if latencies else None
            ),
        }  # fmt: skip


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def _round(value: float) -> float:
    return round(value, 2)


def _pct(sorted_values: list[float], pct: int) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return round(sorted_values[index], 1)


def add_loadtest_parser(sub: Any) -> None:
    p = sub.add_parser("loadtest", help="N subscribers receive a room's tracks; prints JSON")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--room", required=True)
    p.add_argument("--subscribers", type=int, default=10)
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    p.add_argument("--decode", type=int, default=0, help="how many subscribers fully decode")
    p.add_argument("--ramp", type=float, default=0.05, help="seconds between joins")
    p.add_argument("--token", help="use this token for every subscriber (else mint with --secret)")
    p.add_argument("--secret", help="server secret (prefer ORBRIDGE_SECRET or --secret-file)")
    p.add_argument(
        "--secret-file",
        dest="secret_file",
        metavar="PATH",
        help="read the server secret from this file, mode 0600 (or ORBRIDGE_SECRET_FILE)",
    )
    p.add_argument(
        "--ice-address", default="127.0.0.1", help="local address for WebRTC (default 127.0.0.1)"
    )


async def run_loadtest(opts: argparse.Namespace) -> int:
    if not opts.token:
        from orbridge.signaling.settings import SettingsError, client_secret

        try:
            opts.secret = client_secret(opts.secret, opts.secret_file)
        except SettingsError as exc:
            print(f"orbridge loadtest: {exc}", flush=True)
            return 2
        if not opts.secret:
            print(
                "orbridge loadtest: give --token, or ORBRIDGE_SECRET (or --secret-file)", flush=True
            )
            return 2
    if not 1 <= opts.subscribers <= 1000 or not 0 < opts.duration <= 3600:
        print("orbridge loadtest: 1-1000 subscribers, duration 0-3600 s", flush=True)
        return 2
    from orbridge.media.ice import configure_candidate_addresses

    tap.install_tap("passthrough")  # light subscribers never decode; --decode ones opt in
    configure_candidate_addresses([opts.ice_address])
    report = await Run(opts).run()
    print(json.dumps(report), flush=True)
    return 0 if report["failed"] == 0 else 1
