"""The vitals of every room on this node: ingest, alarms, and the bus that carries them.

Every ingest path (Socket.IO, HL7 MLLP, FHIR) hands a normalized `VitalsBatch` to
`VitalsHub.ingest`, which evaluates the room's alarms and publishes the batch and any alarm
changes on the bus. Each node (the ingesting one included) receives what the bus carries,
keeps the room's latest numerics, active alarms and limits for late joiners, and fans it out to
its own clients. The bus is in-process for one node, Redis pub/sub for several.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from orbridge.rooms.bus import Deliver, RoomBus
from orbridge.rooms.errors import DomainError
from orbridge.rooms.vitals.alarms import Alarm, AlarmEngine, Limit
from orbridge.rooms.vitals.model import VitalsBatch

log = logging.getLogger("orbridge.vitals")


def _alarm(data: dict[str, Any]) -> Alarm:
    fields = ("id", "room", "kind", "condition", "limit", "value", "raised_ms", "source")
    return Alarm(**{name: data[name] for name in fields})


class VitalsHub:
    def __init__(
        self, bus: RoomBus, on_ingest: Callable[[VitalsBatch], None] | None = None
    ) -> None:
        self.bus = bus
        self.on_ingest = on_ingest  # metrics hook
        self.engines: dict[str, AlarmEngine] = {}
        self.latest: dict[str, dict[str, dict[str, Any]]] = {}  # room -> kind -> numeric
        self.listeners: list[Deliver] = []  # the fan-out of this node
        self.counts = {"batches": 0, "numerics": 0, "waveforms": 0, "alarms_raised": 0}

    async def start(self) -> None:
        await self.bus.start(self._receive)

    async def close(self) -> None:
        await self.bus.close()

    def engine(self, room: str) -> AlarmEngine:
        engine = self.engines.get(room)
        if engine is None:
            engine = self.engines[room] = AlarmEngine(room)
        return engine

    async def ingest(self, batch: VitalsBatch) -> dict[str, Any]:
        """Accept a normalized batch for a room (from any way in)."""
        if not batch.numerics and not batch.waveforms:
            raise DomainError("invalid_vitals", "nothing to ingest: no numerics, no waveforms")
        engine = self.engine(batch.room)
        changes = [change for n in batch.numerics for change in engine.evaluate(n)]
        self.counts["batches"] += 1
        self.counts["numerics"] += len(batch.numerics)
        self.counts["waveforms"] += len(batch.waveforms)
        if self.on_ingest is not None:
            self.on_ingest(batch)
        await self.bus.publish({"type": "vitals", "room": batch.room, "batch": batch.public()})
        for what, alarm in changes:
            if what == "raised":
                self.counts["alarms_raised"] += 1
                log.warning("alarm in %s: %s %s %s", batch.room, alarm.kind, alarm.condition,
                            alarm.value)  # fmt: skip
            await self.bus.publish({"type": f"alarm_{what}", "room": batch.room,
                                    "alarm": alarm.public()})  # fmt: skip
        return {
            "numerics": len(batch.numerics),
            "waveforms": len(batch.waveforms),
            "alarms": [{"event": what, "id": a.id} for what, a in changes],
        }

    async def set_limits(self, room: str, limits: dict[str, Limit]) -> dict[str, Any]:
        merged = {**self.engine(room).limits, **limits}
        public = {k: v.public() for k, v in merged.items()}
        await self.bus.publish({"type": "limits", "room": room, "limits": public})
        return public

    async def _receive(self, message: dict[str, Any]) -> None:
        room = message.get("room")
        if not isinstance(room, str):
            return
        kind = message.get("type")
        if kind == "vitals":
            latest = self.latest.setdefault(room, {})
            for numeric in message["batch"]["numerics"]:
                latest[numeric["kind"]] = numeric
        elif kind in ("alarm_raised", "alarm_cleared"):
            # Keep every node's alarm state in step, whichever node evaluated it.
            alarm = _alarm(message["alarm"])
            active = self.engine(room).active
            if kind == "alarm_raised":
                active[(alarm.kind, alarm.condition)] = alarm
            else:
                active.pop((alarm.kind, alarm.condition), None)
        elif kind == "limits":
            self.engine(room).limits = {k: Limit(**v) for k, v in message["limits"].items()}
        for listener in self.listeners:
            await listener(message)

    def snapshot(self, room: str) -> dict[str, Any]:
        engine = self.engines.get(room)
        return {
            "numerics": list(self.latest.get(room, {}).values()),
            "alarms": [a.public() for a in engine.active.values()] if engine else [],
            "limits": {k: v.public() for k, v in (engine or AlarmEngine(room)).limits.items()},
        }
