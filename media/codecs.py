"""Codec choice: the same codec on the publisher leg and on every subscriber leg.

Without transcoding a subscriber's sender must packetize exactly the codec the publisher sends,
so both legs are restricted to one codec (plus its RTX) with ``setCodecPreferences``, which
must be called before ``createOffer``/``createAnswer``. VP8 is the default (what Chromium
sends first); H.264 (packetization-mode 1, constrained baseline 42e01f/42001f) is allowed.
"""

from __future__ import annotations

from typing import Literal

from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from orbridge.media import aiortc_compat as compat

__all__ = [
    "VideoCodec",
    "codec_capabilities",
    "negotiated_codec",
    "prefer_codec",
    "same_codec",
]

VideoCodec = Literal["VP8", "H264"]
_MIME = {"VP8": "video/VP8", "H264": "video/H264", "opus": "audio/opus"}


def codec_capabilities(kind: str, codec: str) -> list[RTCRtpCodecCapability]:
    """aiortc's capabilities for ``codec`` (all its profiles) followed by RTX (video)."""
    mime = _MIME.get(codec, codec).lower()
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for c in capabilities if c.mimeType.lower() == mime]
    if not chosen:
        raise ValueError(f"aiortc cannot send {codec} as {kind}")
    if kind == "video":
        chosen += [c for c in capabilities if c.mimeType.lower() == "video/rtx"]
    return chosen


def prefer_codec(transceiver: RTCRtpTransceiver, codec: str | None = None) -> None:
    """Restrict ``transceiver`` to one codec: VP8 (default) or H264 for video, opus for audio."""
    kind = transceiver.kind
    if codec is None:
        codec = "VP8" if kind == "video" else "opus"
    transceiver.setCodecPreferences(codec_capabilities(kind, codec))


def negotiated_codec(transceiver: RTCRtpTransceiver) -> str | None:
    """MIME type the transceiver sends and expects after negotiation (None before).

    Reads the transceiver's negotiated codecs (the list its sender takes ``[0]`` from).
    """
    for codec in compat.transceiver_codecs(transceiver):
        if codec.mimeType.lower() != f"{transceiver.kind}/rtx":
            return str(codec.mimeType)
    return None


def same_codec(publisher: RTCRtpTransceiver, subscriber: RTCRtpTransceiver) -> bool:
    """True when both legs negotiated the same codec (forwarding is valid only then)."""
    a, b = negotiated_codec(publisher), negotiated_codec(subscriber)
    return a is not None and b is not None and a.lower() == b.lower()


def restrict_answer_codec(transceiver: RTCRtpTransceiver, codec: str | None = None) -> None:
    """Restrict a transceiver that a *remote offer* created to one codec, before the answer.

    aiortc creates such transceivers inside ``setRemoteDescription`` and computes their common
    codecs there, before ``setCodecPreferences`` could be called; so the common list is filtered
    afterwards with aiortc's own preference filter (it keeps the matching RTX too).
    Raises ValueError when the offer does not carry the codec.
    """
    kind = transceiver.kind
    if codec is None:
        codec = "VP8" if kind == "video" else "opus"
    wanted = codec_capabilities(kind, codec)
    compat.set_transceiver_codecs(
        transceiver,
        compat.filter_preferred_codecs(compat.transceiver_codecs(transceiver), wanted),
    )
    transceiver.setCodecPreferences(wanted)  # and in later renegotiations
    if negotiated_codec(transceiver) is None:
        raise ValueError(f"the offer has no {codec} for {kind}")
