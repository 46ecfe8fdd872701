"""``orbridge publish``: stream a synthetic laparoscope (or a file) into a room.

It is a real client of the protocol (docs/protocol.md): it connects with a join token
(given, or minted here with the server's secret for the role ``surgeon``), joins, publishes
through :class:`media.client.MediaClient` and sends pre-encoded VP8/H.264 packets, so the
bitrate is exactly what was asked and the server forwards what a browser would send.

Output on stdout: one JSON line when media is flowing (``"event": "publishing"``) and one
JSON summary at the end (``"event": "summary"``: frames, keyframes, achieved fps and bitrate).
Exit status: 0 after ``--duration`` or Ctrl-C/SIGTERM; 1 when the server refuses, removes
us, shuts down, disconnects, or the media connection fails; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import re
import signal
import sys
import time
from typing import Any
from urllib.parse import urlparse

from orbridge.rooms.tracks import SOURCES

__all__ = ["add_publish_parser", "parse_bitrate", "parse_size", "run_publish"]

SIGNALING_GRACE = 1.0
"""Seconds a media failure waits for the server's explanation before it is reported."""

_BITRATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*(?:bps)?\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720); both even (4:2:0) and at least 64."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size {text!r}: use WIDTHxHEIGHT, e.g. 1280x720")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 64 or height < 64 or width % 2 or height % 2 or width * height > 3840 * 2160:
        raise argparse.ArgumentTypeError(f"size {text!r}: even sides, 64x64 up to 3840x2160")
    return width, height


def parse_bitrate(text: str) -> int:
    """'2500k', '2.5M', '800000' -> bits per second."""
    match = _BITRATE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"bitrate {text!r}: use e.g. 2500k or 2.5M")
    value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[match.group(2).lower()]
    if not 50_000 <= value <= 50_000_000:
        raise argparse.ArgumentTypeError(f"bitrate {text!r}: between 50k and 50M")
    return int(value)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0 or value > 120:
        raise argparse.ArgumentTypeError("must be above 0 and at most 120")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def add_publish_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``publish`` subcommand to the ``orbridge`` parser."""
    p = subparsers.add_parser(
        "publish",
        help="publish a synthetic laparoscope (or a VP8/H.264 file) into a room",
        description="Join a room as a surgeon and publish pre-encoded video (and a tone).",
    )
    p.add_argument("--url", required=True, help="server URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--token", help="join token (else one is minted: needs --room and a secret)")
    p.add_argument("--room", help="room to join (required without --token)")
    p.add_argument(
        "--secret", help="server secret to mint a surgeon token (prefer ORBRIDGE_SECRET)"
    )
    p.add_argument(
        "--secret-file",
        dest="secret_file",
        metavar="PATH",
        help="read the server secret from this file, mode 0600 (or ORBRIDGE_SECRET_FILE)",
    )
    p.add_argument("--identity", help="participant identity when minting (default: generated)")
    p.add_argument("--name", default="Synthetic laparoscope", help="display name when minting")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--synthetic",
        action="store_true",
        help="generated laparoscopy picture with a timestamp code",
    )
    source.add_argument("--file", help="stream this VP8/H.264 file (looped, not re-encoded)")
    p.add_argument("--size", type=parse_size, default=(1280, 720), help="default 1280x720")
    p.add_argument("--fps", type=_positive, default=30.0, help="frames per second (default 30)")
    p.add_argument(
        "--bitrate",
        type=parse_bitrate,
        default=2_500_000,
        help="video bitrate, e.g. 2500k (default) or 1.5M",
    )
    p.add_argument(
        "--codec",
        choices=["VP8", "H264"],
        type=str.upper,
        help="video codec (default VP8; a --file decides by itself)",
    )
    p.add_argument(
        "--gop", type=_positive, default=4.0, help="seconds between periodic keyframes (default 4)"
    )
    p.add_argument(
        "--out-of-body-every",
        dest="out_of_body_every",
        type=_non_negative,
        default=0.0,
        help="seconds between 3 s out-of-body scenes (default 0: off)",
    )
    p.add_argument(
        "--source",
        default="laparoscope",
        choices=SOURCES,
        help="track source (default laparoscope)",
    )
    p.add_argument(
        "--duration",
        type=_non_negative,
        default=0.0,
        help="seconds to publish (default 0: until Ctrl-C or SIGTERM)",
    )
    p.add_argument("--audio", action="store_true", help="also publish a synthetic microphone")
    p.add_argument(
        "--ice-address",
        dest="ice_addresses",
        action="append",
        help="local address for ICE candidates (repeatable; default: 127.0.0.1 for a "
        "loopback --url, else every interface)",
    )
    p.add_argument(
        "--connect-timeout",
        dest="connect_timeout",
        type=_positive,
        default=15.0,
        help="seconds to wait for the media connection (default 15)",
    )
    return p


def _fail(message: str) -> None:
    print(f"orbridge publish: {message}", file=sys.stderr, flush=True)


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, separators=(",", ":")), flush=True)


def _is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token(args: argparse.Namespace) -> str | None:
    from orbridge.rooms.roles import Role
    from orbridge.rooms.tokens import cli_token
    from orbridge.signaling.settings import SettingsError, client_secret

    try:
        secret = None if args.token else client_secret(args.secret, args.secret_file)
        return cli_token(args.token, secret, args.room, Role.SURGEON, args.name, args.identity)
    except (ValueError, SettingsError) as exc:
        _fail(str(exc))
        return None


async def _rtp_counters(sender: Any) -> dict[str, int]:
    with contextlib.suppress(Exception):
        report = await sender.getStats()
        for stat in report.values():
            if getattr(stat, "type", "") == "outbound-rtp":
                return {"packets_sent": stat.packetsSent, "bytes_sent": stat.bytesSent}
    return {}


async def run_publish(args: argparse.Namespace) -> int:
    """Run ``orbridge publish`` with parsed arguments; returns the exit status."""
    from orbridge.media.client import MediaClient, Outgoing
    from orbridge.media.ice import candidate_policy, configure_candidate_addresses
    from orbridge.media.sim.sources import FileVideoTrack, SyntheticVideoTrack, ToneAudioTrack
    from orbridge.media.sim.sources import wire_keyframe_requests as wire
    from orbridge.signaling.cli.client import ProtocolError, RoomClient

    token = _token(args)
    if token is None:
        return 2
    width, height = args.size
    video: SyntheticVideoTrack | FileVideoTrack
    try:
        if args.file:
            video = FileVideoTrack(args.file)
            if args.codec and args.codec != video.codec:
                _fail(f"{args.file} holds {video.codec}, not {args.codec}")
                video.stop()
                return 2
        else:
            video = SyntheticVideoTrack(
                width,
                height,
                args.fps,
                args.bitrate,
                args.codec or "VP8",
                gop_seconds=args.gop,
                out_of_body_every=args.out_of_body_every or None,
            )
    except (OSError, ValueError) as exc:  # av.FFmpegError subclasses OSError/ValueError
        _fail(f"cannot open the video source: {exc}")
        return 2
    codec = video.codec
    audio = ToneAudioTrack() if args.audio else None

    # ICE: a server on loopback only offers 127.0.0.1, which aioice never gathers by itself.
    previous_policy = candidate_policy()
    addresses = args.ice_addresses or (["127.0.0.1"] if _is_loopback_url(args.url) else None)
    if addresses:
        try:
            configure_candidate_addresses(addresses)
        except ValueError as exc:
            _fail(f"bad --ice-address: {exc}")
            video.stop()
            return 2

    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[tuple[int, str]] = loop.create_future()

    def finish(code: int, reason: str) -> None:
        if not outcome.done():
            outcome.set_result((code, reason))

    def finish_soon(code: int, reason: str) -> None:
        # A server that removes us or shuts down may close the media first: give its
        # `removed`/`server_shutdown`/disconnect a moment to arrive and explain why.
        loop.call_later(SIGNALING_GRACE, finish, code, reason)

    room = RoomClient(args.url, token)
    media = MediaClient(room, video_codec=codec)
    signals: list[int] = []
    tasks: list[asyncio.Future[Any]] = []
    session: dict[str, Any] = {"identity": None, "room": None, "sender": None}

    async def on_removed(data: Any = None) -> None:
        data = data if isinstance(data, dict) else {}
        by = f" by {data['by']}" if data.get("by") else ""
        note = f": {data['message']}" if data.get("message") else ""
        finish(1, f"removed from the room ({data.get('reason', 'removed')}){by}{note}")

    async def on_shutdown(data: Any = None) -> None:
        finish(1, "the server is shutting down (server_shutdown)")

    async def on_disconnect() -> None:
        await room.disconnected.wait()
        finish(1, "disconnected from the server")

    async def start() -> None:
        """Connect, join, publish, wait for media; every failure ends in ``finish``."""
        room.on("removed", on_removed)
        room.on("server_shutdown", on_shutdown)
        try:
            await room.connect(room=args.room)
            snapshot = await room.join(quality="unknown", attributes={"client": "orbridge-publish"})
        except ProtocolError as exc:
            finish(1, f"cannot join: {exc}")
            return
        except (TimeoutError, OSError) as exc:
            finish(1, f"cannot reach {args.url}: {exc}")
            return
        session["identity"], session["room"] = snapshot["self"]["identity"], snapshot["room"]
        tasks.append(asyncio.ensure_future(on_disconnect()))

        outgoing = [Outgoing(video, args.source)]
        if audio is not None:
            outgoing.append(Outgoing(audio, "microphone"))
        try:
            tracks = await media.publish(outgoing)
        except ProtocolError as exc:
            finish(1, f"the server refused to publish: {exc}")
            return
        pc = media.publisher
        assert pc is not None
        sender = session["sender"] = next(s for s in pc.getSenders() if s.track is video)
        wire(sender, video)
        video.on("ended", lambda: finish_soon(1, "the video source ended"))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                finish_soon(1, f"media connection {pc.connectionState}")

        try:
            async with asyncio.timeout(args.connect_timeout):
                while pc.connectionState != "connected":  # noqa: ASYNC110 - no event to await
                    await asyncio.sleep(0.05)
        except TimeoutError:
            finish(1, f"media connection not established within {args.connect_timeout:g} s")
            return
        _emit(
            {
                "event": "publishing",
                "room": session["room"],
                "identity": session["identity"],
                "url": args.url,
                "codec": codec,
                "source": args.source,
                "size": [video.width, video.height],
                "fps": args.fps if args.synthetic else None,
                "bitrate": args.bitrate if args.synthetic else None,
                "file": args.file,
                "tracks": tracks,
                "started_at": int(time.time() * 1000),
            }
        )
        if args.duration:
            loop.call_later(args.duration, finish, 0, "duration reached")

    def start_done(task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            finish(1, f"internal error: {task.exception()!r}")

    summary: dict[str, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, finish, 0, "interrupted")
                signals.append(sig)
        starter = asyncio.ensure_future(start())
        starter.add_done_callback(start_done)
        tasks.append(starter)
        code, reason = await outcome  # the first of: duration, signal, failure, removal
        summary = video.stats.summary()
        if session["sender"] is not None:
            summary.update(await _rtp_counters(session["sender"]))
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for task in tasks:
            task.cancel()
        video.stop()
        if audio is not None:
            audio.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await media.close()
        await room.close()
        if addresses:
            configure_candidate_addresses(
                previous_policy.addresses or None, dict(previous_policy.announced) or None
            )
    if code != 0:
        _fail(reason)
    _emit(
        {
            "event": "summary",
            "room": session["room"],
            "identity": session["identity"],
            "codec": codec,
            "exit": code,
            "reason": reason,
            "frames_sent": summary.get("frames", 0),
            **summary,
        }
    )
    return code
