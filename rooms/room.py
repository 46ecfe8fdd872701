"""A Room: what one consultation holds on this node, from its first participant to its end.

A room name (`or-1`) is reused every day; a consultation is one use of it. The `Room` keeps
what belongs to the consultation on this node: its members connected here (an index, so
fan-out is O(room), not O(node)), the annotation overlay, the patient's vitals and alarm
state. `RoomRegistry` opens a Room when anything happens in a room name and closes it when
the consultation is over:

* **ended**: a moderator sent `end_consultation` (every node closes its Room at once);
* **empty**: nobody has been in the room, on any node, for `room_empty_timeout` seconds.

Closing runs the close hooks (the face tells and removes members, a recording stops), then
forgets the overlay, vitals, alarms and limits: the next consultation in that room name starts
with nothing from the last. A short tombstone refuses bus messages stamped before the close
(an annotation still in flight from another node must not open the next session).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from orbridge.rooms.annotations.model import Overlay
from orbridge.rooms.bus import RoomBus
from orbridge.rooms.participant import Participant
from orbridge.rooms.tasks import Tasks
from orbridge.rooms.vitals.state import RoomVitals

log = logging.getLogger("orbridge.rooms")

CloseHook = Callable[["Room", str, str], Awaitable[None]]  # (room, reason, by)
Occupied = Callable[[str], Awaitable[bool]]
TOMBSTONE_S = 30.0  # how long a closed room refuses messages stamped before its close


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Room:
    name: str
    opened_ms: int = field(default_factory=now_ms)
    members: dict[str, Participant] = field(default_factory=dict)  # sid -> member on this node
    overlay: Overlay = field(default_factory=Overlay)
    vitals: RoomVitals = field(init=False)
    closed: bool = False

    def __post_init__(self) -> None:
        self.vitals = RoomVitals(self.name)

    def clear(self) -> None:
        self.overlay.items.clear()
        self.vitals.clear()


class RoomRegistry:
    """The open rooms of this node."""

    def __init__(
        self,
        empty_timeout_s: float = 300.0,
        occupied: Occupied | None = None,
        bus: RoomBus | None = None,
        tombstone_s: float = TOMBSTONE_S,
    ) -> None:
        if empty_timeout_s <= 0:
            raise ValueError("room_empty_timeout must be positive")
        self.empty_timeout_s = empty_timeout_s
        # Whether anyone is in the room on any node (presence); None: members here only.
        self.occupied = occupied
        self.tombstone_s = tombstone_s
        self.bus = bus  # carries `consultation_ended` to every node; None: this node alone
        self.rooms: dict[str, Room] = {}
        self.close_hooks: list[CloseHook] = []
        self._closed: dict[str, tuple[int, float]] = {}  # name -> (ended ms, monotonic)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks = Tasks("rooms", log)
        self.counts = {"opened": 0, "closed_empty": 0, "closed_ended": 0}

    async def start(self) -> None:
        if self.bus is not None:
            await self.bus.start(self._receive)

    async def end(self, name: str, by: str) -> int:
        """A moderator ends the consultation: every node closes its Room. Returns when."""
        ended_ms = now_ms()
        message = {"type": "consultation_ended", "room": name, "by": by, "t": ended_ms}
        if self.bus is None:
            await self._receive(message)
        else:
            await self.bus.publish(message)
        return ended_ms

    async def _receive(self, message: dict[str, Any]) -> None:
        if message.get("type") == "consultation_ended" and isinstance(message.get("room"), str):
            await self.close(message["room"], "ended", str(message.get("by", "")),
                             ended_ms=int(message.get("t") or now_ms()))  # fmt: skip

    # -- lookup -----------------------------------------------------------------------------

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def open(self, name: str) -> Room:
        """The room's current consultation, opened now if there is none."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
            self.counts["opened"] += 1
            self._arm(name)  # nobody here yet: a room opened by a bus message closes too
        return room

    def accepts(self, name: str, t_ms: int | float | None) -> bool:
        """False for a message stamped before this room's latest close (still in flight)."""
        closed = self._closed.get(name)
        if closed is None or t_ms is None:
            return True
        ended_ms, at = closed
        if time.monotonic() - at > self.tombstone_s:
            del self._closed[name]
            return True
        return t_ms > ended_ms

    # -- members ----------------------------------------------------------------------------

    def add_member(self, participant: Participant) -> Room:
        room = self.open(participant.room)
        room.members[participant.sid] = participant
        self._disarm(room.name)
        return room

    def update_member(self, participant: Participant) -> None:
        room = self.rooms.get(participant.room)
        if room is not None and participant.sid in room.members:
            room.members[participant.sid] = participant

    def remove_member(self, name: str, sid: str) -> None:
        room = self.rooms.get(name)
        if room is not None and room.members.pop(sid, None) is not None and not room.members:
            self._arm(name)

    def members(self, name: str) -> list[Participant]:
        room = self.rooms.get(name)
        return list(room.members.values()) if room is not None else []

    # -- closing ----------------------------------------------------------------------------

    async def close(self, name: str, reason: str, by: str = "", ended_ms: int | None = None
                    ) -> bool:  # fmt: skip
        """End the room's consultation on this node. False if it was not open."""
        self._disarm(name)
        ended = now_ms() if ended_ms is None else ended_ms
        self._closed[name] = (ended, time.monotonic())
        self._prune()
        room = self.rooms.pop(name, None)
        if room is None:
            return False
        room.closed = True
        self.counts["closed_ended" if reason == "ended" else "closed_empty"] += 1
        log.info("consultation in room %s closed (%s%s)", name, reason, f" by {by}" if by else "")
        for hook in self.close_hooks:
            try:
                await hook(room, reason, by)
            except Exception:
                log.exception("close hook failed for room %s", name)
        room.clear()
        return True

    async def stop(self) -> None:
        for name in list(self._timers):
            self._disarm(name)
        await self._tasks.cancel()
        if self.bus is not None:
            await self.bus.close()

    def _arm(self, name: str) -> None:
        if name in self._timers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous test): nothing to time
            return
        self._timers[name] = loop.call_later(self.empty_timeout_s, self._expire, name)

    def _disarm(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, name: str) -> None:
        self._timers.pop(name, None)
        self._tasks.spawn(self._close_if_empty(name), name=f"room-empty:{name}")

    async def _close_if_empty(self, name: str) -> None:
        room = self.rooms.get(name)
        if room is None or room.members:
            return
        if self.occupied is not None:
            try:
                busy = await self.occupied(name)
            except Exception as exc:  # presence unreachable: keep what we have, ask again
                log.warning("cannot tell whether room %s is empty: %s", name, exc)
                busy = True
            if busy:
                if self.rooms.get(name) is room and not room.members:
                    self._arm(name)
                return
        if self.rooms.get(name) is room and not room.members:
            await self.close(name, "empty")

    def _prune(self) -> None:
        cutoff = time.monotonic() - self.tombstone_s
        for name, (_, at) in list(self._closed.items()):
            if at < cutoff:
                del self._closed[name]
