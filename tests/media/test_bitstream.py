"""Keyframes and picture sizes read from encoded bytes: real libvpx/libx264 output, built SPSs,
and truncated or garbage buffers (which must give False/None, never raise)."""

from __future__ import annotations

import random

import pytest

from orbridge.media.bitstream import (
    h264_frame_size,
    h264_has_sps,
    h264_is_keyframe,
    h264_nal_units,
    vp8_frame_size,
    vp8_is_keyframe,
)
from tests.media.conftest import encode_video

# What aiortc's depayloader builds from a STAP-A: a start code before every NAL (SPS, PPS, IDR).
STAP_A = b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65"


def test_vp8_keyframe_flag_and_size() -> None:
    frames = encode_video("libvpx", deadline="realtime", **{"lag-in-frames": "0"})
    assert vp8_is_keyframe(frames[0]) and vp8_frame_size(frames[0]) == (64, 48)
    assert not any(vp8_is_keyframe(f) for f in frames[1:])
    assert vp8_frame_size(frames[1]) is None


def test_vp8_garbage_is_not_sized() -> None:
    key = encode_video("libvpx", count=1, deadline="realtime")[0]
    assert not vp8_is_keyframe(b"")
    assert vp8_frame_size(b"") is None
    assert vp8_frame_size(key[:9]) is None  # header cut short
    assert vp8_frame_size(key[:3] + b"\x00\x00\x00" + key[6:]) is None  # no start code
    assert vp8_frame_size(key[:10]) == (64, 48)  # the header is all it reads


def test_h264_idr_detection_on_annex_b() -> None:
    frames = encode_video("libx264", tune="zerolatency", preset="ultrafast", g="4")
    assert frames[0].startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))
    flags = [h264_is_keyframe(f) for f in frames]
    assert flags[0] and flags[4] and not flags[1]
    assert not h264_is_keyframe(b"") and not h264_is_keyframe(b"\x00\x00\x01")
    assert h264_is_keyframe(STAP_A)


def test_h264_nal_units_split_at_3_and_4_byte_start_codes() -> None:
    data = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x01\x41\x9a"
    assert list(h264_nal_units(data)) == [(7, 4), (8, 9), (1, 15)]
    assert list(h264_nal_units(STAP_A)) == [(7, 4), (8, 10), (5, 16)]
    assert list(h264_nal_units(b"\x67\x42\x00")) == []  # no start code: nothing
    assert list(h264_nal_units(b"\x00\x00\x01\x65\x00\x00\x01")) == [(5, 3)]  # bare tail code
    # The header byte's forbidden bit and nal_ref_idc are masked off: 0x25 and 0x65 are IDRs.
    assert list(h264_nal_units(b"\x00\x00\x01\x25")) == [(5, 3)]


def test_h264_sps_presence() -> None:
    frames = encode_video("libx264", tune="zerolatency", preset="ultrafast", g="4")
    assert h264_has_sps(frames[0]) and not h264_has_sps(frames[1])
    assert h264_has_sps(STAP_A)
    assert not h264_has_sps(b"\x00\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65")  # PPS + IDR
    assert not h264_has_sps(b"") and not h264_has_sps(b"\x00\x00\x01")


@pytest.mark.parametrize(
    ("width", "height", "pix_fmt", "options"),
    [
        (64, 48, "yuv420p", {"preset": "ultrafast"}),  # Constrained Baseline, no cropping
        (320, 180, "yuv420p", {"preset": "ultrafast"}),  # 180 = 12 MBs - 12 rows cropped
        (322, 182, "yuv420p", {"preset": "ultrafast", "tune": "zerolatency"}),
        (320, 180, "yuv420p", {"preset": "medium"}),  # High profile
        (320, 180, "yuv420p", {"preset": "ultrafast", "x264-params": "cqm=jvt"}),  # matrices
        (320, 180, "yuv422p", {"preset": "ultrafast"}),  # High 4:2:2: other crop units
        (320, 180, "yuv444p", {"preset": "ultrafast"}),  # High 4:4:4
        (320, 180, "yuv420p", {"preset": "ultrafast", "x264-params": "interlaced=1"}),  # fields
    ],
)
def test_h264_frame_size_from_libx264_sps(
    width: int, height: int, pix_fmt: str, options: dict[str, str]
) -> None:
    frames = encode_video("libx264", 2, width, height, pix_fmt, **options)
    assert h264_frame_size(frames[0]) == (width, height)
    assert h264_frame_size(frames[1]) is None  # no SPS in a P-frame


def _ue(value: int) -> str:
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def _se(value: int) -> str:
    return _ue(2 * value - 1 if value > 0 else -2 * value)


def _sps_nal(
    width_mbs: int,
    height_mbs: int,
    *,
    profile: int = 66,
    level: int = 31,
    poc_type: int = 0,
    crop: tuple[int, int, int, int] | None = None,
) -> bytes:
    """An SPS NAL (with its start code) for a 4:2:0 progressive stream, as H.264 7.3.2.1.1."""
    bits = f"{profile:08b}{0:08b}{level:08b}" + _ue(0) + _ue(0) + _ue(poc_type)
    if poc_type == 0:
        bits += _ue(0)
    elif poc_type == 1:
        bits += "0" + _se(-1) + _se(2) + _ue(2) + _se(3) + _se(-4)
    bits += _ue(1) + "0" + _ue(width_mbs - 1) + _ue(height_mbs - 1) + "1" + "1"
    bits += ("1" + "".join(_ue(c) for c in crop)) if crop else "0"
    bits += "0" + "1"  # no VUI, rbsp_stop_one_bit
    bits += "0" * (-len(bits) % 8)
    rbsp = int(bits, 2).to_bytes(len(bits) // 8, "big")
    out, zeros = bytearray(), 0
    for byte in rbsp:  # emulation prevention (7.4.1)
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return b"\x00\x00\x00\x01\x67" + bytes(out)


def test_h264_frame_size_from_built_sps() -> None:
    assert h264_frame_size(_sps_nal(20, 12, crop=(0, 0, 0, 6))) == (320, 180)
    assert h264_frame_size(_sps_nal(80, 45)) == (1280, 720)
    assert h264_frame_size(_sps_nal(40, 30, poc_type=1)) == (640, 480)  # POC cycle skipped
    assert h264_frame_size(_sps_nal(40, 30, poc_type=2)) == (640, 480)
    # The SPS after other NALs of the access unit, and the SPS's own end at the next code.
    assert h264_frame_size(b"\x00\x00\x00\x01\x09\xf0" + _sps_nal(20, 15) + STAP_A) == (320, 240)


def test_h264_emulation_prevention_is_removed_before_parsing() -> None:
    # profile_idc 0, no constraint flags, level 1: "00 00 01" in the RBSP, "00 00 03 01" in
    # the NAL. Read without removing the 03, the level would shift everything after it.
    nal = _sps_nal(20, 15, profile=0, level=1)
    assert nal[5:9] == b"\x00\x00\x03\x01"
    assert list(h264_nal_units(nal)) == [(7, 4)]  # no start code found inside
    assert h264_frame_size(nal) == (320, 240)


def test_h264_truncated_or_garbage_gives_none_without_raising() -> None:
    key = encode_video("libx264", 1, 320, 180, preset="ultrafast")[0]
    (sps_at,) = [at for kind, at in h264_nal_units(key) if kind == 7]
    # Cut anywhere, the SPS gives no size or the right one (bits past the crop go unread).
    sizes = {h264_frame_size(key[:cut]) for cut in range(len(key))}
    assert sizes == {None, (320, 180)}
    assert all(h264_frame_size(key[:cut]) is None for cut in range(sps_at + 5))
    assert h264_frame_size(b"") is None
    assert h264_frame_size(b"\x00\x00\x01\x67") is None  # an SPS header and nothing else
    assert h264_frame_size(b"\x00\x00\x01\x67\x42\x00\x1f" + b"\x00" * 8) is None  # bad ue(v)
    assert h264_frame_size(STAP_A) is None  # an SPS NAL too short to hold one
    rng = random.Random(7)
    for _ in range(2000):
        body = rng.randbytes(rng.randrange(0, 48))
        for data in (body, b"\x00\x00\x01" + bytes([rng.choice((0x65, 0x67))]) + body):
            assert isinstance(h264_is_keyframe(data), bool)
            assert isinstance(h264_has_sps(data), bool)
            size = h264_frame_size(data)
            assert size is None or (len(size) == 2 and all(isinstance(v, int) for v in size))
