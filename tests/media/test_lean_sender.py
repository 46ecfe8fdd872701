"""The lean send loop (media/lean_sender.py) on the wire: what a subscriber receives is valid
RTP with the negotiated extensions, a lost packet is repaired by RTX, payloads are shared."""

from __future__ import annotations

import asyncio
import itertools
import struct
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket

from orbridge.media import aiortc_compat
from tests.media.conftest import Rig


def tap_rtp(pc: RTCPeerConnection, drop: set[int] | None = None) -> list[RtpPacket]:
    """Record the RTP a client receives (decrypted), optionally dropping some sequence numbers
    once, as a lossy link would; everything else goes on to aiortc as usual."""
    transport = pc.getTransceivers()[0].receiver.transport
    original = transport._handle_rtp_data
    seen: list[RtpPacket] = []
    dropped: set[int] = set()

    async def handle(data: bytes, arrival_time_ms: int) -> None:
        packet = RtpPacket.parse(data, transport._rtp_header_extensions_map)
        seen.append(packet)
        if drop and packet.sequence_number in drop and packet.sequence_number not in dropped:
            dropped.add(packet.sequence_number)
            return
        await original(data, arrival_time_ms)

    transport._handle_rtp_data = handle
    return seen


def video_payload_types(pc: RTCPeerConnection) -> tuple[int, int | None]:
    codecs = aiortc_compat.transceiver_codecs(pc.getTransceivers()[0])
    media = next(c.payloadType for c in codecs if c.mimeType.lower() != "video/rtx")
    rtx = next((c.payloadType for c in codecs if c.mimeType.lower() == "video/rtx"), None)
    return media, rtx


async def test_wire_format(rig: Rig) -> None:
    pub = await rig.publisher()
    client = await rig.client(pub.forwarder)
    # the subscriber's sender runs the lean loop, not aiortc's
    assert client.server_transceiver.sender._run_rtp.__module__ == "orbridge.media.lean_sender"
    seen = tap_rtp(client.pc)
    await rig.wait_until(lambda: len(seen) > 200 and client.received.frames > 30, 10)
    media_pt, _ = video_payload_types(client.pc)
    video = [p for p in seen if p.payload_type == media_pt]
    assert {p.ssrc for p in video} == {client.server_transceiver.sender._ssrc}
    assert {p.extensions.mid for p in video} == {client.server_transceiver.mid}
    assert all(p.extensions.abs_send_time is not None for p in video)
    seqs = [p.sequence_number for p in video]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    # a frame's packets share a timestamp; the marker closes it; the next frame moves on
    for a, b in itertools.pairwise(video):
        if a.marker:
            assert b.timestamp != a.timestamp
        else:
            assert b.timestamp == a.timestamp
    assert client.received.sizes == {(rig.width, rig.height)}


async def test_lost_packet_is_retransmitted_as_rtx(rig: Rig) -> None:
    pub = await rig.publisher()
    client = await rig.client(pub.forwarder)
    seen: list[RtpPacket] = []
    first = tap_rtp(client.pc)
    await rig.wait_until(lambda: len(first) > 20, 10)
    # drop a packet a little ahead of where the stream is now
    target = (first[-1].sequence_number + 40) & 0xFFFF
    seen = tap_rtp(client.pc, drop={target})
    media_pt, rtx_pt = video_payload_types(client.pc)
    assert rtx_pt is not None, "RTX was negotiated"

    def repaired() -> bool:
        for p in seen:
            if p.payload_type == rtx_pt and struct.unpack("!H", p.payload[:2])[0] == target:
                return True
        return False

    await rig.wait_until(repaired, 10)
    original = next(p for p in seen if p.payload_type == media_pt and p.sequence_number == target)
    rtx = next(
        p
        for p in seen
        if p.payload_type == rtx_pt and struct.unpack("!H", p.payload[:2])[0] == target
    )
    assert rtx.payload[2:] == original.payload and rtx.timestamp == original.timestamp
    before = client.received.frames
    await rig.wait_until(lambda: client.received.frames > before + 15, 10)


async def test_payloads_are_packetized_once_for_all_subscribers(rig: Rig) -> None:
    pub = await rig.publisher()
    clients = [await rig.client(pub.forwarder) for _ in range(3)]
    await rig.wait_until(lambda: all(c.received.frames > 30 for c in clients), 15)
    cache: Any = pub.forwarder.payload_cache
    assert cache.misses <= pub.forwarder.stats.frames_in + 5
    # Once all three receive (the first one alone got the early frames): every frame is
    # packetized once (plus rare re-packs after eviction) and read by the other two.
    hits, misses = cache.hits, cache.misses
    seen = [c.received.frames for c in clients]
    await rig.wait_until(
        lambda: all(c.received.frames > n + 30 for c, n in zip(clients, seen, strict=True)), 15
    )
    assert cache.hits - hits >= 1.5 * (cache.misses - misses) > 0
    await asyncio.sleep(0)
