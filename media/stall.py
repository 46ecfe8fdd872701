"""Stalled tracks: the publisher's connection is up, but its media stopped.

A hung OR laptop keeps its sockets open (no FIN): ICE consent outlives it by up to 30 s
(aioice: 6 failed checks 5 s apart), Socket.IO by 9 s. The experts' picture froze the moment
its frames stopped, and the room must be told then.

The forwarding path pays one clock read and one flag test per frame
(`TrackForwarder.last_frame_at`, `.stalled`); everything else happens here, in one periodic
check per node (every 250 ms at most, O(published tracks), nothing awaited):

* a track is **stalled** when it brought no frame for `timeout` seconds while its publisher
  connection is `connected` and its forwarder reads it. A track that never brought a frame
  counts from its publish, or from its connection coming up if that is later (ICE and DTLS
  take their time, and waiting for them is not a stall);
* it **resumes** at its first frame after that: the forwarder calls back on that very frame,
  not at the next check;
* each transition is told once, in order: `track_stalled`, then `track_resumed`. A stalled
  track that ends gets `track_ended` and no `track_resumed`.

Audio is judged like video: Opus from aiortc, Chromium and Firefox keeps sending a packet
every 20 ms through silence and a disabled (muted, push-to-talk) track, because discontinuous
transmission (DTX) is only used when the receiver's SDP asks for it (`usedtx=1`), and the
server's answer never does. A publisher that still used DTX would be told stalled in silence.

A check that comes late (the event loop was busy for more than two intervals) judges nothing,
as frames may be waiting in queues for the loop; the next check judges, late or not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from orbridge.media.session import PublishedTrack, Stall

log = logging.getLogger("orbridge.media")

__all__ = ["StallWatch", "check_interval"]

Emit = Callable[[PublishedTrack, str, dict[str, Any]], None]


def check_interval(timeout: float) -> float:
    """How often the watch looks: a quarter of the timeout, within 50-250 ms."""
    return max(0.05, min(0.25, timeout / 4))


class StallWatch:
    """Judges this node's published tracks; `emit(track, event, payload)` tells their room.

    :param tracks: the live published tracks (called at every check).
    :param is_up: whether a track's publisher connection is up (``connected``).
    :param clock: monotonic seconds, the forwarders' clock; ``wall``: epoch seconds.
    """

    def __init__(
        self,
        timeout: float,
        *,
        tracks: Callable[[], list[PublishedTrack]],
        is_up: Callable[[PublishedTrack], bool],
        emit: Emit,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        interval: float | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("the stall timeout must be positive")
        self.timeout = timeout
        self.interval = check_interval(timeout) if interval is None else interval
        self.tracks = tracks
        self.is_up = is_up
        self.emit = emit
        self.clock = clock
        self.wall = wall
        self.stalls = 0  # tracks declared stalled, ever
        self.resumes = 0
        self.late_checks = 0  # checks skipped because the event loop was late

    def watch(self, track: PublishedTrack) -> None:
        """Follow a newly published track (its forwarder calls back on resuming)."""
        track.forwarder.on_resumed = lambda now: self._resumed(track, now)

    def check(self) -> int:
        """One pass over the tracks; returns how many were declared stalled now."""
        now = self.clock()
        declared = 0
        for track in self.tracks():
            forwarder = track.forwarder
            if forwarder.stalled or not forwarder.reading:
                continue
            if not self.is_up(track):
                if not forwarder.stats.frames_in:  # still connecting: not a stall yet
                    forwarder.last_frame_at = max(forwarder.last_frame_at, now)
                continue
            if now - forwarder.last_frame_at > self.timeout:
                self._stalled(track, now)
                declared += 1
        return declared

    def state(self, track: PublishedTrack) -> dict[str, Any]:
        """`stalled` and `last_frame_ms` of a track, as the snapshot shows them."""
        if track.stall is not None:
            return {"stalled": True, "last_frame_ms": track.stall.last_frame_ms}
        forwarder = track.forwarder
        last_ms = None
        if forwarder.stats.frames_in:
            last_ms = self._wall_ms() - round((self.clock() - forwarder.last_frame_at) * 1000)
        return {"stalled": False, "last_frame_ms": last_ms}

    async def run(self) -> None:
        """Check every `interval` while this node has published tracks; then return."""
        last = self.clock()
        skipped = False
        while True:
            await asyncio.sleep(self.interval)
            now = self.clock()
            late, last = now - last > 2 * self.interval, now
            if not self.tracks():
                return
            if late and not skipped:  # once: a loop that is always late is still judged
                self.late_checks += 1
                skipped = True
                continue
            skipped = False
            try:
                self.check()
            except Exception:  # a bug here must not end the watch for the whole node
                log.exception("stall check failed")

    # transitions -------------------------------------------------------------------
    def _wall_ms(self) -> int:
        return round(self.wall() * 1000)

    def _stalled(self, track: PublishedTrack, now: float) -> None:
        forwarder = track.forwarder
        since = forwarder.last_frame_at
        stalled_ms = self._wall_ms()
        silent_ms = round((now - since) * 1000)
        last_ms = stalled_ms - silent_ms if forwarder.stats.frames_in else None
        track.stall = Stall(since=since, last_frame_ms=last_ms, stalled_ms=stalled_ms)
        forwarder.stalled = True
        self.stalls += 1
        log.warning("track %s (%s %s of %s in %s) stalled: no frame for %d ms", track.id,
                    track.source, track.kind, track.owner, track.room, silent_ms)  # fmt: skip
        payload = {"track": track.public(), "last_frame_ms": last_ms, "stalled_ms": stalled_ms}
        self.emit(track, "track_stalled", payload)

    def _resumed(self, track: PublishedTrack, now: float) -> None:
        stall, track.stall = track.stall, None
        if stall is None:
            return
        frame_ms = self._wall_ms()
        gap_ms = round((now - stall.since) * 1000)
        self.resumes += 1
        log.info("track %s (%s of %s in %s) resumed after %d ms", track.id, track.source,
                 track.owner, track.room, gap_ms)  # fmt: skip
        payload = {"track": track.public(), "last_frame_ms": frame_ms, "stalled_for_ms": gap_ms}
        self.emit(track, "track_resumed", payload)
