"""Everything one orbridge process serves with, kept on the aiohttp app under NODE."""

from __future__ import annotations

from dataclasses import dataclass

import socketio
from aiohttp import web

from orbridge.media.router import MediaRouter
from orbridge.recording.live.service import RecordingService
from orbridge.rooms.annotations.hub import AnnotationHub
from orbridge.rooms.bus import RoomBus
from orbridge.rooms.presence import NodeInfo, PresenceStore
from orbridge.rooms.room import RoomRegistry
from orbridge.rooms.service import RoomService
from orbridge.rooms.vitals.hub import VitalsHub
from orbridge.signaling.audit import AuditLog
from orbridge.signaling.ingest.mllp import MllpListener
from orbridge.signaling.metrics import Metrics
from orbridge.signaling.settings import Settings
from orbridge.signaling.sio.namespace import RoomNamespace


@dataclass
class Node:
    settings: Settings
    secret: str
    info: NodeInfo
    presence: PresenceStore
    rooms: RoomService
    registry: RoomRegistry
    sio: socketio.AsyncServer
    namespace: RoomNamespace
    metrics: Metrics
    media: MediaRouter
    vitals: VitalsHub
    annotations: AnnotationHub
    recordings: RecordingService
    audit: AuditLog
    mllp: MllpListener | None = None

    def buses(self) -> dict[str, RoomBus]:
        """The room buses by kind, for health checks."""
        buses = {"rooms": self.registry.bus, "vitals": self.vitals.bus,
                 "annotations": self.annotations.bus}  # fmt: skip
        return {name: bus for name, bus in buses.items() if bus is not None}


NODE = web.AppKey("orbridge", Node)
