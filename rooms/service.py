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

from orbridge.rooms.errors import DomainError
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

    @property
    def listener(self) -> RoomListener:
        if self._listener is None:
            raise RuntimeError("RoomService has no listener; call bind() first")
        return self._listener

    def bind(self, listener: RoomListener) -> None:
        self._listener = listener

    async def start(self) -> None:
        await self.presence.register_node(self.node)
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
        the live record of the same identity this join replaced, if any."""
        if participant.sid in self.local:
            raise DomainError("already_joined", "this connection has already joined a room")
        replaced = await self.presence.add(participant)
        self.local[participant.sid] = participant
        self.registry.add_member(participant)
        # A replaced connection stays in `local` until the listener evicts it.
        members = await self.presence.participants(participant.room)
        return members, replaced

    async def leave(self, sid: str) -> Participant | None:
        participant = self.drop_local(sid)
        if participant is None:
            return None
        await self.presence.remove(key_of(participant))
        return participant

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
        """Whether anyone is in the room on any node (presence), for the empty timeout."""
        return bool(self.registry.members(room)) or bool(await self.presence.participants(room))

    async def update(self, sid: str, **changes: Any) -> Participant:
        current = self.local.get(sid)
        if current is None:
            raise DomainError("not_joined", "join a room first")
        updated = current.with_changes(**changes)
        if not await self.presence.replace(updated):
            raise DomainError("not_found", "your presence record is gone; reconnect")
        self.local[sid] = updated
        self.registry.update_member(updated)
        return updated

    # heartbeat ----------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            try:
                await self.heartbeat()
                if not self.presence_healthy:
                    log.warning("presence backend reachable again")
                self.presence_healthy = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive a backend outage
                if self.presence_healthy:
                    log.error("presence heartbeat failed: %s", exc)
                self.presence_healthy = False

    async def heartbeat(self) -> None:
        """Keep this node and its participants alive; settle what presence lost."""
        await self.presence.register_node(self.node)
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
