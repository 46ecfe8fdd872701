"""Annotations (telestration): what experts draw on the OR's video, and the room's overlay.

Each annotation names the video track and the exact frame it was drawn on (the frame's RTP
timestamp, as Chromium's requestVideoFrameCallback reports it), uses coordinates normalized to
the picture ([0, 1] of its width and height), and gets an id, the author's colour and the
server's time here. Pointers are ephemeral; every other kind joins the room's overlay, which late
joiners receive. The overlay is bounded per room.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from orbridge.rooms.errors import DomainError

KINDS = ("arrow", "circle", "stroke", "text", "pointer")
POINTS = {"arrow": (2, 2), "circle": (2, 2), "stroke": (2, 2000), "text": (1, 1), "pointer": (1, 1)}
MAX_OVERLAY = 500  # kept annotations per room; the oldest give way
# Colours that stay distinct on reddish tissue and for the common colour-vision deficiencies.
PALETTE = ("#00e5ff", "#ffeb3b", "#76ff03", "#ffffff", "#ff9100", "#d500f9", "#2979ff", "#00e676")


def color_for(identity: str) -> str:
    """A stable colour per author (the same on every node and after a reconnect)."""
    digest = hashlib.sha256(identity.encode()).digest()
    return PALETTE[digest[0] % len(PALETTE)]


@dataclass(frozen=True, slots=True)
class Annotation:
    id: str
    room: str
    author: str
    author_name: str
    color: str
    type: str
    track_id: str
    points: tuple[tuple[float, float], ...]
    text: str
    width: float
    frame: dict[str, Any] | None
    frozen: bool
    client_id: str
    sent_ms: int | None
    server_ms: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "room": self.room, "author": self.author,
            "author_name": self.author_name, "color": self.color, "type": self.type,
            "track_id": self.track_id, "points": [list(p) for p in self.points],
            "text": self.text, "width": self.width, "frame": self.frame, "frozen": self.frozen,
            "client_id": self.client_id, "sent_ms": self.sent_ms, "server_ms": self.server_ms,
        }  # fmt: skip

    @classmethod
    def from_public(cls, data: dict[str, Any]) -> Annotation:
        return cls(**{**data, "points": tuple(tuple(p) for p in data["points"])})


def make_annotation(room: str, author: str, author_name: str, kind: str, track_id: str,
                    points: list[list[float]], text: str = "", width: float = 0.006,
                    frame: dict[str, Any] | None = None, frozen: bool = False,
                    client_id: str = "", sent_ms: int | None = None) -> Annotation:  # fmt: skip
    if kind not in KINDS:
        raise DomainError("invalid_payload", f"annotation type must be one of {', '.join(KINDS)}")
    low, high = POINTS[kind]
    if not low <= len(points) <= high:
        raise DomainError("invalid_payload", f"a {kind} takes {low}-{high} points")
    for point in points:
        if len(point) != 2 or not all(0.0 <= v <= 1.0 for v in point):
            raise DomainError("invalid_payload", "points are [x, y] normalized to 0..1")
    if kind == "text" and not text.strip():
        raise DomainError("invalid_payload", "a text annotation needs its text")
    if kind != "text" and text:
        raise DomainError("invalid_payload", "only a text annotation has text")
    return Annotation(
        id=f"AN_{uuid.uuid4().hex[:16]}",
        room=room, author=author, author_name=author_name, color=color_for(author), type=kind,
        track_id=track_id, points=tuple((float(x), float(y)) for x, y in points), text=text,
        width=width, frame=frame, frozen=frozen, client_id=client_id, sent_ms=sent_ms,
        server_ms=int(time.time() * 1000),
    )  # fmt: skip


@dataclass
class Overlay:
    """The kept annotations of one room, oldest first."""

    items: OrderedDict[str, Annotation] = field(default_factory=OrderedDict)

    def add(self, annotation: Annotation) -> list[str]:
        """Keep it (not pointers); return the ids evicted to stay bounded."""
        if annotation.type == "pointer":
            return []
        self.items[annotation.id] = annotation
        evicted = []
        while len(self.items) > MAX_OVERLAY:
            evicted.append(self.items.popitem(last=False)[0])
        return evicted

    def last_of(self, author: str) -> Annotation | None:
        for annotation in reversed(self.items.values()):
            if annotation.author == author:
                return annotation
        return None

    def of(self, author: str | None) -> list[str]:
        return [a.id for a in self.items.values() if author is None or a.author == author]

    def remove(self, ids: list[str]) -> None:
        for annotation_id in ids:
            self.items.pop(annotation_id, None)

    def public(self) -> list[dict[str, Any]]:
        return [a.public() for a in self.items.values()]
