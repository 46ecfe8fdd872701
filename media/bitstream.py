"""What the server reads from encoded video without decoding it: keyframes and picture sizes.

Pure functions on one encoded frame's bytes (no PyAV, no aiortc): the tap flags keyframes with
them on the forwarding path (:mod:`media.tap`) and the recorder sizes a file's header and picks
its first frame with them (:mod:`recording.live.writer`). One parser serves both, so the tap and
the recorder cannot disagree on what a keyframe is.

* VP8 (RFC 6386): the frame tag and the keyframe header's start code and size.
* H.264 (ITU-T H.264, Annex B byte stream as aiortc's depayloader builds it): NAL units split at
  start codes, IDR and SPS detection, and the picture size from the SPS (Exp-Golomb).

Truncated or garbage input gives ``False`` or ``None`` rather than an exception (an SPS that is
corrupt yet parses still yields a size, possibly a nonsensical one: nothing checks it).
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "H264_NAL_IDR",
    "H264_NAL_SPS",
    "h264_frame_size",
    "h264_has_sps",
    "h264_is_keyframe",
    "h264_nal_units",
    "vp8_frame_size",
    "vp8_is_keyframe",
]

H264_NAL_IDR = 5
H264_NAL_SPS = 7
_START_CODE = b"\x00\x00\x01"


# --- VP8 -----------------------------------------------------------------------------------


def vp8_is_keyframe(data: bytes) -> bool:
    """VP8 frame tag (RFC 6386 section 9.1): bit 0 of the first byte is 0 for a keyframe."""
    return len(data) > 0 and not data[0] & 0x01


def vp8_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a VP8 keyframe header, or None for an interframe/garbage.

    Recorders need it to open a WebM stream without decoding.
    """
    if len(data) < 10 or not vp8_is_keyframe(data) or data[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return width, height


# --- H.264 ---------------------------------------------------------------------------------


def h264_nal_units(data: bytes) -> Iterator[tuple[int, int]]:
    """``(nal_unit_type, offset of its header byte)`` of each NAL unit in an Annex-B buffer.

    aiortc's H.264 depayloader emits ``00 00 00 01`` before every NAL (single, STAP-A parts,
    first FU-A fragment); 3-byte start codes are accepted too. Emulation prevention guarantees
    ``00 00 01`` never occurs inside a NAL, so ``bytes.find`` (C speed) is exact. Lazy: a
    caller that stops at the unit it wants does not scan the rest.
    """
    pos = data.find(_START_CODE)
    while pos != -1:
        header = pos + 3
        if header >= len(data):
            return
        yield data[header] & 0x1F, header
        pos = data.find(_START_CODE, header)


def h264_is_keyframe(data: bytes) -> bool:
    """True when an Annex-B access unit holds an IDR slice (NAL type 5)."""
    return any(kind == H264_NAL_IDR for kind, _ in h264_nal_units(data))


def h264_has_sps(data: bytes) -> bool:
    """True when an Annex-B access unit carries an SPS (NAL type 7): decodable on its own."""
    return any(kind == H264_NAL_SPS for kind, _ in h264_nal_units(data))


def _h264_sps(data: bytes) -> bytes | None:
    """The first SPS NAL unit's RBSP (emulation prevention removed), or None."""
    for kind, header in h264_nal_units(data):
        if kind == H264_NAL_SPS:
            end = data.find(_START_CODE, header)
            nal = data[header + 1 : end if end != -1 else len(data)]
            return nal.replace(b"\x00\x00\x03", b"\x00\x00")
    return None


class _Bits:
    """MSB-first bit reader with Exp-Golomb codes (H.264 7.2)."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def u(self, count: int) -> int:
        if count > self.left:
            raise ValueError("SPS truncated")
        self.left -= count
        return (self.value >> self.left) & ((1 << count) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def h264_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the SPS of an Annex-B access unit, or None.

    Matroska needs the picture size in its header, and the recorder does not decode.
    """
    sps = _h264_sps(data)
    if sps is None:
        return None
    try:
        bits = _Bits(sps)
        profile = bits.u(8)
        bits.u(16)  # constraint flags, level
        bits.ue()  # seq_parameter_set_id
        chroma = 1
        if profile in _HIGH_PROFILES:
            chroma = bits.ue()
            if chroma == 3:
                bits.u(1)  # separate_colour_plane_flag
            bits.ue()  # bit depths
            bits.ue()
            bits.u(1)
            if bits.u(1):  # scaling matrices: parse to skip them
                for index in range(8 if chroma != 3 else 12):
                    if bits.u(1):
                        last = scale = 8
                        for _ in range(16 if index < 6 else 64):
                            if scale:
                                scale = (last + bits.se() + 256) % 256
                            last = scale or last
        bits.ue()  # log2_max_frame_num_minus4
        poc_type = bits.ue()
        if poc_type == 0:
            bits.ue()
        elif poc_type == 1:
            bits.u(1)
            bits.se()
            bits.se()
            for _ in range(bits.ue()):
                bits.se()
        bits.ue()  # max_num_ref_frames
        bits.u(1)
        width_mbs = bits.ue() + 1
        height_maps = bits.ue() + 1
        frame_mbs_only = bits.u(1)
        if not frame_mbs_only:
            bits.u(1)
        bits.u(1)
        crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue()) if bits.u(1) else (0, 0, 0, 0)
    except ValueError:
        return None
    unit_x = 1 if chroma in (0, 3) else 2
    unit_y = (2 - frame_mbs_only) * (2 if chroma == 1 else 1)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_maps * 16 - unit_y * (crop[2] + crop[3])
    return width, height
