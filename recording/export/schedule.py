"""When each annotation is on screen in an exported segment: the room's overlay, replayed.

The event log says when annotations arrived, were replaced and removed; :func:`schedule_annotations`
turns that into media-time intervals of one segment (placed by the frame an annotation was drawn
on when known), and :class:`Schedule` answers "what is visible at this frame" as the export walks
forward. Kept apart from decoding and encoding so the timing rules can be tested on their own.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orbridge.recording.export.render import POINTER_FADE_MS
from orbridge.recording.manifest import Segment
from orbridge.rooms.annotations.model import MAX_OVERLAY

__all__ = ["FRAME_EPSILON_S", "Schedule", "Shown", "schedule_annotations"]

FRAME_EPSILON_S = 0.002
"""Timestamps in WebM/Matroska are whole milliseconds: a frame 0.5 ms early is that frame."""


@dataclass
class Shown:
    """One annotation on one segment: shown for media times in ``[start, end)`` (seconds)."""

    annotation: dict[str, Any]
    start: float
    end: float
    order: int
    pointer: bool = False


def _start_of(annotation: Mapping[str, Any], t: float, segment: Segment) -> float:
    """File position where an annotation appears: its frame if known, else its arrival."""
    frame = annotation.get("frame")
    if isinstance(frame, Mapping):
        source_ts = frame.get("source_ts")
        if isinstance(source_ts, int) and not isinstance(source_ts, bool):
            media = segment.media_time_of_ts(source_ts)
            if media is not None:
                return media
    return segment.media_time(t)


def schedule_annotations(events: Iterable[Mapping[str, Any]], segment: Segment) -> list[Shown]:
    """When each annotation of ``segment``'s track shows, replaying the room's overlay.

    As the live overlay: an annotation stays until an ``annotation_removed`` names it, a newer
    annotation with the same id replaces it, the room keeps at most ``MAX_OVERLAY`` (oldest
    evicted), and a pointer lasts ``POINTER_FADE_MS`` or until its author's next pointer.
    """
    shown: list[Shown] = []
    kept: OrderedDict[str, Shown | None] = OrderedDict()  # the room's overlay, any track
    pointers: dict[str, Shown] = {}
    fade = POINTER_FADE_MS / 1000

    def close(item: Shown | None, t: float) -> None:
        if item is not None:
            item.end = max(item.start, min(item.end, segment.media_time(t)))

    for event in events:
        kind, t = event.get("type"), float(event["t"])
        if kind == "annotation" and isinstance(event.get("annotation"), Mapping):
            annotation = dict(event["annotation"])
            if not isinstance(annotation.get("points"), list):
                continue
            mine = annotation.get("track_id") == segment.track_id
            item = None
            if mine:
                start = _start_of(annotation, t, segment)
                pointer = annotation.get("type") == "pointer"
                item = Shown(annotation, start, math.inf, len(shown), pointer)
                shown.append(item)
            if annotation.get("type") == "pointer":
                # As live: an author's newer pointer replaces the older one, on any track.
                author = str(annotation.get("author") or "")
                previous = pointers.pop(author, None)
                if previous is not None:
                    cut = item.start if item is not None else segment.media_time(t)
                    previous.end = max(previous.start, min(previous.end, cut))
                if item is not None:
                    item.end = item.start + fade
                    pointers[author] = item
                continue
            annotation_id = str(annotation.get("id") or "")
            if annotation_id in kept:
                replaced = kept.pop(annotation_id)
                if replaced is not None:
                    replaced.end = max(
                        replaced.start,
                        min(replaced.end, item.start if item else segment.media_time(t)),
                    )
            kept[annotation_id] = item
            while len(kept) > MAX_OVERLAY:
                close(kept.popitem(last=False)[1], t)
        elif kind == "annotation_removed":
            for annotation_id in event.get("ids") or []:
                if isinstance(annotation_id, str) and annotation_id in kept:
                    close(kept.pop(annotation_id), t)
    return [s for s in shown if s.end > s.start]


class Schedule:
    """Visible annotations at increasing media times (a cursor; going back restarts it).

    A frame at media time ``m`` shows what starts at or before ``m + tolerance`` and ends
    after ``m``; the tolerance absorbs the container's millisecond rounding of timestamps
    (replay-events.js uses the same 2 ms).
    """

    def __init__(self, shown: Sequence[Shown], tolerance: float = FRAME_EPSILON_S) -> None:
        self._items = sorted(shown, key=lambda s: s.start)
        self._starts = [s.start for s in self._items]
        self.tolerance = tolerance
        self._reset()
        self.drawn: dict[str, str] = {}  # id -> type, of everything drawn at least once

    def _reset(self) -> None:
        self._cursor = 0
        self._active: list[Shown] = []
        self._last = -math.inf

    def at(self, media_s: float) -> list[tuple[dict[str, Any], float]]:
        """``(annotation, alpha)`` to draw at ``media_s``, oldest first, pointers last."""
        if media_s < self._last:
            self._reset()
        self._last = media_s
        end = bisect.bisect_right(self._starts, media_s + self.tolerance)
        if end > self._cursor:
            self._active.extend(self._items[self._cursor : end])
            self._active.sort(key=lambda s: (s.pointer, s.order))
            self._cursor = end
        self._active = [s for s in self._active if s.end > media_s]
        out = []
        for item in self._active:
            alpha = 1.0
            if item.pointer:
                alpha = max(0.0, min(1.0, 1.0 - (media_s - item.start) * 1000 / POINTER_FADE_MS))
            if alpha > 0.0:
                out.append((item.annotation, alpha))
                key = str(item.annotation.get("id") or f"#{item.order}")
                self.drawn.setdefault(key, str(item.annotation.get("type")))
        return out
