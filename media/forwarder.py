"""TrackForwarder: one upstream reader per remote track, N bounded subscriber queues.

Why not aiortc's ``MediaRelay``: buffered it queues without bound, unbuffered it drops
P-frames (corrupting video); and several readers of one remote track split its frames
between them (aiortc issue #302). So exactly one task reads the tapped track here.

Rules enforced (see ARCHITECTURE.md, "Rules of the hot path"):

* The reader never awaits a subscriber: :meth:`Subscriber._offer` is synchronous, O(1).
* Every subscriber queue is bounded (``maxsize`` packets). A subscriber whose queue is full is
  *lagging*: its queue is cleared, it waits for the next keyframe, and one (throttled)
  keyframe request goes upstream. Memory per subscriber is at most ``maxsize`` packets.
* A new video subscriber drops packets until a keyframe and triggers a keyframe request.
* Audio packets are all flagged keyframes by the tap, so audio starts and recovers at once.
* Liveness costs one clock read per packet: ``last_frame_at`` is what the node's stall watch
  (``media.stall``) judges; a stalled forwarder's next packet calls ``on_resumed`` at once.

Packets are shared between subscribers and never mutated after the tap made them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from orbridge.media.keyframes import KeyframeRequester
from orbridge.media.lean_sender import PayloadCache

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "ForwarderStats",
    "Subscriber",
    "SubscriberClosed",
    "SubscriberStats",
    "TrackForwarder",
]

DEFAULT_QUEUE_SIZE = 30
"""Packets per subscriber queue: 1 s of 30 fps video, 0.6 s of 20 ms Opus. A healthy sender
drains its queue every frame, so it only fills when a peer is stuck; a bigger bound would
only add latency before the skip to a fresh keyframe."""

_ids = itertools.count(1)


class SubscriberClosed(MediaStreamError):
    """The subscriber was closed (unsubscribed, or the upstream track ended)."""


@dataclass
class SubscriberStats:
    frames_in: int = 0
    """Packets offered by the forwarder."""
    frames_out: int = 0
    """Packets taken by the consumer."""
    frames_dropped: int = 0
    """Packets discarded: while waiting for a keyframe or cleared when lagging."""
    lag_events: int = 0
    max_queue_len: int = 0
    """High-water mark of the queue (never above ``maxsize``)."""
    keyframe_requests_sent: int = 0
    keyframe_requests_suppressed: int = 0
    keyframe_requests_received: int = 0
    """PLI/FIR received from this subscriber's peer (see ``media.subscriber_track``)."""

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ForwarderStats:
    frames_in: int = 0
    keyframes_in: int = 0
    frames_rejected: int = 0
    """Items from the track that were not ``av.Packet`` (the tap was not applied)."""
    bytes_in: int = 0
    subscribers_added: int = 0
    subscribers_removed: int = 0
    subscribers_rejected: int = 0
    """Subscriber legs refused because they negotiated another codec."""
    keyframe_requests_sent: int = 0
    keyframe_requests_suppressed: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


class Subscriber:
    """One consumer of a forwarder: a bounded queue plus its keyframe state.

    Created by :meth:`TrackForwarder.subscribe`. One coroutine at a time may call :meth:`get`.
    """

    def __init__(self, forwarder: TrackForwarder, maxsize: int, name: str) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.forwarder = forwarder
        self.maxsize = maxsize
        self.name = name
        self.stats = SubscriberStats()
        self._queue: deque[av.Packet] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._need_keyframe = forwarder.kind == "video"
        self._closed = False

    def __repr__(self) -> str:
        return f"Subscriber({self.name!r}, queued={len(self._queue)}/{self.maxsize})"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting_for_keyframe(self) -> bool:
        return self._need_keyframe

    def qsize(self) -> int:
        return len(self._queue)

    async def get(self) -> av.Packet:
        """Next packet; raises :class:`SubscriberClosed` once closed and drained."""
        while not self._queue:
            if self._closed:
                raise SubscriberClosed(self.name)
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        self.stats.frames_out += 1
        return self._queue.popleft()

    def get_nowait(self) -> av.Packet | None:
        if not self._queue:
            return None
        self.stats.frames_out += 1
        return self._queue.popleft()

    def request_keyframe(self, reason: str = "subscriber") -> bool:
        """Ask the forwarder for a keyframe on this subscriber's behalf (throttled upstream)."""
        sent = self.forwarder.request_keyframe(reason)
        if sent:
            self.stats.keyframe_requests_sent += 1
        else:
            self.stats.keyframe_requests_suppressed += 1
        return sent

    def close(self) -> None:
        """Stop receiving; a pending :meth:`get` returns what is queued, then raises."""
        if self._closed:
            return
        self._closed = True
        self.forwarder._remove(self)
        self._wake()

    # -- called by the forwarder's reader, must stay synchronous and O(1) amortized --

    def _offer(self, packet: av.Packet, keyframe: bool) -> None:
        self.stats.frames_in += 1
        if self._need_keyframe:
            if not keyframe:
                self.stats.frames_dropped += 1
                return
            self._need_keyframe = False
        if len(self._queue) >= self.maxsize:
            # Lagging: whatever is queued is now too old to be worth sending.
            self.stats.lag_events += 1
            self.stats.frames_dropped += len(self._queue)
            self._queue.clear()
            if not keyframe:
                self.stats.frames_dropped += 1
                self._need_keyframe = True
                self.request_keyframe("lagging")
                return
            # A keyframe is a clean restart point: keep it.
        self._queue.append(packet)
        if len(self._queue) > self.stats.max_queue_len:
            self.stats.max_queue_len = len(self._queue)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class TrackForwarder:
    """Reads one tapped remote track and fans its packets out to subscribers.

    :param track: the publisher's remote track (tapped: yields ``av.Packet``).
    :param keyframes: requester for the publisher's receiver (video); None disables requests.
    :param queue_size: default ``maxsize`` of subscriber queues.
    :param codec: MIME type the publisher leg negotiated (``media.codecs.negotiated_codec``);
        subscriber legs must match it, since packets are forwarded as they are.
    """

    def __init__(
        self,
        track: MediaStreamTrack,
        *,
        keyframes: KeyframeRequester | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        codec: str | None = None,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.track = track
        self.codec = codec
        self.kind: str = track.kind
        self.keyframes = keyframes
        self.queue_size = queue_size
        self.name = name or f"{track.kind}-{track.id}"
        self.stats = ForwarderStats()
        # RTP payloads of each frame, packetized once for every subscriber's sender
        self.payload_cache = PayloadCache()
        self._subscribers: list[Subscriber] = []
        self._task: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._on_ended: list[Callable[[], None]] = []
        self.last_ts: int | None = None  # source timestamp of the latest frame
        # Liveness (media/stall.py): the monotonic time of the latest frame; before the first
        # one, of the publish (moved on by the stall watch while the connection is not up).
        self.clock = clock
        self.last_frame_at: float = clock()
        # Set by the stall watch when no frame came for its timeout; the next frame clears it
        # and calls `on_resumed(now)`.
        self.stalled = False
        self.on_resumed: Callable[[float], None] | None = None

    def __repr__(self) -> str:
        return f"TrackForwarder({self.name!r}, subscribers={len(self._subscribers)})"

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        return tuple(self._subscribers)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def reading(self) -> bool:
        """True while the reader task runs (a forwarder nobody started cannot stall)."""
        return self._task is not None and not self._ended.is_set()

    def start(self) -> None:
        """Start the single reader task (idempotent)."""
        if self._task is None and not self.ended:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"forwarder:{self.name}"
            )

    async def stop(self) -> None:
        """Stop reading and close every subscriber."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._finish()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def on_ended(self, callback: Callable[[], None]) -> None:
        self._on_ended.append(callback)

    def subscribe(self, *, maxsize: int | None = None, name: str | None = None) -> Subscriber:
        """Add a subscriber; a video subscriber starts at the next keyframe (requested now)."""
        if self.ended:
            raise SubscriberClosed(f"{self.name} has ended")
        subscriber = Subscriber(self, maxsize or self.queue_size, name or f"sub-{next(_ids)}")
        self._subscribers.append(subscriber)
        self.stats.subscribers_added += 1
        if subscriber.waiting_for_keyframe:
            subscriber.request_keyframe("new subscriber")
        return subscriber

    def request_keyframe(self, reason: str = "") -> bool:
        """Throttled keyframe request upstream. True when a PLI went out now."""
        if self.kind != "video" or self.keyframes is None:
            return False
        sent = self.keyframes.request(reason)
        if sent:
            self.stats.keyframe_requests_sent += 1
        else:
            self.stats.keyframe_requests_suppressed += 1
        return sent

    def _remove(self, subscriber: Subscriber) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(subscriber)
            self.stats.subscribers_removed += 1

    async def _run(self) -> None:
        warned = False
        try:
            while True:
                item = await self.track.recv()
                if not isinstance(item, av.Packet):
                    # Decoded frames mean the tap was bypassed: keep draining the track
                    # (an unread remote track accumulates without bound) but forward nothing.
                    self.stats.frames_rejected += 1
                    if not warned:
                        warned = True
                        logger.warning("%s: track yields %s, not packets", self, type(item))
                    continue
                self._dispatch(item)
        except MediaStreamError:
            logger.debug("%s: upstream track ended", self)
        finally:
            self._finish()

    def _dispatch(self, packet: av.Packet) -> None:
        keyframe = bool(packet.is_keyframe)
        stats = self.stats
        stats.frames_in += 1
        stats.bytes_in += packet.size
        self.last_ts = packet.pts
        self.last_frame_at = now = self.clock()
        if self.stalled:
            self._resumed(now)
        if keyframe and self.kind == "video":
            stats.keyframes_in += 1
            if self.keyframes is not None:
                self.keyframes.keyframe_received()
        # Iterate a snapshot: a lagging subscriber's request or a close may edit the list.
        for subscriber in tuple(self._subscribers):
            subscriber._offer(packet, keyframe)

    def _resumed(self, now: float) -> None:
        self.stalled = False
        if self.on_resumed is not None:
            try:
                self.on_resumed(now)
            except Exception:  # never let a listener stop the reader
                logger.exception("%s: on_resumed callback failed", self)

    def _finish(self) -> None:
        if self._ended.is_set():
            return
        self._ended.set()
        if self.keyframes is not None:
            self.keyframes.close()
        for subscriber in tuple(self._subscribers):
            subscriber.close()
        for callback in self._on_ended:
            try:
                callback()
            except Exception:
                logger.exception("%s: on_ended callback failed", self)
