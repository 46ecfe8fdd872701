"""TrackRecorder: a recorder is just another sink of a :class:`TrackForwarder`.

It subscribes like a subscriber leg would (bounded queue, starts at a keyframe, the forwarder
asks the publisher for one), and a task moves each packet, stamped with the server's arrival
time, into a :class:`~recording.live.writer.SegmentWriter` whose thread does the disk I/O.

One forwarder = one segment file. When the publisher reconnects, the room gives the recorder
the new forwarder (:meth:`TrackRecorder.new_segment`) and a new file starts; when a forwarder
ends, its segment is finalized at once, so a publisher that never comes back leaves a complete
file. Files are ``<directory>/<name>-<NNN><suffix>`` with a ``.json`` sidecar each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from orbridge.media.forwarder import Subscriber, SubscriberClosed, TrackForwarder
from orbridge.recording.live.writer import (
    CODECS,
    DEFAULT_WRITER_QUEUE,
    SegmentInfo,
    SegmentWriter,
    normalize_codec,
)

logger = logging.getLogger(__name__)

__all__ = ["RECORDER_QUEUE_SIZE", "RecorderStats", "TrackRecorder"]

RECORDER_QUEUE_SIZE = 60
"""Forwarder-side queue: the recorder task only copies packets into the writer queue, so this
fills only if the event loop itself stalls; 2 s at 30 fps before the forwarder skips to a
keyframe."""


@dataclass
class RecorderStats:
    packets_written: int = 0
    bytes_written: int = 0
    dropped: int = 0
    """Writer drops (overflow, non-increasing, after error) plus forwarder-queue drops."""
    segments: int = 0
    errors: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


class TrackRecorder:
    """Records one published track, one segment per forwarder, without transcoding.

    :param forwarder: the publisher's forwarder (the first segment starts on :meth:`start`).
    :param directory: where segment files go (created on the first packet).
    :param name: file name prefix, e.g. ``"<room>-<participant>-video"``.
    :param codec: ``VP8``/``H264``/``opus`` or a MIME type; defaults to ``forwarder.codec``.
    :param clock: wall clock in seconds (the server's one clock source for sync).
    :param on_error: called on the event loop when a segment's writer fails.
    """

    def __init__(
        self,
        forwarder: TrackForwarder,
        directory: str | Path,
        name: str,
        codec: str | None = None,
        *,
        queue_size: int = RECORDER_QUEUE_SIZE,
        writer_queue_size: int = DEFAULT_WRITER_QUEUE,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        codec = codec or forwarder.codec
        if not codec:
            raise ValueError("codec unknown: pass codec= or give the forwarder one")
        self.directory = Path(directory)
        self.name = name
        self.codec = codec
        self.queue_size = queue_size
        self.writer_queue_size = writer_queue_size
        self.clock = clock
        self.on_error = on_error
        self.segments: list[SegmentInfo] = []
        self.writers: list[SegmentWriter] = []
        self._forwarder: TrackForwarder | None = forwarder
        self._subscriber: Subscriber | None = None
        self._writer: SegmentWriter | None = None
        self._live_writer: SegmentWriter | None = None  # not yet counted in the totals
        self._task: asyncio.Task[None] | None = None
        self._closed_stats = RecorderStats()  # totals of finalized segments
        self._stopped = False

    def __repr__(self) -> str:
        return f"TrackRecorder({self.name!r}, segments={len(self.segments)})"

    @property
    def recording(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def stats(self) -> RecorderStats:
        """Totals over all segments, the current one included."""
        total = RecorderStats(**asdict(self._closed_stats))
        writer, subscriber = self._live_writer, self._subscriber
        if writer is not None:
            total.packets_written += writer.stats.packets_written
            total.bytes_written += writer.stats.bytes_written
            total.dropped += writer.stats.dropped
            if subscriber is not None:
                total.dropped += subscriber.stats.frames_dropped
        return total

    def start(self) -> None:
        """Start recording the forwarder given to the constructor (idempotent)."""
        if self._task is None and self._forwarder is not None and not self._stopped:
            self._begin(self._forwarder)

    async def new_segment(self, forwarder: TrackForwarder) -> SegmentInfo | None:
        """Finish the current segment (if any) and record ``forwarder`` into a new file.

        Returns the finished segment's info (None if there was none).
        """
        if self._stopped:
            raise RuntimeError(f"{self} is stopped")
        finished = await self._end_segment()
        self._begin(forwarder)
        return finished

    async def finish_segment(self) -> SegmentInfo | None:
        """Finalize the current segment (its forwarder ended); the next one starts with
        :meth:`new_segment`. Returns the finished segment's info (None if there was none)."""
        return await self._end_segment()

    async def stop(self) -> list[SegmentInfo]:
        """Finalize the current segment; returns every segment of this recorder."""
        self._stopped = True
        await self._end_segment()
        return self.segments

    # -- internals ---------------------------------------------------------------------------

    def _begin(self, forwarder: TrackForwarder) -> None:
        loop = asyncio.get_running_loop()
        index = len(self.segments) + 1
        suffix = CODECS[normalize_codec(self.codec)].suffix
        path = self.directory / f"{self.name}-{index:03d}{suffix}"
        self._forwarder = forwarder
        writer = SegmentWriter(
            path,
            self.codec,
            queue_size=self.writer_queue_size,
            loop=loop,
            on_error=self._writer_failed,
            name=f"{self.name}-{index:03d}",
        )
        self._writer = self._live_writer = writer
        self.writers.append(writer)
        self.segments.append(writer.info)
        self._closed_stats.segments += 1
        try:
            self._subscriber = forwarder.subscribe(
                maxsize=self.queue_size, name=f"recorder:{self.name}"
            )
        except SubscriberClosed:
            # The publisher is already gone: an empty, closed segment.
            self._subscriber = None
        self._task = loop.create_task(self._pump(writer), name=f"recorder:{self.name}:{index}")

    async def _pump(self, writer: SegmentWriter) -> None:
        subscriber = self._subscriber
        clock = self.clock
        try:
            if subscriber is not None:
                while True:
                    packet = await subscriber.get()
                    # Arrival stamp: the packet left the forwarder just now (the queue is
                    # drained every frame, so this is within a loop iteration of arrival).
                    writer.write(packet, int(clock() * 1000))
        except SubscriberClosed:
            logger.info("%s: forwarder ended, finalizing segment %s", self, writer.path.name)
        finally:
            if subscriber is not None:
                subscriber.close()
            await asyncio.shield(self._finalize(writer, subscriber))

    async def _finalize(self, writer: SegmentWriter, subscriber: Subscriber | None) -> None:
        await writer.close()
        if self._live_writer is writer:
            self._live_writer = None
        totals = self._closed_stats
        totals.packets_written += writer.stats.packets_written
        totals.bytes_written += writer.stats.bytes_written
        totals.dropped += writer.stats.dropped
        if subscriber is not None:
            totals.dropped += subscriber.stats.frames_dropped
            writer.info.dropped += subscriber.stats.frames_dropped

    async def _end_segment(self) -> SegmentInfo | None:
        task, writer = self._task, self._writer
        if task is None or writer is None:
            return None
        if not task.done():
            if self._subscriber is not None:
                # Closing the subscriber lets the pump drain its queue, then finalize.
                self._subscriber.close()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        return writer.info

    def _writer_failed(self, exc: BaseException) -> None:
        self._closed_stats.errors += 1
        if self.on_error is not None:
            self.on_error(exc)
