"""The vitals hub: every way in (Socket.IO, HL7 MLLP, FHIR) hands it a normalized batch.

`ingest` evaluates the room's alarms and publishes the batch and any alarm changes on the room
bus. Every node (the ingesting one included) applies what the bus carries to its Room (the
latest numerics, the active alarms, the limits, for late joiners) and hands it to its
listeners: the face's fan-out to the room's members and a recording's event log. The bus is
in-process for one node, Redis pub/sub for several.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from orbridge.rooms.bus import Deliver, RoomBus
from orbridge.rooms.errors import DomainError
from orbridge.rooms.room import RoomRegistry, now_ms
from orbridge.rooms.vitals.alarms import Alarm, Limit
from orbridge.rooms.vitals.model import VitalsBatch
from orbridge.rooms.vitals.state import RoomVitals

log = logging.getLogger("orbridge.vitals")


def _alarm(data: dict[str, Any]) -> Alarm:
    fields = ("id", "room", "kind", "condition", "limit", "value", "raised_ms", "source")
    return Alarm(**{name: data[name] for name in fields})


class VitalsHub:
    def __init__(
        self,
        bus: RoomBus,
        rooms: RoomRegistry,
        on_ingest: Callable[[VitalsBatch], None] | None = None,
    ) -> None:
        self.bus = bus
        self.rooms = rooms
        self.on_ingest = on_ingest  # metrics hook
        self.listeners: list[Deliver] = []  # the fan-out of this node, the event log
        self.counts = {"batches": 0, "numerics": 0, "waveforms": 0, "alarms_raised": 0}

    async def start(self) -> None:
        self.bus.on_resync.append(self.resend_alarms)
        await self.bus.start(self._receive)

    async def resend_alarms(self) -> None:
        """After a bus outage: every active alarm this node knows, to every node again."""
        t = now_ms()
        for room in list(self.rooms.rooms.values()):
            for alarm in list(room.vitals.alarms.active.values()):
                await self.bus.publish({"type": "alarm_raised", "room": room.name, "t": t,
                                        "alarm": alarm.public(), "resent": True},
                                       sticky=True)  # fmt: skip

    async def close(self) -> None:
        await self.bus.close()

    def snapshot(self, room: str) -> dict[str, Any]:
        current = self.rooms.get(room)
        return (current.vitals if current is not None else RoomVitals(room)).snapshot()

    async def ingest(self, batch: VitalsBatch) -> dict[str, Any]:
        """Accept a normalized batch for a room (from any way in)."""
        if not batch.numerics and not batch.waveforms:
            raise DomainError("invalid_vitals", "nothing to ingest: no numerics, no waveforms")
        engine = self.rooms.open(batch.room).vitals.alarms
        changes = [change for n in batch.numerics for change in engine.evaluate(n)]
        self.counts["batches"] += 1
        self.counts["numerics"] += len(batch.numerics)
        self.counts["waveforms"] += len(batch.waveforms)
        if self.on_ingest is not None:
            self.on_ingest(batch)
        t = batch.received_ms
        await self.bus.publish({"type": "vitals", "room": batch.room, "t": t,
                                "batch": batch.public()})  # fmt: skip
        for what, alarm in changes:
            if what == "raised":
                self.counts["alarms_raised"] += 1
                log.warning("alarm in %s: %s %s %s", batch.room, alarm.kind, alarm.condition,
                            alarm.value)  # fmt: skip
            # Delivered on this node at once, to the others as soon as the bus can (never dropped).
            await self.bus.publish({"type": f"alarm_{what}", "room": batch.room, "t": t,
                                    "alarm": alarm.public()}, sticky=True)  # fmt: skip
        return {
            "numerics": len(batch.numerics),
            "waveforms": len(batch.waveforms),
            "alarms": [{"event": what, "id": a.id} for what, a in changes],
        }

    async def set_limits(self, room: str, limits: dict[str, Limit], t_ms: int
                         ) -> dict[str, Any]:  # fmt: skip
        merged = {**self.rooms.open(room).vitals.alarms.limits, **limits}
        public = {k: v.public() for k, v in merged.items()}
        await self.bus.publish({"type": "limits", "room": room, "t": t_ms, "limits": public})
        return public

    async def _receive(self, message: dict[str, Any]) -> None:
        name = message.get("room")
        if not isinstance(name, str) or not self.rooms.accepts(name, message.get("t")):
            return
        vitals = self.rooms.open(name).vitals
        kind = message.get("type")
        if kind == "vitals":
            for numeric in message["batch"]["numerics"]:
                vitals.latest[numeric["kind"]] = numeric
        elif kind in ("alarm_raised", "alarm_cleared"):
            # Keep every node's alarm state in step, whichever node evaluated it; idempotent by
            # id, so an alarm sent again after an outage reaches listeners once.
            alarm = _alarm(message["alarm"])
            key = (alarm.kind, alarm.condition)
            if kind == "alarm_raised":
                if alarm.id in vitals.announced:
                    return
                current = vitals.alarms.active.get(key)
                if current is not None and current.id != alarm.id and message.get("resent"):
                    return  # an older alarm of the same kind, superseded here meanwhile
                vitals.alarms.active[key] = alarm
                vitals.announced.add(alarm.id)
            else:
                current = vitals.alarms.active.get(key)
                if current is not None and current.id == alarm.id:
                    del vitals.alarms.active[key]
                elif alarm.id not in vitals.announced:
                    return  # never raised here, or cleared already
                vitals.announced.discard(alarm.id)
        elif kind == "limits":
            vitals.alarms.limits = {k: Limit(**v) for k, v in message["limits"].items()}
        for listener in self.listeners:
            try:
                await listener(message)
            except Exception:  # one listener must not starve the others (alarms above all)
                log.exception("vitals listener failed")
