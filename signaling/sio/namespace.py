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
from orbridge.rooms.sanctions import Sanctions, now_ms
from orbridge.rooms.service import RoomService
from orbridge.rooms.tasks import Tasks
from orbridge.signaling.audit import AuditLog
from orbridge.signaling.json_body import MAX_DEPTH
from orbridge.signaling.metrics import Metrics
from orbridge.signaling.settings import Settings
from orbridge.signaling.sio import schemas
from orbridge.signaling.sio.gate import Ack, EventSpec, fail, ok, parse
from orbridge.signaling.sio.packet import TOO_DEEP

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
        sanctions: Sanctions | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        super().__init__(namespace)
        self.settings = settings
        self.secret = secret
        self.rooms = rooms
        self.metrics = metrics
        self.sanctions = sanctions or Sanctions()
        self.audit = audit or AuditLog.disabled()
        self.addresses: dict[str, str | None] = {}  # sid -> the client's address (audit)
        self._expiry_task: asyncio.Task[None] | None = None
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
                "refresh_token", schemas.Empty, self.on_refresh_token_event, needs_join=False
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

    def start(self) -> None:
        """Start enforcing token expiry on live connections."""
        self._expiry_task = self.tasks.spawn(self._expiry_loop(), name="token-expiry")

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
        if event == TOO_DEEP:
            self.metrics.errors.labels("invalid_payload").inc()
            return fail("invalid_payload", f"the payload nests deeper than {MAX_DEPTH} levels")
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
            if claims.expired():
                raise DomainError("token_expired", "your token has expired; join again")
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
        request = environ.get("aiohttp.request") if isinstance(environ, dict) else None
        address = self.audit.client_address(request)
        claims: tokens.Claims | None = None
        try:
            if wanted_room is not None and not isinstance(wanted_room, str):
                raise DomainError("invalid_payload", "auth.room must be a string")
            claims = tokens.verify(
                self.secret, token, room=wanted_room, max_ttl_s=self.settings.max_token_ttl
            )
            if claims.library:
                raise DomainError("token_invalid", "a library token cannot join a room")
            await self._check_sanctions(claims)
        except DomainError as exc:
            self.metrics.errors.labels(exc.code).inc()
            log.info("connection refused: %s", exc.code)
            self._audit_refused(exc.code, claims, token, wanted_room, address)
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.as_dict()) from None
        self.addresses[sid] = address
        self.claims[sid] = claims
        self.buckets[sid] = TokenBucket(self.settings.event_rate, self.settings.event_burst)
        self.metrics.connections.set(len(self.claims))

    async def _disconnect(self, sid: str, reason: str) -> None:
        self.claims.pop(sid, None)
        self.buckets.pop(sid, None)
        self.metrics.connections.set(len(self.claims))
        self.addresses.pop(sid, None)
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
        self.audit.append("left", identity=participant.identity, role=participant.role.value,
                          room=participant.room, reason=reason)  # fmt: skip
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
        try:
            return await self._join(sid, claims, message)
        except DomainError as exc:
            self._audit_refused(exc.code, claims, None, claims.room, self.addresses.get(sid))
            raise

    async def _join(self, sid: str, claims: tokens.Claims, message: schemas.Join
                    ) -> dict[str, Any]:  # fmt: skip
        await self._check_sanctions(claims)  # a ban made since this connection connected
        present = await self.rooms.find(claims.room, claims.identity)
        if present is not None and present.sid != sid and present.token_id != claims.jti:
            # Only the session's own (latest) token takes a connected identity over: a copy of
            # its join link may not kick out the surgeon it was sent to.
            raise DomainError(
                "duplicate_identity",
                f"{claims.identity} is already in the room from another session; if that was"
                " you, wait a few seconds and try again",
            )
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
            token_id=claims.jti,
            token_chain=claims.chain,
        )
        members, replaced = await self.rooms.join(participant)
        if replaced is not None:
            await self._evict(replaced, "duplicate_identity")
        await self.enter_room(sid, sio_room(claims.room))
        await self._joined(participant)
        await self.participant_joined(participant, skip_sid=sid)
        log.info("%s (%s) joined room %s", claims.identity, claims.role.value, claims.room)
        self.audit.append("join", identity=claims.identity, name=claims.name,
                          role=claims.role.value, room=claims.room, address=self.addresses.get(sid),
                          token_id=claims.jti, transport=participant.transport)  # fmt: skip
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
        now = now_ms()
        # The session's tokens die with it (the longest a token of its chain can live).
        await self.sanctions.revoke(removed.token_chain, now + self.settings.max_token_ttl * 1000)
        until = None
        if message.ban_s != 0:
            # None: the rest of the consultation (the bans end when the room closes)
            until = now + (message.ban_s or schemas.MAX_BAN_S) * 1000
            await self.sanctions.ban(me.room, removed.identity, until)
        await self._evict(removed, "removed", by=me.identity, note=message.reason)
        await self.participant_left(removed, "removed")
        log.info("%s removed %s from room %s (banned until %s)", me.identity, removed.identity,
                 me.room, until)  # fmt: skip
        self.audit.append("participant_removed", room=me.room, identity=removed.identity,
                          role=removed.role.value, by=me.identity, by_role=me.role.value,
                          address=self.addresses.get(sid), banned_until=until,
                          ban_s=message.ban_s, reason=message.reason)  # fmt: skip
        return {"identity": removed.identity, "banned_until": until}

    async def on_refresh_token_event(self, sid: str, message: schemas.Empty) -> dict[str, Any]:
        claims = self.claims[sid]
        await self._check_sanctions(claims)
        token = tokens.refresh(self.secret, claims, self.settings.max_token_ttl)
        fresh = tokens.verify(self.secret, token, max_ttl_s=self.settings.max_token_ttl)
        self.claims[sid] = fresh
        if self.rooms.participant(sid) is not None:
            await self.rooms.update(sid, token_id=fresh.jti)
        log.info("%s refreshed its token (room %s)", claims.identity, claims.room)
        self.audit.append("token_refreshed", identity=claims.identity, role=claims.role.value,
                          room=claims.room, address=self.addresses.get(sid),
                          token_id=fresh.jti, previous_token_id=claims.jti, chain=fresh.chain,
                          expires_at=fresh.expires_at)  # fmt: skip
        return {"token": token, "expires_at": fresh.expires_at,
                "server_time": int(time.time() * 1000)}  # fmt: skip

    async def _check_sanctions(self, claims: tokens.Claims) -> None:
        if await self.sanctions.revoked(claims.chain):
            raise DomainError("token_revoked", "this token was revoked; ask for a new one")
        until = await self.sanctions.banned_until(claims.room, claims.identity)
        if until is not None:
            raise DomainError(
                "banned",
                f"you were removed from room {claims.room} and may not rejoin before "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(until / 1000))}",
            )

    async def _expiry_loop(self) -> None:
        # A token's expiry holds on a live connection too (refresh_token extends it).
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for sid, claims in list(self.claims.items()):
                if claims.expired(now):
                    try:
                        await self._expire(sid, claims)
                    except Exception:
                        log.exception("could not close %s's expired connection", claims.identity)

    async def _expire(self, sid: str, claims: tokens.Claims) -> None:
        log.info("%s's token expired (room %s): closing its connection", claims.identity,
                 claims.room)  # fmt: skip
        self.claims.pop(sid, None)  # no more events from it, whatever comes next
        participant = self.rooms.participant(sid)
        if participant is None:
            await self.emit("removed", {"reason": "token_expired"}, to=sid)
            self.tasks.spawn(self._close_soon(sid), name=f"close:{sid}")
            return
        try:
            removed = await self.rooms.remove_record(participant)
        except Exception as exc:  # presence outage: the record expires by itself
            log.warning("could not remove %s from presence: %s", participant.identity, exc)
            removed = None
        await self._evict(participant, "token_expired")
        if removed is not None:
            await self.participant_left(removed, "token_expired")

    async def on_end_consultation_event(self, sid: str, message: schemas.Empty
                                        ) -> dict[str, Any]:  # fmt: skip
        me = self.me(sid)
        ended_ms = await self.rooms.registry.end(me.room, me.identity)
        log.info("%s ended the consultation in room %s", me.identity, me.room)
        self.audit.append("consultation_ended", room=me.room, by=me.identity,
                          by_role=me.role.value, address=self.addresses.get(sid))  # fmt: skip
        return {"room": me.room, "ended_ms": ended_ms}

    async def _room_closed(self, room: Room, reason: str, by: str) -> None:
        """A consultation ended: its bans end too; its members here are told, then removed."""
        await self.sanctions.clear_room(room.name)
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
    def _audit_refused(self, code: str, claims: tokens.Claims | None, token: Any,
                       room: Any, address: str | None) -> None:  # fmt: skip
        """A refused connection or join in the audit trail: who (from its token, when that is
        ours: an expired token still names its holder; a forged one names no one)."""
        who: dict[str, Any]
        if claims is not None:
            who = {"identity": claims.identity, "role": claims.role.value, "room": claims.room,
                   "token_id": claims.jti}  # fmt: skip
        else:
            who = tokens.signed_subject(self.secret, token) or {}
            who = {"identity": who.get("identity"), "role": who.get("role"),
                   "room": who.get("room") or (room if isinstance(room, str) else None),
                   "token_id": who.get("jti")}  # fmt: skip
        self.audit.append("join_refused", code=code, **who, address=address)

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
        if self._expiry_task is not None:
            self._expiry_task.cancel()
        sids = list(self.claims)
        for sid in sids:
            await self.emit("server_shutdown", {"reason": "server_shutdown"}, to=sid)
        for hook in self.shutdown_hooks:
            await hook()
        for participant in await self.rooms.stop():
            await self.participant_left(participant, "server_shutdown")
        for sid in sids:
            await self.disconnect(sid)
