"""The composition root: one aiohttp application with the Socket.IO server attached.

Every part is built here and every hook wired here; nothing else in orbridge constructs
another layer's objects."""

from __future__ import annotations

import logging
import os
import time

import socketio
from aiohttp import web

from orbridge.media.ice import configure_candidate_addresses
from orbridge.media.router import MediaConfig, MediaRouter
from orbridge.media.tap import install_tap
from orbridge.recording.live.service import RecordingService
from orbridge.rooms.annotations.hub import AnnotationHub
from orbridge.rooms.bus import LocalBus, RedisBus, RoomBus
from orbridge.rooms.errors import PresenceUnavailable
from orbridge.rooms.presence import MemoryPresence, NodeInfo, PresenceStore
from orbridge.rooms.presence_redis import RedisPresence
from orbridge.rooms.room import RoomRegistry
from orbridge.rooms.sanctions import Sanctions
from orbridge.rooms.service import RoomService
from orbridge.rooms.vitals.hub import VitalsHub
from orbridge.rooms.vitals.model import VitalsBatch
from orbridge.signaling import __version__
from orbridge.signaling.audit import AuditLog
from orbridge.signaling.ingest.mllp import MllpListener
from orbridge.signaling.logs import quiet_client_noise
from orbridge.signaling.metrics import Metrics
from orbridge.signaling.node import NODE, Node
from orbridge.signaling.settings import NODE_ID_FILE, Settings, claim_node_id
from orbridge.signaling.sio.annotations import AnnotationEvents
from orbridge.signaling.sio.media import MediaEvents, SocketSignals
from orbridge.signaling.sio.namespace import RoomNamespace
from orbridge.signaling.sio.packet import BoundedPacket
from orbridge.signaling.sio.recording import RecordingEvents
from orbridge.signaling.sio.redis_manager import QueuedRedisManager
from orbridge.signaling.sio.vitals import VitalsEvents
from orbridge.signaling.web.api import add_routes
from orbridge.signaling.web.fhir import add_fhir_routes
from orbridge.signaling.web.headers import add_header_rules
from orbridge.signaling.web.limits import engineio_body_limit
from orbridge.signaling.web.pages import setup_pages
from orbridge.signaling.web.recordings import add_recording_routes

log = logging.getLogger("orbridge")

# Engine.IO refuses (and closes the connection on) messages above this; the event gate
# answers smaller but still oversized payloads with `payload_too_large`.
ENGINEIO_MAX_BYTES = 1024 * 1024


def build_presence(settings: Settings) -> PresenceStore:
    ttl_ms = int(settings.presence_ttl * 1000)
    if settings.redis_url:
        return RedisPresence(settings.redis_url, ttl_ms, prefix=settings.redis_prefix)
    return MemoryPresence(ttl_ms)


async def warn_if_node_id_alive(presence: PresenceStore, info: NodeInfo) -> bool:
    """Log a warning (and return True) when presence already has a live node with this node's
    id: this node's previous run, killed less than a presence TTL ago, or another node with the
    same id (a copied data directory, one --node-id given twice), which would take this node's
    recordings for its own."""
    try:
        same = [node for node in await presence.nodes() if node.node_id == info.node_id]
    except PresenceUnavailable:
        return False
    for node in same:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(node.started_at / 1000))
        if node.address == info.address:
            log.warning(
                "presence already has a live node %s at %s (started %s): this node's previous "
                "run if it stopped without leaving (a crash, kill -9) less than presence_ttl "
                "ago, else another process with the same node id and address", node.node_id,
                node.address, started,
            )  # fmt: skip
        else:
            log.warning(
                "presence already has a live node %s at %s (started %s), not this node's "
                "address %s: two nodes share one node id (a copied data directory, or the same "
                "--node-id twice); give every node its own", node.node_id, node.address,
                started, info.address,
            )  # fmt: skip
    return bool(same)


def build_bus(settings: Settings, kind: str) -> RoomBus:
    """The room bus for one kind of message: in process, or a Redis channel for a cluster."""
    if settings.redis_url:
        # a stream key of its own, apart from presence keys such as `{prefix}rooms`
        return RedisBus(settings.redis_url, f"{settings.redis_prefix}bus:{kind}")
    return LocalBus()


def build_media(
    settings: Settings, namespace: RoomNamespace, router_class: type[MediaRouter] = MediaRouter
) -> MediaRouter:
    # Process-wide aiortc hooks: forward encoded frames (never decode), and gather ICE
    # candidates only on the configured addresses (never a public STUN server by default).
    install_tap("passthrough")
    configure_candidate_addresses(settings.candidate_addresses(), settings.announced_address)
    config = MediaConfig(
        video_codec=settings.video_codec,
        stun_urls=tuple(settings.stun_urls),
        turn_urls=tuple(settings.turn_urls),
        turn_username=settings.turn_username,
        turn_credential=settings.turn_credential,
        queue_size=settings.subscriber_queue,
        lean_sender=settings.lean_sender,
        keyframe_interval=settings.keyframe_interval,
        track_stall_timeout=settings.track_stall_timeout,
    )
    router = router_class(config, SocketSignals(namespace))
    MediaEvents(namespace, router)
    return router


def create_app(
    settings: Settings, router_class: type[MediaRouter] = MediaRouter
) -> web.Application:
    """The orbridge app. `router_class` lets the SFU benchmark run its transcoding baseline."""
    secret = settings.resolved_secret()
    identity = claim_node_id(settings.node_id, settings.data_dir)
    if identity.warning:
        log.warning("%s", identity.warning)
    elif identity.created:
        log.info("node id %s generated, kept in %s", identity.node_id,
                 settings.data_dir / NODE_ID_FILE)  # fmt: skip
    presence = build_presence(settings)
    info = NodeInfo(
        node_id=identity.node_id,
        address=settings.base_url,
        started_at=int(time.time() * 1000),
        version=__version__,
    )
    registry = RoomRegistry(settings.room_empty_timeout, bus=build_bus(settings, "rooms"))
    rooms = RoomService(presence, info, settings.heartbeat_interval, registry=registry)
    manager = None
    if settings.redis_url:
        # Broadcasts reach clients on every node through Redis pub/sub: delivered here first,
        # then queued for the other nodes (a down or hung Redis never holds a handler up).
        manager = QueuedRedisManager(
            settings.redis_url,
            channel=f"{settings.redis_prefix}socketio",
            redis_options={"socket_connect_timeout": 2.0},
        )
    origins = settings.cors_allowed_origins or None  # None: same origin only
    quiet_client_noise()
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        serializer=BoundedPacket,
        client_manager=manager,
        cors_allowed_origins=origins,
        max_http_buffer_size=ENGINEIO_MAX_BYTES,
        # A dead client (no FIN: a hung OR laptop, a cut link) is declared gone within
        # ping_interval + ping_timeout (4 + 5 s by default).
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        logger=False,
        engineio_logger=False,
    )
    metrics = Metrics()
    sanctions = Sanctions(settings.redis_url, prefix=settings.redis_prefix)
    audit = AuditLog(settings.audit_path, info.node_id, trusted_proxies=settings.trusted_proxies)
    namespace = RoomNamespace(settings, secret, rooms, metrics, sanctions=sanctions, audit=audit)
    rooms.bind(namespace)
    router = build_media(settings, namespace, router_class)

    def count(batch: VitalsBatch) -> None:
        metrics.vitals_in.labels(batch.via, "numerics").inc(len(batch.numerics))
        metrics.vitals_in.labels(batch.via, "waveforms").inc(len(batch.waveforms))

    vitals = VitalsHub(build_bus(settings, "vitals"), registry, on_ingest=count)
    annotations = AnnotationHub(build_bus(settings, "annotations"), registry)
    annotations.frame_mapper = router.source_timestamp
    AnnotationEvents(namespace, annotations)
    mllp: MllpListener | None = None
    if settings.mllp_port is not None:
        mllp = MllpListener(
            vitals.ingest,
            host=settings.mllp_host or settings.host,
            port=settings.mllp_port,
            bindings=settings.mllp_bindings,
            default_room=settings.mllp_default_room,
            idle_timeout=settings.mllp_idle_timeout,
            max_per_peer=settings.mllp_max_per_peer,
            allow=settings.mllp_allow,
        )
    VitalsEvents(namespace, vitals)
    sio.register_namespace(namespace)

    app = web.Application(
        client_max_size=ENGINEIO_MAX_BYTES,
        middlewares=[engineio_body_limit("/socket.io/", ENGINEIO_MAX_BYTES)],
    )
    sio.attach(app)
    recordings = RecordingService(
        settings.recordings_path, info.node_id,
        policy=settings.record_rooms, policy_consent=settings.record_consent,
        live_nodes=presence.live_node_ids, repair_interval=settings.recording_repair_interval,
    )  # fmt: skip
    RecordingEvents(namespace, recordings, router, annotations, vitals)
    node = Node(
        settings, secret, info, presence, rooms, registry, sio, namespace, metrics, router,
        vitals, annotations, recordings, audit, mllp,
    )  # fmt: skip
    app[NODE] = node
    add_header_rules(app)
    add_routes(app)
    add_fhir_routes(app)
    setup_pages(app)
    add_recording_routes(app)

    async def start(_: web.Application) -> None:
        audit.start()  # first: its thread reads where the chain stands
        audit.append("node_started", version=__version__, pid=os.getpid(), url=settings.base_url)
        await presence.start()
        await warn_if_node_id_alive(presence, info)  # before this node registers
        await rooms.start()
        await registry.start()
        await vitals.start()
        await annotations.start()
        await recordings.repair()
        recordings.start_repairs()
        await sanctions.start()
        namespace.start()
        if mllp is not None:
            await mllp.start()  # a port in use raises OSError: the CLI says "cannot serve"
        log.info(
            "node %s serving on %s (presence: %s)",
            info.node_id,
            settings.base_url,
            presence.backend,
        )

    async def shutdown(_: web.Application) -> None:
        log.info("shutting down: telling %d connections", len(namespace.claims))
        await recordings.close()  # complete files before the tracks end
        await namespace.shutdown()

    async def cleanup(_: web.Application) -> None:
        if mllp is not None:
            await mllp.close()  # before the hub it feeds
        await vitals.close()
        await annotations.close()
        await registry.stop()
        await sanctions.close()
        await presence.close()
        audit.append("node_stopped", pid=os.getpid())
        await audit.close()  # last: after every participant's departure was recorded
        identity.close()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app
