"""The subscriber leg: the server offers a participant every track it may receive.

One offer is outstanding per subscriber connection at a time; what changes meanwhile is
offered in the next one. A client that never answers gets a fresh connection and a new offer
after `answer_timeout` (aiortc cannot roll an offer back).
"""

from __future__ import annotations

import asyncio
import logging

from orbridge.media.session import (
    MediaSession,
    PublishedTrack,
    RouterContext,
    Subscription,
    description,
)
from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Grant

log = logging.getLogger("orbridge.media")

_SUBSCRIBE_GRANT = {"video": Grant.SUBSCRIBE_VIDEO, "audio": Grant.SUBSCRIBE_AUDIO}


class SubscriberLeg:
    def __init__(self, router: RouterContext) -> None:
        self.router = router

    def subscribe(self, session: MediaSession) -> list[PublishedTrack]:
        """The client is ready to receive: offer it every track it may see, now and later."""
        session.wants_media = True
        tracks = [t for t in self.router.tracks(session.room) if self.may_receive(session, t)]
        added = [self.add(session, t) for t in tracks]
        if any(added):
            self.negotiate_soon(session)
        return tracks

    def may_receive(self, session: MediaSession, track: PublishedTrack) -> bool:
        grant = _SUBSCRIBE_GRANT.get(track.kind)
        return (
            session.wants_media
            and track.owner_sid != session.sid
            and grant is not None
            and grant in session.grants
        )

    def add(self, session: MediaSession, track: PublishedTrack) -> bool:
        """Add `track` to the session's subscriber connection (offered by the next offer)."""
        if track.id in session.subscriptions or track.forwarder.ended:
            return False
        if session.subscriber is None:
            session.subscriber = self.router._new_pc()
        transceiver, sender_track = self.router._add_sender(
            session.subscriber, track, f"{session.identity}<-{track.id}"
        )
        session.subscriptions[track.id] = Subscription(track, transceiver, sender_track)
        return True

    def drop(self, session: MediaSession, track: PublishedTrack) -> bool:
        """The track ended: stop sending it (the next offer marks it inactive)."""
        sub = session.subscriptions.pop(track.id, None)
        if sub is None:
            return False
        sub.sender_track.stop()
        sub.transceiver.direction = "inactive"
        return True

    def negotiate_soon(self, session: MediaSession) -> None:
        self.router.tasks.spawn(self.negotiate(session), name=f"offer:{session.identity}")

    async def negotiate(self, session: MediaSession) -> None:
        """Send the subscriber connection's next offer (one outstanding at a time)."""
        async with session.subscribe_lock:
            pc = session.subscriber
            if pc is None or session.sid not in self.router.sessions:
                return
            if session.awaiting_answer:
                session.renegotiate = True
                return
            session.renegotiate = False
            await pc.setLocalDescription(await pc.createOffer())
            session.awaiting_answer = True
            mids = [
                {"mid": sub.transceiver.mid, "track": sub.track.public()}
                for sub in session.subscriptions.values()
            ]
            sdp = pc.localDescription.sdp
            session.answer_timer = asyncio.get_running_loop().call_later(
                self.router.config.answer_timeout, self._answer_overdue, session
            )
        await self.router.signals.send(session.sid, "subscriber_offer",
                                       {"sdp": sdp, "tracks": mids})  # fmt: skip

    def _answer_overdue(self, session: MediaSession) -> None:
        log.warning("%s did not answer its subscriber offer; offering again", session.identity)
        session.awaiting_answer = False
        pc = session.subscriber
        if pc is not None and pc.signalingState == "have-local-offer":
            # Roll back is not supported by aiortc: start over with a fresh connection.
            session.subscriber = None
            old = list(session.subscriptions.values())
            session.subscriptions.clear()
            for sub in old:
                sub.sender_track.stop()
            self.router.tasks.spawn(pc.close(), name=f"close-pc:{session.identity}")
            for sub in old:
                self.add(session, sub.track)
        self.negotiate_soon(session)

    async def answer(self, session: MediaSession, sdp: str) -> None:
        pc = session.subscriber
        if pc is None or not session.awaiting_answer:
            raise DomainError("unexpected_answer", "there is no subscriber offer to answer")
        answer = description(sdp, "answer")
        async with session.subscribe_lock:
            try:
                await pc.setRemoteDescription(answer)
            except Exception as exc:
                log.info("%s: unusable subscriber answer: %s", session.identity, exc)
                raise DomainError("invalid_sdp", "the server cannot use this answer") from None
            session.awaiting_answer = False
            if session.answer_timer is not None:
                session.answer_timer.cancel()
                session.answer_timer = None
        if session.renegotiate:
            await self.negotiate(session)
