"""Throttled keyframe requests (RTCP PLI) towards a publisher.

Every new subscriber, every lagging subscriber and every subscriber PLI wants a keyframe;
the publisher (a laparoscope encoder on a county uplink) must not be asked more than about
twice a second, because each keyframe is several times the size of a normal frame.

:class:`KeyframeRequester` sends at most one PLI per ``min_interval``. A request that falls
inside the window is *suppressed* and remembered: if no keyframe arrives before the window
ends, one trailing PLI is sent then, so a subscriber that joined just after a keyframe does not
wait for the next natural one (aiortc's VP8 encoder only sends keyframes on request).

The PLI goes out through aiortc's ``RTCRtpReceiver._send_rtcp_pli(media_ssrc)``
(``aiortc_compat.send_pli``: private, but the very call the receiver itself uses on packet
loss). The media SSRC comes from the remote SDP m-section of the transceiver (the first SSRC
of an ``FID`` group, else the first ``a=ssrc``: what aiortc itself registers as the media
SSRC); without signalled SSRCs it falls back to the first SSRC the receiver has seen that is
not a known RTX SSRC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpTransceiver

from orbridge.media import aiortc_compat as compat
from orbridge.rooms.tasks import Tasks

logger = logging.getLogger(__name__)

__all__ = ["KeyframeRequester", "KeyframeStats", "media_ssrc_from_sdp"]

DEFAULT_MIN_INTERVAL = 0.5


def media_ssrc_from_sdp(sdp: str, mid: str | None) -> tuple[int | None, set[int]]:
    """(media SSRC, RTX SSRCs) signalled for the m-section ``mid`` (or the first video one)."""
    description = compat.SessionDescription.parse(sdp)
    for media in description.media:
        if mid is not None and media.rtp.muxId != mid:
            continue
        if mid is None and media.kind != "video":
            continue
        rtx: set[int] = set()
        primary: int | None = None
        for group in media.ssrc_group:
            if group.semantic == "FID" and len(group.items) >= 2:
                primary = primary if primary is not None else int(group.items[0])
                rtx.update(int(x) for x in group.items[1:])
        if primary is None and media.ssrc:
            primary = media.ssrc[0].ssrc
        return primary, rtx
    return None, set()


@dataclass
class KeyframeStats:
    requested: int = 0
    """Calls to :meth:`KeyframeRequester.request`."""
    sent: int = 0
    """PLIs actually sent upstream (immediate + trailing)."""
    suppressed: int = 0
    """Requests absorbed by the throttle."""
    trailing_sent: int = 0
    """PLIs sent at the end of a window because a suppressed request had no keyframe yet."""
    no_ssrc: int = 0
    """Requests that could not be sent because the media SSRC is not known yet."""
    keyframes_seen: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


class KeyframeRequester:
    """Sends throttled PLIs on one publisher receiver. Use from the event loop only."""

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        *,
        media_ssrc: int | None = None,
        rtx_ssrcs: set[int] | None = None,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._receiver = receiver
        self._media_ssrc = media_ssrc
        self._rtx_ssrcs = set(rtx_ssrcs or ())
        self.min_interval = min_interval
        self._clock = clock
        self._last_sent: float | None = None
        self._pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks = Tasks("keyframes", logger)
        self._closed = False
        self.stats = KeyframeStats()

    @classmethod
    def for_transceiver(
        cls,
        pc: RTCPeerConnection,
        transceiver: RTCRtpTransceiver,
        *,
        min_interval: float = DEFAULT_MIN_INTERVAL,
    ) -> KeyframeRequester:
        """Requester for the publisher track received on ``transceiver``.

        Call after ``setRemoteDescription`` so the SSRC can be read from the remote SDP.
        """
        ssrc: int | None = None
        rtx: set[int] = set()
        if pc.remoteDescription is not None:
            ssrc, rtx = media_ssrc_from_sdp(pc.remoteDescription.sdp, transceiver.mid)
        return cls(transceiver.receiver, media_ssrc=ssrc, rtx_ssrcs=rtx, min_interval=min_interval)

    @property
    def media_ssrc(self) -> int | None:
        if self._media_ssrc is None:
            # Unsignalled SSRCs: the first source seen carries media (RTX only follows losses).
            for source in self._receiver.getSynchronizationSources():
                if source.source not in self._rtx_ssrcs:
                    self._media_ssrc = source.source
                    break
        return self._media_ssrc

    def request(self, reason: str = "") -> bool:
        """Ask for a keyframe. True if a PLI was sent now, False if throttled (or no SSRC)."""
        self.stats.requested += 1
        if self._closed:
            return False
        now = self._clock()
        if self._last_sent is not None and now - self._last_sent < self.min_interval:
            self.stats.suppressed += 1
            if not self._pending:
                self._pending = True
                delay = self.min_interval - (now - self._last_sent)
                self._timer = asyncio.get_running_loop().call_later(delay, self._flush)
            logger.debug("keyframe request suppressed (%s)", reason)
            return False
        return self._send(reason)

    def keyframe_received(self) -> None:
        """A keyframe went through: it serves every request made so far."""
        self.stats.keyframes_seen += 1
        self._pending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._closed = True
        self._pending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self._timer = None
        if self._pending and not self._closed:
            self._pending = False
            if self._send("trailing"):
                self.stats.trailing_sent += 1

    def _send(self, reason: str) -> bool:
        ssrc = self.media_ssrc
        if ssrc is None:
            self.stats.no_ssrc += 1
            return False
        self._last_sent = self._clock()
        self.stats.sent += 1
        logger.debug("PLI -> ssrc %d (%s)", ssrc, reason)
        self._tasks.spawn(compat.send_pli(self._receiver, ssrc), name=f"pli:{ssrc}")
        return True
