"""SegmentWriter: one track's encoded packets into one container file, off the event loop.

No transcoding: packets are muxed as they arrived (VP8/Opus into WebM, H.264 into Matroska).
The event loop only copies a packet into a bounded queue (:meth:`SegmentWriter.write`, O(1),
never blocks); one writer thread per segment owns the container and does every disk access.

Container choices (measured with PyAV 18.1 / FFmpeg 8.1, see ``tests/recording``):

* **Not** ``live=1``: a seekable (non-live) Matroska/WebM file gets its Duration and Cues
  written by :meth:`close`, which replay needs for seeking; a killed file still decodes.
* ``flush_packets=1``: without it FFmpeg keeps up to 256 KiB in its I/O buffer, and a file
  killed early is not even openable. With it, each closed cluster reaches the kernel at once.
* ``cluster_time_limit=1000``: a cluster closes at the first keyframe after 1 s, or at
  ``cluster_size_limit`` bytes, so a ``kill -9`` loses about the last second of media.
  ``os.fsync`` every ``fsync_interval`` seconds bounds the loss on power failure too.
* H.264 goes into Matroska (``.mkv``) rather than fragmented MP4: same muxer, same crash
  behaviour and Cues as WebM, and SPS/PPS travel in-band (aiortc's and Chromium's IDRs carry
  them), so no ``avcC`` is needed up front. The segment starts at the first IDR that has an
  SPS. Conversion to MP4 for players that need it is an export step.

Timestamps: ``pts = dts = ts - first_ts`` in 1/clock_rate (90 kHz video, 48 kHz Opus); a
packet whose timestamp does not increase is dropped (counted). Each packet is held back until
the next one arrives so that its duration is known: the file's duration then covers the last
frame too.

Next to every media file a JSON sidecar (``<file>.json``) maps the file's timeline to the
server's wall clock: ``first_arrival_ms`` (ms since the epoch) is when media time 0 arrived;
``first_ts`` is the first packet's RTP-derived timestamp; ``sync_points`` adds (media seconds,
arrival ms) pairs every ``sync_interval`` seconds to follow clock drift. Each is the
least-delayed arrival over 2 s of packets (``arrival - media time``, minimized), not one
packet's: a keyframe or a jitter-buffer wait must not shift the whole map. The sidecar is
written when the first packet is muxed (so a killed recording has it; that one holds the first
packet's own arrival) and again by :meth:`close` with the duration and counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fractions
import io
import json
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av

from orbridge.media.bitstream import h264_frame_size, vp8_frame_size
from orbridge.recording.files import make_private_dir, private_opener, replace_private

logger = logging.getLogger(__name__)

__all__ = [
    "CODECS",
    "DEFAULT_WRITER_QUEUE",
    "SegmentInfo",
    "SegmentWriter",
    "WriterStats",
    "normalize_codec",
]

DEFAULT_WRITER_QUEUE = 300
"""Packets queued for the writer thread: 10 s of 30 fps video. The disk is normally far
faster than the stream; the bound only matters when the disk stalls, and then it caps memory
(about 3 MB at 2.5 Mbps) instead of letting a stalled disk grow the server."""


@dataclass(frozen=True)
class _Codec:
    mux_name: str
    clock_rate: int
    format: str
    suffix: str
    video: bool


CODECS: dict[str, _Codec] = {
    "VP8": _Codec("vp8", 90000, "webm", ".webm", True),
    "H264": _Codec("h264", 90000, "matroska", ".mkv", True),
    "OPUS": _Codec("opus", 48000, "webm", ".webm", False),
}
"""Recordable codecs by normalized name (see :func:`normalize_codec`)."""

_MUX_OPTIONS = {"flush_packets": "1", "cluster_time_limit": "1000"}
_STOP = object()
_SYNC_WINDOW = 2.0  # seconds of media over which a sync point takes the least delay
_SYNC_POINTS_MAX = 20000  # 55 h at one point per 10 s: bounded like everything else


def normalize_codec(codec: str) -> str:
    """``"video/VP8"``, ``"vp8"``, ``"H.264"``, ``"audio/opus"`` -> ``VP8``/``H264``/``OPUS``."""
    name = codec.rsplit("/", 1)[-1].upper().replace(".", "")
    if name not in CODECS:
        raise ValueError(f"cannot record codec {codec!r} without transcoding")
    return name


@dataclass
class WriterStats:
    """Counters; written by the writer thread (ints: a torn read is impossible in CPython)."""

    packets_in: int = 0
    """Packets accepted into the queue."""
    packets_written: int = 0
    bytes_written: int = 0
    dropped_overflow: int = 0
    """Dropped because the queue was full, and then until the next keyframe."""
    dropped_before_keyframe: int = 0
    dropped_non_increasing: int = 0
    dropped_after_error: int = 0
    overflow_events: int = 0
    max_queue_len: int = 0
    fsyncs: int = 0

    @property
    def dropped(self) -> int:
        return (
            self.dropped_overflow
            + self.dropped_before_keyframe
            + self.dropped_non_increasing
            + self.dropped_after_error
        )

    def snapshot(self) -> dict[str, int]:
        data = asdict(self)
        data["dropped"] = self.dropped
        return data


@dataclass
class SegmentInfo:
    """One recorded file and its wall-clock mapping (also the sidecar's content)."""

    path: str
    codec: str
    clock_rate: int
    width: int | None = None
    height: int | None = None
    first_arrival_ms: int | None = None
    """Server arrival time (ms since the epoch) of the first packet = media time 0."""
    first_ts: int | None = None
    """Timestamp (1/clock_rate, as the tap gave it) of the first packet."""
    last_arrival_ms: int | None = None
    duration: float | None = None
    """Seconds of media in the file (last packet's end), known after close."""
    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    closed: bool = False
    error: str | None = None
    sync_points: list[tuple[float, int]] = field(default_factory=list)
    """(media seconds, arrival ms) pairs, one per ``sync_interval``."""

    @property
    def sidecar(self) -> str:
        return self.path + ".json"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sync_points"] = [list(point) for point in self.sync_points]
        return data


class SegmentWriter:
    """Writes one track's packets into ``path`` from a dedicated thread.

    :param path: the media file (its suffix should match ``CODECS[codec].suffix``).
    :param codec: ``VP8``, ``H264`` or ``opus`` (MIME types like ``video/VP8`` accepted).
    :param queue_size: bound of the packet queue between the event loop and the thread.
    :param on_error: called once with the exception, on ``loop`` when given (via
        ``call_soon_threadsafe``), else in the writer thread.
    :param fsync_interval: seconds between ``fsync`` calls (0 disables).
    :param sync_interval: seconds of media between two sync points in the sidecar.
    """

    def __init__(
        self,
        path: str | Path,
        codec: str,
        *,
        queue_size: int = DEFAULT_WRITER_QUEUE,
        loop: asyncio.AbstractEventLoop | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        fsync_interval: float = 2.0,
        sync_interval: float = 10.0,
        name: str | None = None,
    ) -> None:
        if queue_size < 2:
            raise ValueError("queue_size must be >= 2")
        self.codec = normalize_codec(codec)
        self._spec = CODECS[self.codec]
        self.path = Path(path)
        self.name = name or self.path.name
        self.stats = WriterStats()
        self.info = SegmentInfo(str(self.path), self.codec, self._spec.clock_rate)
        self.error: BaseException | None = None
        self._on_error = on_error
        self._loop = loop
        self._fsync_interval = fsync_interval
        self._sync_interval = sync_interval
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._dropping = False  # after an overflow: drop until the next keyframe
        self._closing = False
        self._container: Any = None
        self._stream: Any = None
        self._time_base = fractions.Fraction(1, self._spec.clock_rate)
        self._held: tuple[bytes, int, bool, int] | None = None  # waits for its duration
        self._last_ts: int | None = None
        self._last_duration = 0
        self._next_sync = 0.0
        self._window: list[float] | None = None  # [media s of its start, least offset ms]
        self._fd: int | None = None
        self._file: io.FileIO | None = None  # the segment's file, owned by the thread
        self._last_fsync = 0.0
        self._thread = threading.Thread(target=self._run, name=f"rec:{self.name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SegmentWriter({str(self.path)!r}, {self.codec})"

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def qsize(self) -> int:
        return self._queue.qsize()

    # -- event loop side: synchronous, O(1), never blocks ------------------------------------

    def write(self, packet: av.Packet, arrival_ms: int) -> bool:
        """Queue a copy of ``packet`` (ts in 1/clock_rate). False when dropped."""
        return self.write_data(
            bytes(packet), int(packet.pts or 0), bool(packet.is_keyframe), arrival_ms
        )

    def write_data(self, data: bytes, ts: int, keyframe: bool, arrival_ms: int) -> bool:
        """Like :meth:`write` for raw bytes (the queue holds copies, never shared packets)."""
        stats = self.stats
        if self.error is not None or self._closing:
            stats.dropped_after_error += 1
            return False
        if self._dropping:
            if not keyframe:
                stats.dropped_overflow += 1
                return False
            self._dropping = False
        try:
            self._queue.put_nowait((data, ts, keyframe, arrival_ms))
        except queue.Full:
            # The disk stalls: a gap is better than an unbounded queue. Later P-frames would
            # reference the lost one, so resume only at a keyframe (audio: every packet is one).
            stats.overflow_events += 1
            stats.dropped_overflow += 1
            self._dropping = self._spec.video
            return False
        stats.packets_in += 1
        size = self._queue.qsize()
        if size > stats.max_queue_len:
            stats.max_queue_len = size
        return True

    async def close(self, grace: float = 10.0) -> SegmentInfo:
        """Finalize the file (trailer, duration, sidecar) without blocking the loop."""
        return await asyncio.to_thread(self.close_sync, grace)

    def close_sync(self, timeout: float = 10.0) -> SegmentInfo:
        """Blocking :meth:`close`: waits for queued packets to be written."""
        self._closing = True
        with contextlib.suppress(queue.Full):
            # Blocks only while the thread drains the queue (it always drains, even failed).
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("%s: writer thread did not finish within %.1f s", self, timeout)
        return self.info

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                break
            if self.error is not None:
                self.stats.dropped_after_error += 1
                continue
            try:
                self._handle(*item)
            except Exception as exc:  # disk full, permissions, muxer errors: never fatal
                self._fail(exc)
        self._finish()

    def _handle(self, data: bytes, ts: int, keyframe: bool, arrival_ms: int) -> None:
        stats = self.stats
        if self._container is None:
            if not self._can_start(data, keyframe):
                stats.dropped_before_keyframe += 1
                return
            self._open(data, ts, arrival_ms)
        assert self.info.first_ts is not None
        rel = ts - self.info.first_ts
        if self._last_ts is not None and rel <= self._last_ts:
            stats.dropped_non_increasing += 1  # a repeated or reordered timestamp breaks dts
            return
        if self._held is not None:
            self._last_duration = rel - self._held[1]
            self._mux(*self._held, duration=self._last_duration)
        self._held = (data, rel, keyframe, arrival_ms)
        self._last_ts = rel
        if self._fd is not None and self._fsync_interval > 0:
            now = time.monotonic()
            if now - self._last_fsync >= self._fsync_interval:
                self._last_fsync = now
                os.fsync(self._fd)  # page cache -> disk: bounds loss on power failure too
                stats.fsyncs += 1

    def _can_start(self, data: bytes, keyframe: bool) -> bool:
        if not self._spec.video:
            return True
        if not keyframe:
            return False
        if self.codec == "VP8":
            return vp8_frame_size(data) is not None
        # An IDR without SPS/PPS cannot be decoded from a file (nor sized for its header).
        return h264_frame_size(data) is not None

    def _open(self, data: bytes, ts: int, arrival_ms: int) -> None:
        spec = self._spec
        make_private_dir(self.path.parent)
        # The file is ours, not FFmpeg's: PyAV keeps the GIL while FFmpeg opens a file and
        # writes its header, so a hung disk, NFS mount or FIFO there froze every thread of the
        # process, the event loop too. Python's file object releases the GIL in open() (its
        # opener's os.open and os.fstat too) and write(), so a stalled disk stalls only this
        # thread. The file is created 0600 (patient video).
        file = open(  # noqa: SIM115 - closed by _release()
            self.path, "wb", buffering=0, opener=private_opener
        )
        try:
            container = av.open(file, "w", format=spec.format, options=dict(_MUX_OPTIONS))
        except BaseException:
            file.close()
            raise
        self._file = file
        try:
            if spec.video:
                size = (vp8_frame_size if self.codec == "VP8" else h264_frame_size)(data)
                assert size is not None  # checked by _can_start
                width, height = size
                stream = container.add_mux_stream(spec.mux_name, width=width, height=height)
                self.info.width, self.info.height = size
            else:
                stream = container.add_mux_stream(spec.mux_name, rate=spec.clock_rate)
            stream.time_base = self._time_base
        except Exception:
            container.close()
            raise
        self._container, self._stream = container, stream
        self.info.first_ts = ts
        self.info.first_arrival_ms = arrival_ms
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.fstat(file.fileno()).st_mode):  # a FIFO or device is not fsynced
                self._fd = file.fileno()
        self._last_fsync = time.monotonic()
        self._write_sidecar()

    def _mux(self, data: bytes, rel: int, keyframe: bool, arrival_ms: int, duration: int) -> None:
        packet = av.Packet(data)
        packet.pts = packet.dts = rel
        packet.duration = duration
        packet.time_base = self._time_base
        packet.is_keyframe = keyframe
        packet.stream = self._stream
        self._container.mux(packet)  # a blocked write blocks here, in file.write, GIL released
        stats = self.stats
        stats.packets_written += 1
        stats.bytes_written += len(data)
        info = self.info
        info.last_arrival_ms = arrival_ms
        self._sync(rel / self._spec.clock_rate, arrival_ms)

    def _sync(self, seconds: float, arrival_ms: int) -> None:
        # A sync point is the least-delayed arrival over a window of packets (as NTP picks its
        # best sample): a keyframe that took 60 ms longer to arrive must not shift the map.
        offset = arrival_ms - seconds * 1000.0
        window = self._window
        if window is None:
            if seconds < self._next_sync:
                return
            window = self._window = [seconds, offset]
        elif seconds < window[0] + _SYNC_WINDOW:
            window[1] = min(window[1], offset)
        else:
            self._close_window()
            self._sync(seconds, arrival_ms)
            return
        if window[0] == 0.0:
            self.info.first_arrival_ms = round(window[1])

    def _close_window(self) -> None:
        window, self._window = self._window, None
        if window is None:
            return
        start, offset = window
        if len(self.info.sync_points) < _SYNC_POINTS_MAX:
            self.info.sync_points.append((round(start, 6), round(start * 1000.0 + offset)))
        self._next_sync = start + self._sync_interval

    def _finish(self) -> None:
        info = self.info
        if self._container is not None:
            if self._held is not None and self.error is None:
                # The last packet lasts as long as the one before it (one frame).
                try:
                    self._mux(*self._held, duration=self._last_duration)
                except Exception as exc:
                    self._fail(exc)
                self._held = None
            self._close_window()
            if self._container is not None:  # None when _fail() gave up on it
                try:
                    self._container.close()  # trailer: Duration and Cues
                except Exception as exc:
                    self._fail(exc)
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
            self._release()
        if self._last_ts is not None:
            info.duration = (self._last_ts + self._last_duration) / self._spec.clock_rate
        info.packets = self.stats.packets_written
        info.bytes = self.stats.bytes_written
        info.dropped = self.stats.dropped
        info.closed = True
        if info.first_arrival_ms is not None:
            try:
                self._write_sidecar()
            except Exception as exc:
                self._fail(exc)

    def _release(self) -> None:
        self._fd = None  # the file's own descriptor: closed with it
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def _write_sidecar(self) -> None:
        # Atomic replace: a crash leaves the old or the new sidecar, never half of one.
        replace_private(Path(self.info.sidecar), json.dumps(self.info.to_json(), indent=1))

    def _fail(self, exc: BaseException) -> None:
        if self.error is not None:
            return
        self.error = exc
        # The segment's sidecar and manifest are read by library viewers: the OS's words for
        # the failure, never its text (which names the file's path on this server).
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
        self.info.error = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        code = getattr(exc, "errno", None)
        name = errno.errorcode.get(code, "") if isinstance(code, int) else ""
        logger.error("%s: recording failed (%s): %s", self, name or type(exc).__name__, exc)
        # Drop what the thread holds; packets still queued are drained and counted.
        self._held = None
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        self._release()
        callback = self._on_error
        if callback is None:
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(callback, exc)
        else:
            try:
                callback(exc)
            except Exception:
                logger.exception("%s: on_error callback failed", self)
