"""The publisher leg: a participant's offer comes in, its tracks become forwarders.

The answer goes back as soon as the publisher connection is set up: telling the room and
offering the new tracks to subscribers (ICE gathering included) happens afterwards in the
router, so one slow subscriber never delays the OR.
"""

from __future__ import annotations

import logging
import uuid

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamTrack

from orbridge.media import aiortc_compat
from orbridge.media.codecs import negotiated_codec, restrict_answer_codec
from orbridge.media.keyframes import KeyframeRequester
from orbridge.media.session import MediaSession, PublishedTrack, RouterContext, description
from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Grant

log = logging.getLogger("orbridge.media")

_PUBLISH_GRANT = {"video": Grant.PUBLISH_VIDEO, "audio": Grant.PUBLISH_AUDIO}
# aiortc stores the offer direction reversed (as seen from here): remote "sendonly" -> "recvonly".
_REMOTE_SENDS = ("recvonly", "sendrecv")


class PublisherLeg:
    def __init__(self, router: RouterContext) -> None:
        self.router = router

    async def publish(
        self, session: MediaSession, sdp: str, sources: dict[str, str]
    ) -> tuple[str, list[PublishedTrack]]:
        """Answer a publisher's offer (first or renegotiation). `sources` maps mid -> source."""
        offer = description(sdp, "offer")
        codec = self.router.config.video_codec
        async with session.publish_lock:
            pc = session.publisher
            fresh = pc is None
            if pc is None:
                pc = session.publisher = self.router._new_publisher_pc()
                pc.on("connectionstatechange", lambda: self.watch(session))
            try:
                await pc.setRemoteDescription(offer)
                # aiortc accepts some lines it cannot write back (a malformed c= address) and
                # fails later, reading the description: read it now, as part of the offer.
                pc.remoteDescription  # noqa: B018
                sending = [
                    t for t in pc.getTransceivers()
                    if t.mid is not None and not t.stopped
                    and aiortc_compat.offer_direction(t) in _REMOTE_SENDS
                ]  # fmt: skip
                self._check_offer(session, sending, sources)
            except DomainError:
                await self._discard(session, pc, fresh)
                raise
            except Exception as exc:
                await self._discard(session, pc, fresh)
                log.info("%s: unusable offer: %s", session.identity, exc)
                raise DomainError("invalid_sdp", "the server cannot use this offer") from None
            try:
                for transceiver in sending:
                    transceiver.direction = "recvonly"
                    if transceiver.mid not in session.published:
                        restrict_answer_codec(
                            transceiver, codec if transceiver.kind == "video" else "opus"
                        )
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:
                await self._discard(session, pc, fresh)
                log.info("%s: cannot answer: %s", session.identity, exc)
                raise DomainError(
                    "codec_unsupported", f"cannot answer: offer {codec} video and Opus audio"
                ) from None
            new = []
            sending_mids = {t.mid for t in sending}
            for mid, track in list(session.published.items()):
                if mid not in sending_mids:  # the client stopped sending it
                    await self.router.end_track(track, "unpublished")
            for transceiver in sending:
                assert transceiver.mid is not None
                if transceiver.mid in session.published:
                    continue
                remote = transceiver.receiver.track
                new.append(self._start_track(session, pc, transceiver, remote, sources))
            return pc.localDescription.sdp, new

    async def _discard(self, session: MediaSession, pc: RTCPeerConnection, fresh: bool) -> None:
        if fresh:
            session.publisher = None
            try:
                await pc.close()
            except Exception:  # a half-applied offer can break aiortc's close: the offer's fault
                log.info("%s: closing a refused publisher connection failed", session.identity,
                         exc_info=True)  # fmt: skip

    def _check_offer(
        self, session: MediaSession, sending: list[RTCRtpTransceiver], sources: dict[str, str]
    ) -> None:
        if not sending:
            raise DomainError("invalid_sdp", "the offer sends no audio or video")
        for transceiver in sending:
            grant = _PUBLISH_GRANT.get(transceiver.kind)
            if grant is None or grant not in session.grants:
                raise DomainError("forbidden", f"you may not publish {transceiver.kind}")
            if transceiver.mid not in session.published and transceiver.mid not in sources:
                raise DomainError(
                    "invalid_payload", f"tracks: no source given for mid {transceiver.mid}"
                )

    def _start_track(
        self,
        session: MediaSession,
        pc: RTCPeerConnection,
        transceiver: RTCRtpTransceiver,
        remote: MediaStreamTrack,
        sources: dict[str, str],
    ) -> PublishedTrack:
        assert transceiver.mid is not None
        router = self.router
        kind = transceiver.kind
        keyframes = (
            KeyframeRequester.for_transceiver(
                pc, transceiver, min_interval=router.config.keyframe_interval
            )
            if kind == "video"
            else None
        )
        codec = negotiated_codec(transceiver) or ""
        source = sources[transceiver.mid]
        forwarder = router._create_forwarder(
            remote, keyframes, codec, f"{session.room}/{session.identity}/{source}"
        )
        track = PublishedTrack(
            id=f"TR_{uuid.uuid4().hex[:12]}", room=session.room, owner=session.identity,
            owner_sid=session.sid, source=source, kind=kind, codec=codec, mid=transceiver.mid,
            forwarder=forwarder, keyframes=keyframes,
        )  # fmt: skip
        session.published[transceiver.mid] = track
        router.register_track(track)
        forwarder.on_ended(
            lambda: router.tasks.spawn(router.end_track(track, "ended"), name=f"end:{track.id}")
        )
        forwarder.start()
        for started in router.track_started:
            try:
                started(track)
            except Exception:  # a failing sink must not fail the publisher
                log.exception("track_started hook failed for %s", track.id)
        log.info("%s publishes %s %s (%s) in %s", session.identity, source, kind, codec,
                 session.room)  # fmt: skip
        return track

    async def unpublish(self, session: MediaSession, track_ids: list[str] | None) -> list[str]:
        mine = {t.id: t for t in session.published.values()}
        wanted = list(mine) if track_ids is None else list(track_ids)
        unknown = [t for t in wanted if t not in mine]
        if unknown:
            raise DomainError("not_found", f"you publish no track {unknown[0]}")
        for track_id in wanted:
            await self.router.end_track(mine[track_id], "unpublished")
        if track_ids is None and session.publisher is not None:
            pc, session.publisher = session.publisher, None
            await pc.close()
        return wanted

    def watch(self, session: MediaSession) -> None:
        """The publisher connection failed or closed: its tracks end."""
        pc = session.publisher
        if pc is not None and pc.connectionState in ("failed", "closed"):
            for track in list(session.published.values()):
                self.router.tasks.spawn(self.router.end_track(track, "connection_lost"),
                                        name=f"end:{track.id}")  # fmt: skip
