"""Prometheus metrics: counters for what happens, gauges read from presence at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from orbridge.rooms.presence import PresenceStore
from orbridge.rooms.roles import Role


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "orbridge_events",
            "Socket.IO events received, by type",
            ["event"],
            registry=self.registry,
        )
        self.errors = Counter(
            "orbridge_errors",
            "Errors answered to clients, by code",
            ["code"],
            registry=self.registry,
        )
        self.rooms = Gauge(
            "orbridge_rooms",
            "Rooms with at least one participant (cluster-wide)",
            registry=self.registry,
        )
        self.participants = Gauge(
            "orbridge_participants",
            "Participants by role (cluster-wide)",
            ["role"],
            registry=self.registry,
        )
        self.connections = Gauge(
            "orbridge_node_connections",
            "Socket.IO connections on this node",
            registry=self.registry,
        )
        self.presence_up = Gauge(
            "orbridge_presence_up", "1 when the presence backend answers", registry=self.registry
        )
        self.nodes = Gauge("orbridge_nodes", "Live nodes in the cluster", registry=self.registry)
        self.vitals_dropped = Counter(
            "orbridge_vitals_dropped", "Vitals items not sent to a client that fell behind",
            ["what"], registry=self.registry,
        )  # fmt: skip
        self.vitals_in = Counter(
            "orbridge_vitals_ingested", "Vitals items ingested, by way in",
            ["via", "what"], registry=self.registry,
        )  # fmt: skip
        self.mllp = Gauge(
            "orbridge_mllp", "HL7 MLLP listener counters (messages, connections, frames)",
            ["what"], registry=self.registry,
        )  # fmt: skip
        self.codecs = Gauge(
            "orbridge_media_codecs_created",
            "Decoders and encoders this process created (forwarding needs none)",
            ["kind", "op"],
            registry=self.registry,
        )
        self.media = Gauge(
            "orbridge_media", "Media on this node: sessions, tracks, subscriptions, stalled",
            ["what"], registry=self.registry,
        )  # fmt: skip
        self.track_stalls = Counter(
            "orbridge_track_stalls", "Published tracks declared stalled (no frame, publisher"
            " connected), by kind", ["kind"], registry=self.registry,
        )  # fmt: skip
        self.forwarding = Gauge(
            "orbridge_forwarding", "Live forwarders' counters summed (frames, drops, lags)",
            ["what"], registry=self.registry,
        )  # fmt: skip

        self.recordings = Counter(
            "orbridge_recordings", "Recordings started and stopped on this node",
            ["what"], registry=self.registry,
        )  # fmt: skip
        self.recording_errors = Counter(
            "orbridge_recording_errors", "Recording write failures, by code (disk_full, ...)",
            ["code"], registry=self.registry,
        )  # fmt: skip
        self.recording = Gauge(
            "orbridge_recording", "Live recordings' counters (active, bytes, drops)",
            ["what"], registry=self.registry,
        )  # fmt: skip

        self.audit = Gauge(
            "orbridge_audit", "Audit trail: entries written, dropped (reported in gap entries), "
            "gap entries, 1 while failing", ["what"], registry=self.registry,
        )  # fmt: skip

    def set_audit(self, stats: dict[str, int]) -> None:
        for what, value in stats.items():
            self.audit.labels(what).set(value)

    def set_recording(self, stats: dict[str, int]) -> None:
        for what in ("active", "bytes_written", "packets_dropped", "events_dropped"):
            self.recording.labels(what).set(stats.get(what, 0))

    def set_media(self, codecs: dict[str, int], media: dict[str, int]) -> None:
        for kind in ("video", "audio"):
            for op in ("decoder", "encoder"):
                self.codecs.labels(kind, op).set(codecs.get(f"{kind}_{op}s_created", 0))
        for what, value in media.items():
            target = (
                self.media
                if what in ("sessions", "tracks", "subscriptions", "stalled")
                else self.forwarding
            )
            target.labels(what).set(value)

    def set_mllp(self, stats: dict[str, int]) -> None:
        for what, value in stats.items():
            self.mllp.labels(what).set(value)

    async def render(self, presence: PresenceStore, connections: int) -> bytes:
        self.connections.set(connections)
        up = await presence.ping()
        self.presence_up.set(1 if up else 0)
        if up:
            summaries = await presence.rooms()
            self.rooms.set(len(summaries))
            for role in Role:
                self.participants.labels(role.value).set(
                    sum(s.by_role.get(role.value, 0) for s in summaries)
                )
            self.nodes.set(len(await presence.nodes()))
        return generate_latest(self.registry)
