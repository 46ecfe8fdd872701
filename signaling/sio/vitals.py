"""Vitals over the protocol: `publish_vitals` in, `vitals` / `alarm_raised` / `alarm_cleared` out.

Fan-out to this node's clients is bounded per client by what Engine.IO still has queued for it:
a client that falls behind first loses waveform batches (it sees the gap in their `seq`), then,
far behind, everything until it drains; it never slows the room or grows the server's memory.
Alarms are never dropped.
"""

from __future__ import annotations

import time
from typing import Any

from orbridge.media.aiortc_compat import engineio_backlog
from orbridge.rooms.errors import DomainError
from orbridge.rooms.participant import Participant
from orbridge.rooms.roles import Grant
from orbridge.rooms.vitals.alarms import check_limits
from orbridge.rooms.vitals.hub import VitalsHub
from orbridge.rooms.vitals.model import (
    VitalsBatch,
    make_numeric,
    make_waveform,
    numeric_kind,
    waveform_kind,
)
from orbridge.signaling.sio import schemas
from orbridge.signaling.sio.gate import EventSpec
from orbridge.signaling.sio.namespace import RoomNamespace

WAVEFORM_BACKLOG = 32  # queued packets above which a client skips waveform batches
HARD_BACKLOG = 256  # ... and above which it skips numerics too, until it drains


class VitalsEvents:
    def __init__(self, namespace: RoomNamespace, hub: VitalsHub) -> None:
        self.namespace = namespace
        self.hub = hub
        self.dropped = namespace.metrics.vitals_dropped
        namespace.register(
            EventSpec("publish_vitals", schemas.PublishVitals, self.on_publish_vitals,
                      grant=Grant.PUBLISH_VITALS)
        )  # fmt: skip
        namespace.register(
            EventSpec("set_alarm_limits", schemas.AlarmLimits, self.on_set_alarm_limits,
                      grant=Grant.CONFIGURE_ALARMS, max_bytes=4096)
        )  # fmt: skip
        namespace.snapshot_parts.append(self._snapshot)
        hub.listeners.append(self.deliver)

    def _snapshot(self, me: Participant) -> dict[str, Any]:
        if Grant.SUBSCRIBE_VITALS not in me.grants:
            return {}
        return {"vitals": self.hub.snapshot(me.room)}

    async def on_publish_vitals(self, sid: str, message: schemas.PublishVitals) -> dict[str, Any]:
        me = self.namespace.me(sid)
        now = int(time.time() * 1000)
        source = message.source or me.identity
        batch = VitalsBatch(room=me.room, received_ms=now, via="socketio")
        for n in message.numerics:
            kind = numeric_kind(key=n.kind)
            if kind is None:
                raise DomainError("invalid_vitals", f"unknown numeric {n.kind!r}")
            batch.numerics.append(make_numeric(kind, n.value, n.unit, n.time_ms or now, source))
        for w in message.waveforms:
            wkind = waveform_kind(key=w.kind)
            if wkind is None:
                raise DomainError("invalid_vitals", f"unknown waveform {w.kind!r}")
            batch.waveforms.append(
                make_waveform(wkind, w.start_ms, w.rate_hz, w.seq, w.samples, source, w.unit)
            )
        return await self.hub.ingest(batch)

    async def on_set_alarm_limits(self, sid: str, message: schemas.AlarmLimits) -> dict[str, Any]:
        me = self.namespace.me(sid)
        raw = {k: v.model_dump() for k, v in message.limits.items()}
        limits = check_limits(raw)
        return {"limits": await self.hub.set_limits(me.room, limits, int(time.time() * 1000))}

    # fan-out ----------------------------------------------------------------------------
    def _backlog(self, sid: str) -> int:
        return engineio_backlog(self.namespace.server, sid, self.namespace.namespace)

    async def deliver(self, message: dict[str, Any]) -> None:
        room, kind = message["room"], message["type"]
        viewers = [
            p.sid for p in self.namespace.rooms.members(room)
            if Grant.SUBSCRIBE_VITALS in p.grants
        ]  # fmt: skip
        if not viewers:
            return
        if kind == "vitals":
            batch = message["batch"]
            full = {k: batch[k] for k in ("received_ms", "via", "numerics", "waveforms")}
            numerics_only = {**full, "waveforms": []}
            for sid in viewers:
                backlog = self._backlog(sid)
                payload = full
                if backlog > HARD_BACKLOG:
                    self.dropped.labels("waveforms").inc(len(batch["waveforms"]))
                    self.dropped.labels("numerics").inc(len(batch["numerics"]))
                    continue
                if backlog > WAVEFORM_BACKLOG and batch["waveforms"]:
                    self.dropped.labels("waveforms").inc(len(batch["waveforms"]))
                    if not batch["numerics"]:
                        continue
                    payload = numerics_only
                await self.namespace.emit("vitals", payload, to=sid, ignore_queue=True)
        elif kind in ("alarm_raised", "alarm_cleared"):
            for sid in viewers:
                await self.namespace.emit(kind, message["alarm"], to=sid, ignore_queue=True)
        elif kind == "limits":
            for sid in viewers:
                await self.namespace.emit("alarm_limits", {"limits": message["limits"]}, to=sid,
                                          ignore_queue=True)  # fmt: skip
