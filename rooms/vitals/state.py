"""What a room holds of its patient's vitals: the latest numerics, the alarm state and limits."""

from __future__ import annotations

from typing import Any

from orbridge.rooms.vitals.alarms import AlarmEngine


class RoomVitals:
    def __init__(self, room: str) -> None:
        self.room = room
        self.latest: dict[str, dict[str, Any]] = {}  # kind -> the latest numeric (public form)
        self.alarms = AlarmEngine(room)
        # Alarm ids this node has handed to its listeners: an alarm sent again after a bus
        # outage is not announced twice.
        self.announced: set[str] = set()

    def snapshot(self) -> dict[str, Any]:
        return {
            "numerics": list(self.latest.values()),
            "alarms": [a.public() for a in self.alarms.active.values()],
            "limits": {k: v.public() for k, v in self.alarms.limits.items()},
        }

    def clear(self) -> None:
        """Forget this patient: numerics, active alarms, and limits back to the defaults."""
        self.latest.clear()
        self.alarms = AlarmEngine(self.room)
        self.announced.clear()
