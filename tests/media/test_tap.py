"""The tap's pieces: pass-through decoder, hooks, metered encoder (real libvpx output via PyAV).

Keyframe and size detection on the bytes themselves: tests/media/test_bitstream.py.
"""

from __future__ import annotations

import fractions

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av
import numpy as np
import pytest
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from orbridge.media import tap
from orbridge.media.tap import MeteredEncoder, PassthroughDecoder
from tests.media.conftest import encode_video

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=99)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)


def test_passthrough_decoder_builds_timed_packets() -> None:
    frames = encode_video("libvpx", count=2, deadline="realtime")
    decoder = PassthroughDecoder(VP8)
    [key] = decoder.decode(JitterFrame(frames[0], timestamp=3000))
    [delta] = decoder.decode(JitterFrame(frames[1], timestamp=6000))
    assert bytes(key) == frames[0]
    assert key.pts == key.dts == 3000 and key.time_base == fractions.Fraction(1, 90000)
    assert key.is_keyframe and not delta.is_keyframe
    assert decoder.decode(JitterFrame(b"", timestamp=9000)) == []

    [opus] = PassthroughDecoder(OPUS).decode(JitterFrame(b"\xfc\xff\xfe", timestamp=960))
    assert opus.time_base == fractions.Fraction(1, 48000) and opus.is_keyframe

    with pytest.raises(ValueError):
        PassthroughDecoder(RTCRtpCodecParameters(mimeType="video/AV1", clockRate=90000))


def test_install_is_idempotent_and_reversible() -> None:
    tap.install_tap()
    tap.install_tap()
    assert aiortc.rtcrtpreceiver.get_decoder is tap._tapped_get_decoder
    assert aiortc.rtcrtpsender.get_encoder is tap._tapped_get_encoder
    tap.uninstall_tap()
    assert aiortc.rtcrtpreceiver.get_decoder is tap._original_get_decoder
    assert aiortc.rtcrtpreceiver.decoder_worker is tap._original_decoder_worker
    assert not tap.is_installed()
    with pytest.raises(ValueError):
        tap.install_tap("transcode")  # type: ignore[arg-type]


def test_metered_encoder_packs_without_creating_an_encoder() -> None:
    before = tap.stats.snapshot()
    vp8 = MeteredEncoder(VP8)
    packet = av.Packet(encode_video("libvpx", count=1, deadline="realtime")[0])
    packet.pts, packet.time_base = 3000, fractions.Fraction(1, 90000)
    payloads, timestamp = vp8.pack(packet)
    assert payloads and timestamp == 3000 and not vp8.encoding

    opus = MeteredEncoder(OPUS)
    packet = av.Packet(b"\xfc\xff\xfe")
    packet.pts, packet.time_base = 960, fractions.Fraction(1, 48000)
    assert opus.pack(packet) == ([b"\xfc\xff\xfe"], 960)
    assert tap.stats.snapshot() == before

    # A raw frame does create (and count) a real encoder.
    frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), "rgb24")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    vp8.target_bitrate = 600_000
    payloads, _ = vp8.encode(frame, force_keyframe=True)
    assert payloads and vp8.encoding and vp8.target_bitrate == 600_000
    assert tap.stats.video_encoders_created == before["video_encoders_created"] + 1
