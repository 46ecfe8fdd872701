"""Presence: who is in which room, in which role, on which node.

One interface, two backends: `MemoryPresence` (the embedded default, one node)
and `RedisPresence` (rooms/presence_redis.py, many nodes). Every participant
carries a deadline refreshed by its node's heartbeat; a participant whose node
stops refreshing (crash, kill -9, lost network) disappears from reads once the
deadline passes, and exactly one node later claims it with `reap()` so the room
can be told it left. Reads never return an expired participant, so presence
read from any node is right within one TTL.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orbridge.rooms.participant import Participant


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    address: str
    started_at: int  # ms since the epoch
    version: str

    def public(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "started_at": self.started_at,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class RoomSummary:
    room: str
    participants: int
    by_role: dict[str, int]

    def public(self) -> dict[str, Any]:
        return {"room": self.room, "participants": self.participants, "by_role": self.by_role}


@dataclass(frozen=True, slots=True)
class PresenceKey:
    """Names one participant's presence record and the connection that owns it."""

    room: str
    identity: str
    sid: str


def join_order(participant: Participant) -> tuple[int, str]:
    """Participants are listed by join time; ties (same millisecond) by identity."""
    return (participant.joined_at, participant.identity)


def summarize(room: str, members: Sequence[Participant]) -> RoomSummary:
    roles = Counter(p.role.value for p in members)
    return RoomSummary(room=room, participants=len(members), by_role=dict(sorted(roles.items())))


class PresenceStore(ABC):
    """The presence contract both backends satisfy (tests/rooms/test_presence.py runs on both)."""

    def __init__(self, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError("presence TTL must be positive")
        self.ttl_ms = ttl_ms

    backend: str = "abstract"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to the backing service, if any."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backing service answers."""

    @abstractmethod
    async def register_node(self, node: NodeInfo) -> None:
        """Announce (or keep alive) a node for one TTL."""

    @abstractmethod
    async def unregister_node(self, node_id: str) -> None:
        """Remove a node from the registry (clean shutdown)."""

    @abstractmethod
    async def nodes(self) -> list[NodeInfo]:
        """The nodes whose heartbeat is current."""

    async def live_node_ids(self) -> set[str]:
        """The ids of the nodes whose heartbeat is current (a node is dead once its id is
        missing: its crashed recordings may be repaired)."""
        return {node.node_id for node in await self.nodes()}

    @abstractmethod
    async def add(self, participant: Participant) -> Participant | None:
        """Record a participant; return the live record it replaced (same identity), if any."""

    @abstractmethod
    async def remove(self, key: PresenceKey) -> Participant | None:
        """Remove a participant if its record still belongs to `key.sid`; return it."""

    @abstractmethod
    async def replace(self, participant: Participant) -> bool:
        """Overwrite a live record owned by the same sid (an update); False if it is gone."""

    @abstractmethod
    async def refresh(self, keys: Iterable[PresenceKey]) -> list[PresenceKey]:
        """Extend the deadline of live records; return the keys that are no longer present."""

    @abstractmethod
    async def get(self, room: str, identity: str) -> Participant | None:
        """One live participant."""

    @abstractmethod
    async def participants(self, room: str) -> list[Participant]:
        """The live participants of a room, in join order."""

    @abstractmethod
    async def rooms(self) -> list[RoomSummary]:
        """Every room with at least one live participant."""

    @abstractmethod
    async def reap(self) -> list[Participant]:
        """Claim expired participants; each one is returned by exactly one call cluster-wide."""


class MemoryPresence(PresenceStore):
    """In-process presence: the embedded default when no Redis is configured."""

    backend = "memory"

    def __init__(self, ttl_ms: int) -> None:
        super().__init__(ttl_ms)
        # room -> identity -> (participant, deadline in monotonic ms)
        self._rooms: dict[str, dict[str, tuple[Participant, float]]] = {}
        self._nodes: dict[str, tuple[NodeInfo, float]] = {}

    @staticmethod
    def _now() -> float:
        return time.monotonic() * 1000.0

    async def ping(self) -> bool:
        return True

    async def register_node(self, node: NodeInfo) -> None:
        self._nodes[node.node_id] = (node, self._now() + self.ttl_ms)

    async def unregister_node(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    async def nodes(self) -> list[NodeInfo]:
        now = self._now()
        return [n for n, deadline in self._nodes.values() if deadline > now]

    def _live(self, room: str, identity: str) -> Participant | None:
        entry = self._rooms.get(room, {}).get(identity)
        if entry is None or entry[1] <= self._now():
            return None
        return entry[0]

    async def add(self, participant: Participant) -> Participant | None:
        previous = self._live(participant.room, participant.identity)
        members = self._rooms.setdefault(participant.room, {})
        members[participant.identity] = (participant, self._now() + self.ttl_ms)
        return previous

    async def remove(self, key: PresenceKey) -> Participant | None:
        members = self._rooms.get(key.room)
        entry = members.get(key.identity) if members else None
        if members is None or entry is None or entry[0].sid != key.sid:
            return None
        del members[key.identity]
        if not members:
            del self._rooms[key.room]
        return entry[0] if entry[1] > self._now() else None

    async def replace(self, participant: Participant) -> bool:
        current = self._live(participant.room, participant.identity)
        if current is None or current.sid != participant.sid:
            return False
        deadline = self._rooms[participant.room][participant.identity][1]
        self._rooms[participant.room][participant.identity] = (participant, deadline)
        return True

    async def refresh(self, keys: Iterable[PresenceKey]) -> list[PresenceKey]:
        lost: list[PresenceKey] = []
        deadline = self._now() + self.ttl_ms
        for key in keys:
            current = self._live(key.room, key.identity)
            if current is None or current.sid != key.sid:
                lost.append(key)
                continue
            self._rooms[key.room][key.identity] = (current, deadline)
        return lost

    async def get(self, room: str, identity: str) -> Participant | None:
        return self._live(room, identity)

    async def participants(self, room: str) -> list[Participant]:
        now = self._now()
        members = [p for p, deadline in self._rooms.get(room, {}).values() if deadline > now]
        return sorted(members, key=join_order)

    async def rooms(self) -> list[RoomSummary]:
        summaries = []
        for room in sorted(self._rooms):
            members = await self.participants(room)
            if members:
                summaries.append(summarize(room, members))
        return summaries

    async def reap(self) -> list[Participant]:
        now = self._now()
        expired: list[Participant] = []
        for room in list(self._rooms):
            members = self._rooms[room]
            for identity, (participant, deadline) in list(members.items()):
                if deadline <= now:
                    expired.append(participant)
                    del members[identity]
            if not members:
                del self._rooms[room]
        for node_id, (_, deadline) in list(self._nodes.items()):
            if deadline <= now:
                del self._nodes[node_id]
        return expired
