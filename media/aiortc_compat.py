"""The one door to aiortc's, aioice's and python-engineio's internals.

Forwarding without transcoding needs names these libraries do not promise to keep: module
functions aiortc looks up at call time (the tap, the ICE policy), name-mangled sender state
(the lean sender), transceiver fields (codec restriction), and Engine.IO's per-client queue
(vitals back-pressure). Every such name is used through this module and nowhere else, is
listed in `PRIVATE_NAMES`, and has a test on real objects (tests/media/test_aiortc_compat.py).

`pyproject.toml` pins the tested minor versions (`TESTED`); `check_versions()` refuses
others at start-up unless ORBRIDGE_ALLOW_UNTESTED_AIORTC=1, and `missing_names()` says which
class- and module-level names an installed version lacks, so an upgrade fails loudly at once
instead of forwarding silently wrong.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc.clock
import aiortc.codecs
import aiortc.codecs.base
import aiortc.jitterbuffer
import aiortc.mediastreams
import aiortc.rtcdtlstransport
import aiortc.rtcicetransport
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import aiortc.rtcrtptransceiver
import aiortc.rtp
import aiortc.sdp
from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver

log = logging.getLogger("orbridge.media")

TESTED = {"aiortc": "1.16", "aioice": "0.13", "python-engineio": "4.15"}
ALLOW_UNTESTED = "ORBRIDGE_ALLOW_UNTESTED_AIORTC"

# -- internal names re-exported (not in aiortc's public API) -------------------------------
JitterFrame = aiortc.jitterbuffer.JitterFrame
Encoder = aiortc.codecs.base.Encoder
RtpPacket = aiortc.rtp.RtpPacket
wrap_rtx = aiortc.rtp.wrap_rtx
clock = aiortc.clock
convert_timebase = aiortc.mediastreams.convert_timebase
get_encoder = aiortc.codecs.get_encoder
filter_preferred_codecs = aiortc.rtcpeerconnection.filter_preferred_codecs
SessionDescription = aiortc.sdp.SessionDescription
IceConnection = aioice.ice.Connection


@dataclass(frozen=True)
class PrivateName:
    owner: str  # a module, or a class whose instances (or the class itself) carry the name
    name: str
    where: str  # "module" | "class" | "instance"
    why: str


_S = "aiortc.rtcrtpsender.RTCRtpSender"
PRIVATE_NAMES: tuple[PrivateName, ...] = (
    PrivateName("aiortc.rtcrtpreceiver", "get_decoder", "module", "tap: packets, not frames"),
    PrivateName("aiortc.rtcrtpreceiver", "decoder_worker", "module", "tap: mode per receiver"),
    PrivateName("aiortc.rtcrtpsender", "get_encoder", "module", "tap: count real encoders"),
    PrivateName("aioice.ice", "get_host_addresses", "module", "ICE: configured addresses"),
    PrivateName("aiortc.rtcicetransport", "Connection", "module", "ICE: announced address"),
    PrivateName("aiortc.rtcpeerconnection", "filter_preferred_codecs", "module",
                "codec restriction of an answer"),
    PrivateName("aiortc.jitterbuffer", "JitterFrame", "module", "tap: encoded frame type"),
    PrivateName("aiortc.codecs.base", "Encoder", "module", "tap: metered encoder base"),
    PrivateName("aiortc.rtp", "RtpPacket", "module", "lean sender: header template"),
    PrivateName("aiortc.rtp", "wrap_rtx", "module", "lean sender: retransmissions"),
    PrivateName("aiortc.mediastreams", "convert_timebase", "module", "RTP timestamps"),
    PrivateName("aiortc.sdp", "SessionDescription", "module", "media SSRC from the SDP"),
    PrivateName("aiortc.rtcrtpreceiver.RemoteStreamTrack", "_queue", "instance",
                "tap: a remote track's queue names its receiver"),
    PrivateName("aiortc.rtcrtpreceiver.RTCRtpReceiver", "_send_rtcp_pli", "class",
                "keyframe requests upstream"),
    PrivateName("aiortc.rtcrtptransceiver.RTCRtpTransceiver", "_codecs", "instance",
                "negotiated codec; restricting an answer"),
    PrivateName("aiortc.rtcrtptransceiver.RTCRtpTransceiver", "_offerDirection", "instance",
                "which remote m-sections send"),
    PrivateName(_S, "_run_rtp", "class", "lean sender replaces the send loop"),
    PrivateName(_S, "_retransmit", "class", "lean sender serves NACKs"),
    PrivateName(_S, "_send_keyframe", "class", "a subscriber's PLI/FIR goes upstream"),
    PrivateName(_S, "_ssrc", "instance", "lean sender header"),
    PrivateName(_S, "_rtx_ssrc", "instance", "lean sender RTX"),
    PrivateName(_S, "_RTCRtpSender__mid", "instance", "lean sender mid extension"),
    PrivateName(_S, "_RTCRtpSender__rtp_header_extensions_map", "instance",
                "lean sender header extensions"),
    PrivateName(_S, "_RTCRtpSender__rtp_started", "instance", "lean sender start event"),
    PrivateName(_S, "_RTCRtpSender__rtp_exited", "instance", "lean sender exit event"),
    PrivateName(_S, "_RTCRtpSender__ntp_timestamp", "instance", "sender reports"),
    PrivateName(_S, "_RTCRtpSender__rtp_timestamp", "instance",
                "sender reports; a subscription's RTP origin"),
    PrivateName(_S, "_RTCRtpSender__octet_count", "instance", "sender reports"),
    PrivateName(_S, "_RTCRtpSender__packet_count", "instance", "sender reports"),
    PrivateName(_S, "_RTCRtpSender__rtx_payload_type", "instance", "lean sender RTX"),
    PrivateName(_S, "_RTCRtpSender__rtx_sequence_number", "instance", "lean sender RTX"),
    PrivateName("aiortc.rtcdtlstransport.RTCDtlsTransport", "_send_rtp", "class",
                "the slow send path"),
    PrivateName("aiortc.rtcdtlstransport.RTCDtlsTransport", "_tx_srtp", "instance",
                "lean sender: synchronous protect"),
    PrivateName("aiortc.rtcdtlstransport.RTCDtlsTransport", "_handle_rtp_data", "class",
                "load test: count frames without the receive pipeline"),
    PrivateName("aiortc.rtcicetransport.RTCIceTransport", "_connection", "instance",
                "lean sender: the nominated pair"),
    PrivateName("aioice.ice.Connection", "_nominated", "instance",
                "lean sender: synchronous sendto"),
    PrivateName("engineio.async_server.AsyncServer", "sockets", "instance",
                "vitals back-pressure: a client's queue"),
    PrivateName("socketio.base_manager.BaseManager", "eio_sid_from_sid", "class",
                "vitals back-pressure: Engine.IO id of a client"),
)  # fmt: skip


class UntestedVersion(RuntimeError):
    pass


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def version_problems() -> list[str]:
    problems = []
    for dist, minor in TESTED.items():
        try:
            installed = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{dist} is not installed")
            continue
        if _minor(installed) != minor:
            problems.append(f"{dist} {installed} is installed; orbridge is tested with {minor}.x")
    return problems


def _resolve(dotted: str) -> Any:
    module, _, attr = dotted.rpartition(".")
    try:
        return importlib.import_module(dotted)
    except ImportError:
        return getattr(importlib.import_module(module), attr)


def missing_names() -> list[str]:
    """Module- and class-level names the installed libraries lack (instances: see tests)."""
    missing = []
    for entry in PRIVATE_NAMES:
        if entry.where == "instance":
            continue
        try:
            owner = _resolve(entry.owner)
        except (ImportError, AttributeError):
            missing.append(entry.owner)
            continue
        if not hasattr(owner, entry.name):
            missing.append(f"{entry.owner}.{entry.name}")
    return missing


def check_versions() -> None:
    """Refuse untested versions (unless allowed) and any missing name, at start-up."""
    missing = missing_names()
    if missing:
        raise UntestedVersion("aiortc/aioice/engineio lack names orbridge needs: "
                              + ", ".join(missing))  # fmt: skip
    problems = version_problems()
    if problems:
        if os.environ.get(ALLOW_UNTESTED) == "1":
            log.warning("untested versions (%s=1): %s", ALLOW_UNTESTED, "; ".join(problems))
        else:
            raise UntestedVersion("; ".join(problems) + f" (set {ALLOW_UNTESTED}=1 to try)")


# -- module hooks ----------------------------------------------------------------------------


class ModuleHook:
    """A module-level function (or class) aiortc/aioice look up at call time."""

    def __init__(self, module: Any, name: str) -> None:
        self.module = module
        self.name = name
        self.original = getattr(module, name)

    def install(self, value: Any) -> None:
        setattr(self.module, self.name, value)

    def restore(self) -> None:
        setattr(self.module, self.name, self.original)

    @property
    def installed(self) -> bool:
        return getattr(self.module, self.name) is not self.original


RECEIVER_GET_DECODER = ModuleHook(aiortc.rtcrtpreceiver, "get_decoder")
RECEIVER_DECODER_WORKER = ModuleHook(aiortc.rtcrtpreceiver, "decoder_worker")
SENDER_GET_ENCODER = ModuleHook(aiortc.rtcrtpsender, "get_encoder")
ICE_HOST_ADDRESSES = ModuleHook(aioice.ice, "get_host_addresses")
ICE_CONNECTION = ModuleHook(aiortc.rtcicetransport, "Connection")


# -- receivers and remote tracks -------------------------------------------------------------


def remote_track_queue(track: Any) -> asyncio.Queue[Any] | None:
    """The queue an RTCRtpReceiver's decoder thread fills for its remote track."""
    queue = getattr(track, "_queue", None)
    return queue if isinstance(queue, asyncio.Queue) else None


def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> Coroutine[Any, Any, None]:
    """A PLI for `media_ssrc` through the receiver's RTCP (what it does itself on loss)."""
    result: Coroutine[Any, Any, None] = receiver._send_rtcp_pli(media_ssrc)
    return result


def replace_rtp_handler(dtls: Any, handler: Callable[[bytes, int], Awaitable[None]]) -> None:
    """Make a DTLS transport hand its decrypted RTP to `handler` (the load test's counter)."""
    dtls._handle_rtp_data = handler


# -- transceivers ----------------------------------------------------------------------------


def transceiver_codecs(transceiver: RTCRtpTransceiver) -> list[Any]:
    """The codecs the transceiver negotiated, in order (its sender uses the first)."""
    return list(getattr(transceiver, "_codecs", []))


def set_transceiver_codecs(transceiver: RTCRtpTransceiver, codecs: list[Any]) -> None:
    transceiver._codecs = codecs


def offer_direction(transceiver: RTCRtpTransceiver) -> str | None:
    """The remote offer's direction as aiortc stores it (reversed: remote sendonly -> recvonly)."""
    direction: str | None = transceiver._offerDirection
    return direction


# -- senders ---------------------------------------------------------------------------------


def _mangled(name: str) -> str:
    return f"_RTCRtpSender__{name}"


def sender_get(sender: RTCRtpSender, name: str) -> Any:
    """One of RTCRtpSender's name-mangled fields (see PRIVATE_NAMES)."""
    return getattr(sender, _mangled(name))


def sender_set(sender: RTCRtpSender, name: str, value: Any) -> None:
    setattr(sender, _mangled(name), value)


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """(media SSRC, RTX SSRC) of a sender."""
    return int(sender._ssrc), int(sender._rtx_ssrc)


def record_sent(sender: RTCRtpSender, ntp: int, rtp_timestamp: int, octets: int,
                packets: int) -> None:  # fmt: skip
    """What the sender's RTCP reports are built from (aiortc updates these per packet)."""
    sender_set(sender, "ntp_timestamp", ntp)
    sender_set(sender, "rtp_timestamp", rtp_timestamp)
    sender_set(sender, "octet_count", sender_get(sender, "octet_count") + octets)
    sender_set(sender, "packet_count", sender_get(sender, "packet_count") + packets)


def last_rtp_timestamp(sender: RTCRtpSender) -> int | None:
    """The RTP timestamp of the latest packet the sender sent; None before the first."""
    if not sender_get(sender, "packet_count"):
        return None
    return int(sender_get(sender, "rtp_timestamp"))


def replace_send_loop(
    sender: RTCRtpSender,
    run_rtp: Callable[[Any], Awaitable[None]],
    retransmit: Callable[[int], Awaitable[None]],
) -> None:
    """Shadow the send loop and the NACK handler of one sender instance (not the class)."""
    sender._run_rtp = run_rtp  # type: ignore[method-assign]
    sender._retransmit = retransmit  # type: ignore[method-assign]


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call `callback` when the sender's peer sends PLI/FIR (aiortc's own handling still runs:
    it only flags the sender's encoder, which forwarded packets never reach)."""
    original = sender._send_keyframe

    def send_keyframe() -> None:
        callback()
        original()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]


async def send_rtp(sender: RTCRtpSender, data: bytes) -> None:
    """Send a serialized RTP packet through the sender's DTLS transport (protects it)."""
    await sender.transport._send_rtp(data)


def direct_send(dtls: Any) -> Callable[[bytes], None] | None:
    """A synchronous `protect + sendto` on a connected transport's nominated ICE pair, or None
    (not connected, no pair yet: use `send_rtp`)."""
    try:
        if dtls.state != "connected":
            return None
        protect = dtls._tx_srtp.protect
        pair = dtls.transport._connection._nominated.get(1)
        sendto, addr = pair.protocol.transport.sendto, pair.remote_addr
    except AttributeError:
        return None

    def send(data: bytes) -> None:
        sendto(protect(data), addr)

    return send


# -- Engine.IO -------------------------------------------------------------------------------


def engineio_backlog(server: Any, sid: str, namespace: str) -> int:
    """Packets Engine.IO still has queued for a Socket.IO client (0 if it is gone)."""
    try:
        eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
        return int(server.eio.sockets[eio_sid].queue.qsize())
    except (KeyError, AttributeError, TypeError):
        return 0
