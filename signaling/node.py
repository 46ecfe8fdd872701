"""Everything one orbridge process serves with, kept on the aiohttp app under NODE."""

from __future__ import annotations

from dataclasses import dataclass

import socketio
from aiohttp import web

from media.router import MediaRouter
from recording.service import RecordingService
from rooms.presence import NodeInfo, PresenceStore
from rooms.service import RoomService
from rooms.vitals_hub import VitalsHub
from signaling.annotation_events import AnnotationEvents
from signaling.metrics import Metrics
from signaling.mllp import MllpListener
from signaling.namespace import RoomNamespace
from signaling.settings import Settings


@dataclass
class Node:
    settings: Settings
    secret: str
    info: NodeInfo
    presence: PresenceStore
    rooms: RoomService
    sio: socketio.AsyncServer
    namespace: RoomNamespace
    metrics: Metrics
    media: MediaRouter
    vitals: VitalsHub
    annotations: AnnotationEvents
    recordings: RecordingService
    mllp: MllpListener | None = None


NODE = web.AppKey("orbridge", Node)
