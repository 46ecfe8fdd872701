"""The node's view of its rooms: joins, leaves, updates and the presence heartbeat.

`RoomService` owns the participants connected to this node (and enters them in their Room's
members, `rooms.room.RoomRegistry`), keeps their presence alive, and turns what presence tells
it (expired members elsewhere, records lost during a backend outage, a connection superseded
by a newer one of the same identity) into calls on a `RoomListener`, which the signaling
layer turns into room events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from orbridge.rooms.errors import DomainError, PresenceUnavailable
from orbridge.rooms.participant import Participant
from orbridge.rooms.presence import NodeInfo, PresenceKey, PresenceStore
from orbridge.rooms.room import RoomRegistry

log = logging.getLogger("orbridge.rooms")


class RoomListener(Protocol):
    async def participant_joined(self, participant: Participant) -> None: ...

    async def participant_left(self, participant: Participant, reason: str) -> None: ...

    async def participant_superseded(self, participant: Participant) -> None:
        """Another connection took this identity: close this one (and drop it from `local`)."""
        ...


def key_of(participant: Participant) -> PresenceKey:
    return PresenceKey(participant.room, participant.identity, participant.sid)


class RoomService:
    def __init__(
        self,
        presence: PresenceStore,
        node: NodeInfo,
        heartbeat_interval_s: float,
        listener: RoomListener | None = None,
        registry: RoomRegistry | None = None,
    ) -> None:
        if heartbeat_interval_s * 1000 >= presence.ttl_ms:
            raise ValueError("the heartbeat interval must be shorter than the presence TTL")
        self.presence = presence
        self.node = node
        self._listener = listener
        self.heartbeat_interval_s = heartbeat_interval_s
        self.local: dict[str, Participant] = {}  # sid -> participant on this node
        self.registry = registry if registry is not None else RoomRegistry()
        if self.registry.occupied is None:  # "empty" means empty on every node
            self.registry.occupied = self.occupied
        self._task: asyncio.Task[None] | None = None
        self.presence_healthy = True
        # What a presence outage left undone, settled by the first heartbeat that reaches it:
        # records to rewrite (updates) and records to remove (leaves). Bounded: a record not
        # removed also expires by its TTL.
        self._dirty: set[str] = set()
        self._removals: dict[PresenceKey, None] = {}

    @property
    def listener(self) -> RoomListener:
        if self._listener is None:
            raise RuntimeError("RoomService has no listener; call bind() first")
        return self._listener

    def bind(self, listener: RoomListener) -> None:
        self._listener = listener

    async def start(self) -> None:
        try:
            await self.presence.register_node(self.node)
        except PresenceUnavailable:
            self._presence_state(False, "unreachable at start")  # the heartbeat retries
        self._task = asyncio.create_task(self._heartbeat_loop(), name="presence-heartbeat")

    async def stop(self) -> list[Participant]:
        """Clean shutdown: stop the heartbeat, remove this node's participants and the node."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        removed = []
        for participant in list(self.local.values()):
            self.drop_local(participant.sid)
            with contextlib.suppress(Exception):
                if await self.presence.remove(key_of(participant)) is not None:
                    removed.append(participant)
        with contextlib.suppress(Exception):
            await self.presence.unregister_node(self.node.node_id)
        return removed

    # membership -------------------------------------------------------------
    async def join(self, participant: Participant) -> tuple[list[Participant], Participant | None]:
        """Record a join; return the room's participants (the joiner included) and
        the live record of the same identity this join replaced, if any.

        During a presence outage the join still succeeds on this node: the room's members
        here are returned, and the record is written by the first heartbeat that can."""
        if participant.sid in self.local:
            raise DomainError("already_joined", "this connection has already joined a room")
        try:
            replaced = await self.presence.add(participant)
        except PresenceUnavailable:
            self._presence_state(False, "join")
            replaced = None
        self.local[participant.sid] = participant
        self.registry.add_member(participant)
        # A replaced connection stays in `local` until the listener evicts it.
        return await self.participants(participant.room), replaced

    async def participants(self, room: str) -> list[Participant]:
        """The room's participants on every node; this node's own during a presence outage."""
        try:
            return await self.presence.participants(room)
        except PresenceUnavailable:
            self._presence_state(False, "read")
            return sorted(self.registry.members(room), key=lambda p: (p.joined_at, p.identity))

    async def find(self, room: str, identity: str) -> Participant | None:
        for participant in await self.participants(room):
            if participant.identity == identity:
                return participant
        return None

    async def remove_record(self, participant: Participant) -> Participant | None:
        """Remove a participant's presence record (a removal, a consultation ended). During an
        outage a participant of this node is removed here and in presence later."""
        try:
            return await self.presence.remove(key_of(participant))
        except PresenceUnavailable:
            if participant.sid not in self.local:
                raise  # on another node: only presence can reach it
            self._presence_state(False, "remove")
            self._forget_later(key_of(participant))
            return participant

    async def leave(self, sid: str) -> Participant | None:
        participant = self.drop_local(sid)
        if participant is None:
            return None
        try:
            await self.presence.remove(key_of(participant))
        except PresenceUnavailable:
            self._presence_state(False, "leave")
            self._forget_later(key_of(participant))
        return participant

    def _forget_later(self, key: PresenceKey) -> None:
        self._dirty.discard(key.sid)
        if len(self._removals) >= 10_000:  # the oldest expire by their TTL anyway
            self._removals.pop(next(iter(self._removals)))
        self._removals[key] = None

    def drop_local(self, sid: str) -> Participant | None:
        """Forget a connection of this node (its presence record is the caller's business)."""
        participant = self.local.pop(sid, None)
        if participant is not None:
            self.registry.remove_member(participant.room, sid)
        return participant

    def participant(self, sid: str) -> Participant | None:
        return self.local.get(sid)

    def members(self, room: str) -> list[Participant]:
        """The room's participants connected to this node (O(room))."""
        return self.registry.members(room)

    async def occupied(self, room: str) -> bool:
        """Whether anyone is in the room on any node (presence), for the empty timeout. Not
        knowing (an outage) counts as occupied: a consultation is never closed for that."""
        if self.registry.members(room):
            return True
        try:
            return bool(await self.presence.participants(room))
        except PresenceUnavailable:
            return True

    async def update(self, sid: str, **changes: Any) -> Participant:
        current = self.local.get(sid)
        if current is None:
            raise DomainError("not_joined", "join a room first")
        updated = current.with_changes(**changes)
        try:
            if not await self.presence.replace(updated):
                raise DomainError("not_found", "your presence record is gone; reconnect")
        except PresenceUnavailable:
            self._presence_state(False, "update")
            self._dirty.add(sid)  # rewritten by the first heartbeat that reaches presence
        self.local[sid] = updated
        self.registry.update_member(updated)
        return updated

    # heartbeat ----------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            try:
                await self.heartbeat()
                self._presence_state(True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive a backend outage
                self._presence_state(False, str(exc))

    def _presence_state(self, healthy: bool, why: str = "") -> None:
        """One log line per change, not one per failed call."""
        if healthy == self.presence_healthy:
            return
        self.presence_healthy = healthy
        if healthy:
            log.warning("presence backend reachable again: records re-asserted")
        else:
            log.error("presence backend unavailable (%s): rooms go on with this node's "
                      "participants; records are re-asserted when it returns", why)  # fmt: skip

    async def heartbeat(self) -> None:
        """Keep this node and its participants alive; settle what presence lost."""
        await self.presence.register_node(self.node)
        for key in list(self._removals):
            await self.presence.remove(key)
            self._removals.pop(key, None)
        for sid in list(self._dirty):
            if sid in self.local:
                await self.presence.replace(self.local[sid])
            self._dirty.discard(sid)
        lost = await self.presence.refresh(key_of(p) for p in list(self.local.values()))
        for key in lost:
            participant = self.local.get(key.sid)
            if participant is None:
                continue
            holder = await self.presence.get(key.room, key.identity)
            if holder is None:
                # Expired while the backend was unreachable: the connection is still here.
                await self.presence.add(participant)
                self.registry.add_member(participant)
                await self.listener.participant_joined(participant)
            elif holder.sid != key.sid:
                await self.listener.participant_superseded(participant)
        for participant in await self.presence.reap():
            if participant.sid in self.local:
                # Our own record expired (the loop was starved): restore it.
                await self.presence.add(self.local[participant.sid])
                await self.listener.participant_joined(self.local[participant.sid])
                continue
            log.info(
                "participant %s of room %s timed out (node %s)",
                participant.identity,
                participant.room,
                participant.node,
            )
            await self.listener.participant_left(participant, "timeout")
