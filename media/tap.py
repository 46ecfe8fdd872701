"""The encoded-frame tap: remote tracks yield ``av.Packet`` instead of decoded frames.

How aiortc 1.16 is hooked (all hooks are module-global names that aiortc looks up at call
time, replaced once by :func:`install_tap` and restored by :func:`uninstall_tap`, through
``media.aiortc_compat``):

* ``aiortc.rtcrtpreceiver.get_decoder``: called by the receiver's decoder thread for each
  codec. In pass-through mode it returns :class:`PassthroughDecoder`, whose ``decode()`` turns
  the jitter buffer's complete encoded frame into one ``av.Packet`` (pts/dts = RTP timestamp
  relative to the first frame, ``time_base`` = 1/clockRate, ``is_keyframe`` detected by
  :mod:`media.bitstream`). The receiver's thread then hands those packets to the remote track
  unchanged. Audio (Opus) is passed through the same way, every packet flagged as a keyframe
  (each Opus packet decodes on its own).
* ``aiortc.rtcrtpreceiver.decoder_worker``: the thread body is wrapped only to learn *which*
  receiver it serves. ``get_decoder(codec)`` gets no receiver, so the wrapper looks up the
  mode registered for the track queue it feeds and stores it in a thread-local.
* ``aiortc.rtcrtpsender.get_encoder``: returns a :class:`MeteredEncoder` that packs
  pre-encoded packets itself and creates (and counts) a real encoder only when a sender is
  actually given raw frames. So ``stats.video_encoders_created`` counts real encoding.

Choosing the mode (decided per receiver, when its decoder thread starts):

* :func:`install_tap` sets the process default, ``"passthrough"`` unless told otherwise: the
  server must never decode by accident.
* :func:`set_receive_mode` overrides it for one ``RTCPeerConnection`` (all its present and
  future remote tracks) or one remote track. A load-test client run with ``--decode`` calls
  ``set_receive_mode(pc, "decode")`` before ``setRemoteDescription``; its tracks then yield
  ``av.VideoFrame``/``av.AudioFrame`` as plain aiortc would.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import av
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from orbridge.media import aiortc_compat as compat
from orbridge.media.aiortc_compat import Encoder, JitterFrame, convert_timebase
from orbridge.media.bitstream import h264_is_keyframe, vp8_is_keyframe

logger = logging.getLogger(__name__)

TapMode = Literal["passthrough", "decode"]

__all__ = [
    "MeteredEncoder",
    "PassthroughDecoder",
    "TapMode",
    "TapStats",
    "install_tap",
    "is_installed",
    "set_receive_mode",
    "stats",
    "uninstall_tap",
]


@dataclass
class TapStats:
    """Process-wide counters (a server process only hosts server peers, so these are its own).

    Increments happen in decoder threads and on the event loop; each is a single ``+=`` on an
    int under the GIL, good enough for metrics.
    """

    video_decoders_created: int = 0
    audio_decoders_created: int = 0
    video_encoders_created: int = 0
    audio_encoders_created: int = 0
    passthrough_receivers: int = 0
    decoding_receivers: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


stats = TapStats()


# --- keyframe detection ------------------------------------------------------------------


def _always_keyframe(data: bytes) -> bool:
    return True


_KEYFRAME_DETECTORS: dict[str, Callable[[bytes], bool]] = {
    "video/vp8": vp8_is_keyframe,
    "video/h264": h264_is_keyframe,
}


# --- pass-through decoder ----------------------------------------------------------------


class PassthroughDecoder:
    """Stands in for an aiortc ``Decoder``: one encoded frame in, one ``av.Packet`` out."""

    def __init__(self, codec: RTCRtpCodecParameters) -> None:
        mime = codec.mimeType.lower()
        if mime.startswith("video/") and mime not in _KEYFRAME_DETECTORS:
            raise ValueError(f"no pass-through for {codec.mimeType}")
        self.mime_type = codec.mimeType
        self.time_base = fractions.Fraction(1, codec.clockRate)
        # Audio codecs have no inter-frame dependency: every packet is a valid start.
        self._is_keyframe = _KEYFRAME_DETECTORS.get(mime, _always_keyframe)

    def decode(self, encoded_frame: JitterFrame) -> list[av.Packet]:
        data = encoded_frame.data
        if not data:
            return []
        packet = av.Packet(data)
        # The receiver already maps RTP timestamps to a monotonic count from 0 (wraps handled).
        packet.pts = encoded_frame.timestamp
        packet.dts = encoded_frame.timestamp
        packet.time_base = self.time_base
        packet.is_keyframe = self._is_keyframe(data)
        return [packet]


# --- mode registry -----------------------------------------------------------------------

_default_mode: TapMode = "passthrough"
_installed = False
# Keyed by the RemoteStreamTrack's internal queue: it is the one thing both the event loop
# (when a mode is chosen) and the decoder thread (argument ``output_q``) can see.
_queue_modes: weakref.WeakKeyDictionary[asyncio.Queue[Any], TapMode] = weakref.WeakKeyDictionary()
_pc_modes: weakref.WeakKeyDictionary[RTCPeerConnection, TapMode] = weakref.WeakKeyDictionary()
_thread_mode = threading.local()

_original_get_decoder = compat.RECEIVER_GET_DECODER.original
_original_decoder_worker = compat.RECEIVER_DECODER_WORKER.original
_original_get_encoder = compat.SENDER_GET_ENCODER.original


def _mark_track(track: MediaStreamTrack, mode: TapMode) -> None:
    track_queue = compat.remote_track_queue(track)
    if track_queue is None:
        raise TypeError(f"{track!r} is not a remote track of an RTCRtpReceiver")
    _queue_modes[track_queue] = mode


def set_receive_mode(
    target: RTCPeerConnection | RTCRtpReceiver | MediaStreamTrack, mode: TapMode
) -> None:
    """Choose pass-through or real decoding for a peer connection, receiver or remote track.

    Must happen before the receiver starts (i.e. before the connection is established);
    for a peer connection, call it right after creating it. Later calls do not affect a
    receiver whose decoder thread is already running.
    """
    if mode not in ("passthrough", "decode"):
        raise ValueError(f"unknown tap mode {mode!r}")
    if isinstance(target, RTCPeerConnection):
        first_time = target not in _pc_modes
        _pc_modes[target] = mode
        for receiver in target.getReceivers():
            if receiver.track is not None:
                _mark_track(receiver.track, mode)
        if first_time:
            # Remote tracks are created in setRemoteDescription, which emits "track" before
            # it starts connecting (and so before any decoder thread exists).
            pc_ref = weakref.ref(target)

            def on_track(track: MediaStreamTrack) -> None:
                pc = pc_ref()
                if pc is not None and pc in _pc_modes:
                    _mark_track(track, _pc_modes[pc])

            target.on("track", on_track)
    elif isinstance(target, RTCRtpReceiver):
        if target.track is None:
            raise ValueError("receiver has no remote track yet; mark its peer connection")
        _mark_track(target.track, mode)
    else:
        _mark_track(target, mode)


def _tapped_decoder_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any],
    output_q: asyncio.Queue[Any],
    decode_error: threading.Event,
) -> None:
    # Runs in the receiver's own thread; a dict lookup is atomic under the GIL.
    mode = _queue_modes.get(output_q, _default_mode)
    _thread_mode.mode = mode
    if mode == "passthrough":
        stats.passthrough_receivers += 1
    else:
        stats.decoding_receivers += 1
    _original_decoder_worker(loop, input_q, output_q, decode_error)


def _tapped_get_decoder(codec: RTCRtpCodecParameters) -> Any:
    mode: TapMode = getattr(_thread_mode, "mode", _default_mode)
    if mode == "passthrough":
        return PassthroughDecoder(codec)
    decoder = _original_get_decoder(codec)
    if codec.mimeType.lower().startswith("video/"):
        stats.video_decoders_created += 1
    else:
        stats.audio_decoders_created += 1
    return decoder


# --- metered encoder ---------------------------------------------------------------------

_OPUS_TIME_BASE = fractions.Fraction(1, 48000)


class MeteredEncoder(Encoder):
    """What every RTCRtpSender gets from ``get_encoder``: packs packets, encodes lazily.

    aiortc creates an encoder object per sender even when it only packs packets; for Opus
    that object opens a libopus encoder and a resampler. This proxy packs pre-encoded
    packets without that, and builds (and counts) the real encoder on the first raw frame.
    """

    def __init__(self, codec: RTCRtpCodecParameters) -> None:
        self._codec = codec
        self._mime = codec.mimeType.lower()
        self._real: Encoder | None = None
        self._packer: Encoder | None = None
        self._target_bitrate: int | None = None

    @property
    def encoding(self) -> bool:
        """True once raw frames were given to this sender (a real encoder exists)."""
        return self._real is not None

    def encode(
        self, frame: av.frame.Frame, force_keyframe: bool = False
    ) -> tuple[list[bytes], int]:
        if self._real is None:
            self._real = _original_get_encoder(self._codec)
            if self._target_bitrate is not None and hasattr(self._real, "target_bitrate"):
                self._real.target_bitrate = self._target_bitrate
            if self._mime.startswith("video/"):
                stats.video_encoders_created += 1
            else:
                stats.audio_encoders_created += 1
        return self._real.encode(frame, force_keyframe)

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        if self._mime == "audio/opus" and self._real is None:
            return [bytes(packet)], convert_timebase(packet.pts, packet.time_base, _OPUS_TIME_BASE)
        if self._packer is None:
            # VP8/H.264 encoder objects open no codec context until encode(): cheap packers.
            self._packer = self._real or _original_get_encoder(self._codec)
        return self._packer.pack(packet)

    # aiortc's sender feeds REMB estimates here (only used when really encoding).
    @property
    def target_bitrate(self) -> int | None:
        real = self._real
        if real is not None and hasattr(real, "target_bitrate"):
            return int(real.target_bitrate)
        return self._target_bitrate

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._target_bitrate = bitrate
        if self._real is not None and hasattr(self._real, "target_bitrate"):
            self._real.target_bitrate = bitrate


def _tapped_get_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    return MeteredEncoder(codec)


# --- install / uninstall -----------------------------------------------------------------


def install_tap(default_mode: TapMode = "passthrough") -> None:
    """Install the hooks (idempotent) and set the default mode for unmarked receivers."""
    global _installed, _default_mode
    if default_mode not in ("passthrough", "decode"):
        raise ValueError(f"unknown tap mode {default_mode!r}")
    _default_mode = default_mode
    if _installed:
        return
    compat.check_versions()  # an untested aiortc must not forward silently wrong
    compat.RECEIVER_GET_DECODER.install(_tapped_get_decoder)
    compat.RECEIVER_DECODER_WORKER.install(_tapped_decoder_worker)
    compat.SENDER_GET_ENCODER.install(_tapped_get_encoder)
    _installed = True
    logger.info("encoded-frame tap installed (default mode: %s)", default_mode)


def uninstall_tap() -> None:
    """Restore aiortc's own functions (tests; running receivers keep their decoder)."""
    global _installed
    compat.RECEIVER_GET_DECODER.restore()
    compat.RECEIVER_DECODER_WORKER.restore()
    compat.SENDER_GET_ENCODER.restore()
    _installed = False


def is_installed() -> bool:
    return _installed
