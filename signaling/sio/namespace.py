"""The Socket.IO namespace every client speaks (docs/protocol.md).

Handlers stay thin: the gate in `trigger_event` validates, checks grants and the
rate limit; handlers call the domain (`RoomService`) and return the ack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from orbridge.rooms import tokens
from orbridge.rooms.errors import DomainError
from orbridge.rooms.participant import Participant
from orbridge.rooms.ratelimit import TokenBucket
from orbridge.rooms.roles import Grant
from orbridge.rooms.room import Room
from orbridge.rooms.service import RoomService
from orbridge.rooms.tasks import Tasks
from orbridge.signaling.metrics import Metrics
from orbridge.signaling.settings import Settings
from orbridge.signaling.sio import schemas
from orbridge.signaling.sio.gate import Ack, EventSpec, fail, ok, parse

log = logging.getLogger("orbridge.signaling")


# Life-cycle names of Socket.IO and Engine.IO (server and client side). As event names sent by a
# client they would reach `trigger_event` exactly like the real life-cycle calls, so they are
# refused, whatever their payload (docs/protocol.md, "Reserved event names").
RESERVED_EVENTS = frozenset({
    "connect", "connect_error", "disconnect", "disconnecting",
    "newListener", "removeListener",
    "open", "close", "error", "message", "ping", "pong", "upgrade", "upgradeError",
    "packet", "packetCreate", "flush", "drain", "heartbeat", "reconnect", "reconnect_attempt",
    "reconnect_error", "reconnect_failed",
})  # fmt: skip


def sio_room(room: str) -> str:
    """The Socket.IO room of a consultation room (kept apart from sids and other rooms)."""
    return f"room:{room}"


class RoomNamespace(socketio.AsyncNamespace):
    def __init__(
        self,
        settings: Settings,
        secret: str,
        rooms: RoomService,
        metrics: Metrics,
        namespace: str = "/",
    ) -> None:
        super().__init__(namespace)
        self.settings = settings
        self.secret = secret
        self.rooms = rooms
        self.metrics = metrics
        self.claims: dict[str, tokens.Claims] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.events: dict[str, EventSpec] = {}
        self.tasks = Tasks("signaling", log)
        # Capabilities (media, vitals, ...) hook into the room's life cycle here.
        self.join_hooks: list[Callable[[Participant], Awaitable[None]]] = []
        self.leave_hooks: list[Callable[[Participant, str], Awaitable[None]]] = []
        self.snapshot_parts: list[Callable[[Participant], dict[str, Any]]] = []
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        # Told of every presence change this node announces: ("joined" | "left" | "updated",
        # participant, reason). The recording's event log listens here.
        self.presence_hooks: list[Callable[[str, Participant, str], None]] = []
        for spec in (
            EventSpec("join", schemas.Join, self.on_join_event, needs_join=False),
            EventSpec("leave", schemas.Empty, self.on_leave_event),
            EventSpec("update", schemas.Update, self.on_update_event, max_bytes=8 * 1024),
            EventSpec("snapshot", schemas.Empty, self.on_snapshot_event),
            EventSpec(
                "remove_participant",
                schemas.RemoveParticipant,
                self.on_remove_participant_event,
                grant=Grant.REMOVE_PARTICIPANTS,
            ),
            EventSpec(
                "end_consultation",
                schemas.Empty,
                self.on_end_consultation_event,
                grant=Grant.END_CONSULTATION,
            ),
        ):
            self.register(spec)
        rooms.registry.close_hooks.append(self._room_closed)

    def register(self, spec: EventSpec) -> None:
        """Add an event to the table (later capabilities register theirs here)."""
        if spec.name in self.events or spec.name in ("connect", "disconnect"):
            raise ValueError(f"event {spec.name} is already registered")
        self.events[spec.name] = spec

    # dispatch -------------------------------------------------------------------
    async def trigger_event(self, event: str, *args: Any) -> Any:
        # python-socketio calls this for the life cycle and for every client EVENT packet alike.
        # It dispatches a client's events only while the connection is fully connected, and
        # calls connect and disconnect only while it is not (pending), so that state tells them
        # apart: a client cannot replay `connect` with another token or fake a `disconnect`.
        sid = args[0] if args else ""
        lifecycle = not self.server.manager.is_connected(sid, self.namespace)
        if event == "connect" and lifecycle and sid not in self.claims:
            environ, auth = (*args[1:], None, None)[:2]
            return await self._connect(sid, environ, auth)
        if event == "disconnect" and lifecycle:
            reason = args[1] if len(args) > 1 else "unknown"
            return await self._disconnect(sid, reason)
        if event in RESERVED_EVENTS:
            self.metrics.events.labels("unknown").inc()
            self.metrics.errors.labels("unknown_event").inc()
            log.warning("refused a client event with the reserved name %r from %s", event, sid)
            return fail("unknown_event", f"{event!r} is a reserved name, not an event")
        return await self._dispatch(str(event), sid, args[1:])

    async def _dispatch(self, event: str, sid: str, payload: tuple[Any, ...]) -> Ack:
        spec = self.events.get(event)
        self.metrics.events.labels(event if spec else "unknown").inc()
        try:
            if spec is None:
                raise DomainError("unknown_event", f"there is no event named {event[:64]!r}")
            claims = self.claims.get(sid)
            if claims is None:  # only possible if the connection is being torn down
                raise DomainError("not_connected", "the connection is closing")
            bucket = self.buckets[sid]
            if not bucket.take():
                raise DomainError("rate_limited", "too many events; slow down")
            if spec.needs_join and self.rooms.participant(sid) is None:
                raise DomainError("not_joined", "join the room first")
            if spec.grant is not None and not claims.allows(spec.grant):
                raise DomainError(
                    "forbidden", f"a {claims.role.value} may not {event} (needs {spec.grant.value})"
                )
            message = parse(spec, payload, self.settings.max_event_bytes)
            return ok(await spec.handler(sid, message))
        except DomainError as exc:
            self.metrics.errors.labels(exc.code).inc()
            return fail(exc.code, exc.message)
        except Exception:
            log.exception("event %s from %s failed", event[:64], sid)
            self.metrics.errors.labels("internal_error").inc()
            return fail("internal_error", "the server could not handle this event")

    # connection -------------------------------------------------------------------
    async def _connect(self, sid: str, environ: Any, auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        wanted_room = auth.get("room") if isinstance(auth, dict) else None
        try:
            if wanted_room is not None and not isinstance(wanted_room, str):
                raise DomainError("invalid_payload", "auth.room must be a string")
            claims = tokens.verify(self.secret, token, room=wanted_room)
            if claims.library:
                raise DomainError("token_invalid", "a library token cannot join a room")
        except DomainError as exc:
            self.metrics.errors.labels(exc.code).inc()
            log.info("connection refused: %s", exc.code)
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.as_dict()) from None
        self.claims[sid] = claims
        self.buckets[sid] = TokenBucket(self.settings.event_rate, self.settings.event_burst)
        self.metrics.connections.set(len(self.claims))

    async def _disconnect(self, sid: str, reason: str) -> None:
        self.claims.pop(sid, None)
        self.buckets.pop(sid, None)
        self.metrics.connections.set(len(self.claims))
        local = self.rooms.participant(sid)
        if local is not None:
            await self._left(local, "disconnected")
        try:
            participant = await self.rooms.leave(sid)
        except Exception as exc:  # presence outage: the record will expire on its own
            log.warning("could not remove %s from presence: %s", sid, exc)
            return
        if participant is not None:
            await self.participant_left(participant, "disconnected")

    async def _left(self, participant: Participant, reason: str) -> None:
        """A connection of this node is no longer in its room (whatever the reason)."""
        for hook in self.leave_hooks:
            try:
                await hook(participant, reason)
            except Exception:
                log.exception("leave hook failed for %s", participant.identity)

    async def _joined(self, participant: Participant) -> None:
        """A connection of this node entered its room: capabilities set up (each guarded)."""
        for hook in self.join_hooks:
            try:
                await hook(participant)
            except Exception:  # a capability that fails must not fail the join
                log.exception("join hook failed for %s", participant.identity)

    def me(self, sid: str) -> Participant:
        """The participant of a connection the gate has checked is joined."""
        me = self.rooms.participant(sid)
        if me is None:  # it left while its event was queued
            raise DomainError("not_joined", "join the room first")
        return me

    # handlers ---------------------------------------------------------------------
    async def on_join_event(self, sid: str, message: schemas.Join) -> dict[str, Any]:
        claims = self.claims[sid]
        participant = Participant(
            room=claims.room,
            identity=claims.identity,
            name=claims.name,
            role=claims.role,
            grants=claims.grants,
            node=self.rooms.node.node_id,
            sid=sid,
            joined_at=int(time.time() * 1000),
            transport=self._transport(sid),
            quality=message.quality,
            attributes=dict(message.attributes),
        )
        members, replaced = await self.rooms.join(participant)
        if replaced is not None:
            await self._evict(replaced, "duplicate_identity")
        await self.enter_room(sid, sio_room(claims.room))
        await self._joined(participant)
        await self.participant_joined(participant, skip_sid=sid)
        log.info("%s (%s) joined room %s", claims.identity, claims.role.value, claims.room)
        return self._snapshot(participant, members)

    async def on_leave_event(self, sid: str, message: schemas.Empty) -> None:
        local = self.rooms.participant(sid)
        if local is not None:
            await self._left(local, "left")
        participant = await self.rooms.leave(sid)
        if participant is None:
            return
        await self.leave_room(sid, sio_room(participant.room))
        await self.participant_left(participant, "left")

    async def on_update_event(self, sid: str, message: schemas.Update) -> dict[str, Any]:
        changes = message.model_dump(exclude_none=True)
        if not changes:
            raise DomainError("invalid_payload", "update: nothing to change")
        updated = await self.rooms.update(sid, **changes)
        self._presence_changed("updated", updated, "")
        await self.emit(
            "participant_updated", {"participant": updated.public()}, room=sio_room(updated.room)
        )
        return {"participant": updated.public()}

    async def on_snapshot_event(self, sid: str, message: schemas.Empty) -> dict[str, Any]:
        me = self.me(sid)
        return self._snapshot(me, await self.rooms.participants(me.room))

    async def on_remove_participant_event(
        self, sid: str, message: schemas.RemoveParticipant
    ) -> dict[str, Any]:
        me = self.me(sid)
        target = await self.rooms.find(me.room, message.identity)
        if target is None:
            raise DomainError("not_found", f"{message.identity} is not in room {me.room}")
        if target.sid == sid:
            raise DomainError("invalid_payload", "use leave to leave the room yourself")
        removed = await self.rooms.remove_record(target)
        if removed is None:  # it left in the meantime
            raise DomainError("not_found", f"{message.identity} is not in room {me.room}")
        await self._evict(removed, "removed", by=me.identity, note=message.reason)
        await self.participant_left(removed, "removed")
        log.info("%s removed %s from room %s", me.identity, removed.identity, me.room)
        return {"identity": removed.identity}

    async def on_end_consultation_event(self, sid: str, message: schemas.Empty
                                        ) -> dict[str, Any]:  # fmt: skip
        me = self.me(sid)
        ended_ms = await self.rooms.registry.end(me.room, me.identity)
        log.info("%s ended the consultation in room %s", me.identity, me.room)
        return {"room": me.room, "ended_ms": ended_ms}

    async def _room_closed(self, room: Room, reason: str, by: str) -> None:
        """A consultation ended: its members here are told, then removed (their media ends)."""
        if reason != "ended":
            return
        notice = {"room": room.name, "by": by, "reason": reason}
        for participant in list(room.members.values()):
            await self.emit("consultation_ended", notice, to=participant.sid)
            try:
                removed = await self.rooms.remove_record(participant)
            except Exception as exc:  # presence outage: the record expires by itself
                log.warning("could not remove %s from presence: %s", participant.identity, exc)
                removed = None
            await self._evict(participant, "consultation_ended", by=by)
            if removed is not None:
                await self.participant_left(removed, "consultation_ended")

    # room events (RoomListener) ----------------------------------------------------
    async def participant_joined(
        self, participant: Participant, skip_sid: str | None = None
    ) -> None:
        self._presence_changed("joined", participant, "")
        await self.emit(
            "participant_joined",
            {"participant": participant.public()},
            room=sio_room(participant.room),
            skip_sid=skip_sid,
        )

    async def participant_left(self, participant: Participant, reason: str) -> None:
        self._presence_changed("left", participant, reason)
        await self.emit(
            "participant_left",
            {"identity": participant.identity, "reason": reason},
            room=sio_room(participant.room),
        )

    async def participant_superseded(self, participant: Participant) -> None:
        await self._evict(participant, "duplicate_identity")

    # helpers ----------------------------------------------------------------------
    def _presence_changed(self, change: str, participant: Participant, reason: str) -> None:
        for hook in self.presence_hooks:
            try:
                hook(change, participant, reason)
            except Exception:
                log.exception("presence hook failed")

    async def _evict(
        self, participant: Participant, reason: str, by: str | None = None, note: str = ""
    ) -> None:
        """Tell a connection (on any node) why it is being closed, then close it."""
        local = self.rooms.drop_local(participant.sid)
        if local is not None:
            await self._left(local, reason)
        notice: dict[str, Any] = {"reason": reason}
        if by:
            notice["by"] = by
        if note:
            notice["message"] = note
        await self.emit("removed", notice, to=participant.sid)
        self.tasks.spawn(self._close_soon(participant.sid), name=f"close:{participant.sid}")

    async def _close_soon(self, sid: str) -> None:
        # Give the notice a moment to be written before the socket closes.
        await asyncio.sleep(0.2)
        await self.disconnect(sid)

    def _transport(self, sid: str) -> str:
        try:
            return str(self.server.transport(sid, namespace=self.namespace))
        except Exception:
            return "unknown"

    def _snapshot(self, me: Participant, members: list[Participant]) -> dict[str, Any]:
        snapshot = {
            "room": me.room,
            "node": self.rooms.node.node_id,
            "self": me.public(),
            "participants": [p.public() for p in members],
            "server_time": int(time.time() * 1000),
        }
        if not self.rooms.presence_healthy:
            snapshot["degraded"] = ["presence"]  # participants: this node's only
        for part in self.snapshot_parts:
            snapshot.update(part(me))
        return snapshot

    async def shutdown(self) -> None:
        """Clean shutdown: tell everyone here, remove their presence, close their sockets."""
        sids = list(self.claims)
        for sid in sids:
            await self.emit("server_shutdown", {"reason": "server_shutdown"}, to=sid)
        for hook in self.shutdown_hooks:
            await hook()
        for participant in await self.rooms.stop():
            await self.participant_left(participant, "server_shutdown")
        for sid in sids:
            await self.disconnect(sid)
