"""End to end: publisher (real VP8/H.264 encode) -> tapped server -> forwarder -> clients."""

from __future__ import annotations

import asyncio
import time

import av
import pytest

from orbridge.media import tap
from orbridge.media.bitstream import vp8_frame_size
from orbridge.media.codecs import negotiated_codec, same_codec
from orbridge.media.ice import sdp_candidate_addresses


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_two_subscribers_decode_and_server_never_transcodes(rig, codec: str) -> None:
    before = tap.stats.snapshot()
    pub = await rig.publisher(codec=codec)
    c1 = await rig.client(pub.forwarder, codec=codec)
    c2 = await rig.client(pub.forwarder, codec=codec)

    await rig.wait_until(lambda: c1.received.frames >= 15 and c2.received.frames >= 15, 8)

    for client in (c1, c2):
        assert client.received.types == {av.VideoFrame}
        assert client.received.sizes == {(rig.width, rig.height)}
        assert same_codec(pub.server_transceiver, client.server_transceiver)
    assert negotiated_codec(pub.server_transceiver) == f"video/{codec}"

    # The server's remote track yielded packets only, and forwarded them.
    assert pub.forwarder.stats.frames_rejected == 0
    assert pub.forwarder.stats.frames_in >= 15
    assert pub.forwarder.stats.keyframes_in >= 1

    # Everything in this process: the publisher encodes (1 encoder), the two clients decode
    # (2 decoders). The server's three peers (1 receiver, 2 senders) add none.
    after = tap.stats.snapshot()
    delta = {key: after[key] - before[key] for key in after}
    assert delta["video_encoders_created"] == 1
    assert delta["video_decoders_created"] == 2
    assert delta["passthrough_receivers"] == 1
    assert delta["decoding_receivers"] == 2
    assert delta["audio_decoders_created"] == delta["audio_encoders_created"] == 0

    # Every candidate of every peer is on loopback.
    for pc in rig.pcs:
        assert sdp_candidate_addresses(pc.localDescription.sdp) == {"127.0.0.1"}


async def test_new_subscriber_starts_on_keyframe(rig) -> None:
    pub = await rig.publisher()
    # Let the stream run with nobody watching: aiortc's VP8 encoder sends no keyframe unless
    # asked, so a late subscriber can only start on the one it requests.
    await rig.wait_until(lambda: pub.forwarder.stats.frames_in >= 20, 5)
    keyframes_before = pub.forwarder.stats.keyframes_in
    sent_before = pub.requester.stats.sent

    late = pub.forwarder.subscribe(name="late")
    assert late.waiting_for_keyframe
    first = await asyncio.wait_for(late.get(), 3)
    assert first.is_keyframe
    assert vp8_frame_size(bytes(first)) == (rig.width, rig.height)
    assert pub.requester.stats.sent == sent_before + 1
    assert pub.forwarder.stats.keyframes_in > keyframes_before
    late.close()

    # A real late client decodes from its first frame on.
    client = await rig.client(pub.forwarder)
    await rig.wait_until(lambda: client.received.frames >= 5, 3)
    assert client.received.sizes == {(rig.width, rig.height)}


async def test_stuck_subscriber_is_bounded_and_does_not_slow_others(rig) -> None:
    pub = await rig.publisher()
    healthy = await rig.client(pub.forwarder, name="healthy")
    await rig.wait_until(lambda: healthy.received.frames >= 10, 5)

    stuck = pub.forwarder.subscribe(maxsize=5, name="stuck")  # never read
    since = time.monotonic()
    await asyncio.sleep(2.0)

    assert stuck.qsize() <= 5
    assert stuck.stats.max_queue_len <= 5
    assert stuck.stats.lag_events >= 1
    assert stuck.stats.frames_dropped > 0
    assert stuck.stats.frames_out == 0
    # Lag-driven keyframe requests stay within the throttle: about 2 per second.
    assert pub.requester.stats.sent <= 2 * (time.monotonic() - since) + 3

    subscriber = healthy.track.subscriber
    assert subscriber is not None
    assert subscriber.stats.lag_events == 0
    assert subscriber.stats.max_queue_len <= 3
    assert healthy.received.fps(since) >= 20  # publisher runs at 30 fps


async def test_keyframe_requests_are_throttled(rig) -> None:
    pub = await rig.publisher(pli_interval=0.5)
    client = await rig.client(pub.forwarder)
    await rig.wait_until(lambda: client.received.frames >= 5, 5)
    await asyncio.sleep(0.6)  # leave the throttle window of the subscriber's own request

    plis_before = pub.plis_received()
    sent_before = pub.requester.stats.sent
    suppressed_before = pub.requester.stats.suppressed
    # A burst (e.g. many subscribers joining at once) before the keyframe can come back.
    results = [pub.forwarder.request_keyframe("burst") for _ in range(20)]
    assert results[0] is True and not any(results[1:])
    await asyncio.sleep(0.8)

    # One PLI reached the publisher; the keyframe it produced cancelled the trailing one.
    assert pub.requester.stats.sent - sent_before == 1
    assert pub.requester.stats.suppressed - suppressed_before == 19
    assert pub.plis_received() - plis_before == 1


async def test_trailing_request_when_no_keyframe_follows(rig) -> None:
    from orbridge.media.keyframes import KeyframeRequester

    pub = await rig.publisher()
    # A second requester on the same receiver that is never told about keyframes.
    requester = KeyframeRequester.for_transceiver(
        pub.server_pc, pub.server_transceiver, min_interval=0.3
    )
    assert requester.media_ssrc == pub.transceiver.sender._ssrc
    plis_before = pub.plis_received()
    assert requester.request() is True
    assert [requester.request() for _ in range(4)] == [False] * 4
    await rig.wait_until(lambda: requester.stats.trailing_sent == 1, 2)
    await rig.wait_until(lambda: pub.plis_received() - plis_before == 2, 2)
    assert requester.stats.sent == 2
    assert requester.stats.suppressed == 4
    requester.close()


async def test_subscriber_pli_becomes_throttled_upstream_request(rig) -> None:
    pub = await rig.publisher()
    client = await rig.client(pub.forwarder)
    await rig.wait_until(lambda: client.received.frames >= 5, 5)
    await asyncio.sleep(0.6)
    plis_before = pub.plis_received()

    # The client's receiver sends a PLI for the server sender's SSRC, as a browser would.
    server_sender = client.server_transceiver.sender
    await client.transceiver.receiver._send_rtcp_pli(server_sender._ssrc)

    subscriber = client.track.subscriber
    assert subscriber is not None
    await rig.wait_until(lambda: subscriber.stats.keyframe_requests_received == 1, 2)
    await rig.wait_until(lambda: pub.plis_received() == plis_before + 1, 2)
    assert subscriber.stats.keyframe_requests_sent >= 1


async def test_audio_passes_through_as_opus_packets(rig) -> None:
    import fractions

    before = tap.stats.snapshot()
    pub = await rig.publisher(kind="audio")
    raw = pub.forwarder.subscribe(name="raw")
    packet = await asyncio.wait_for(raw.get(), 3)
    assert isinstance(packet, av.Packet)
    assert packet.time_base == fractions.Fraction(1, 48000)
    assert packet.is_keyframe
    assert packet.size > 0
    raw.close()

    client = await rig.client(pub.forwarder)
    await rig.wait_until(lambda: client.received.frames >= 10, 5)
    assert client.received.types == {av.AudioFrame}
    after = tap.stats.snapshot()
    assert after["audio_encoders_created"] - before["audio_encoders_created"] == 1  # publisher
    assert after["audio_decoders_created"] - before["audio_decoders_created"] == 1  # client
    assert after["video_decoders_created"] == before["video_decoders_created"]


async def test_subscriber_leg_with_another_codec_gets_nothing(rig) -> None:
    pub = await rig.publisher(codec="VP8")
    assert pub.forwarder.codec == "video/VP8"
    wrong = await rig.client(pub.forwarder, codec="H264")
    await rig.wait_until(lambda: wrong.track.readyState == "ended", 3)
    assert wrong.track.subscriber is None
    assert pub.forwarder.stats.subscribers_rejected == 1
    assert wrong.received.frames == 0

    right = await rig.client(pub.forwarder)  # defaults to the forwarder's codec
    await rig.wait_until(lambda: right.received.frames >= 5, 5)
