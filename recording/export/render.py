"""Burn-in drawing for exports: annotations and a vitals strip on BGR frames, with OpenCV.

Pure functions over numpy images (``uint8``, ``(h, w, 3)``, BGR), drawn in place. The look
follows the live overlay (``static/js/overlay.js``): line width = ``width`` x picture width
(at least 2 px), round caps, arrows with a filled head, the author's colour, text on a dark
plate with the author's name above it, pointers as a dot with a halo. Sizes are in picture
pixels, so an export at the source resolution looks like the live view at that size.

The vitals strip is a band of its own, stacked under the picture by the exporter (the picture
is never covered): HR, SpO2 and NIBP (latest value by arrival time ``t``) and the last
:data:`TRACE_MS` of the ECG (else the pleth), placed on the timeline by the batches' ``t``.
OpenCV's Hershey fonts are ASCII only: other characters are drawn as ``?``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DEFAULT_COLOR",
    "DEFAULT_WIDTH",
    "ECG_COLOR",
    "POINTER_FADE_MS",
    "TRACE_MS",
    "VitalsTimeline",
    "VitalsView",
    "draw_annotation",
    "draw_vitals_strip",
    "parse_color",
    "vitals_strip_height",
]

DEFAULT_WIDTH = 0.006  # as overlay.js
DEFAULT_COLOR = "#ffff00"
POINTER_FADE_MS = 1500
TRACE_MS = 4000
ECG_COLOR = (0, 255, 0)  # BGR: monitor green
SPO2_COLOR = (255, 255, 0)  # cyan
NIBP_COLOR = (255, 255, 255)
LABEL_COLOR = (170, 170, 170)
STALE_COLOR = (110, 110, 110)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHIFT = 4  # fractional bits for sub-pixel positions
_ONE = 1 << _SHIFT

BGR = tuple[int, int, int]


def parse_color(value: Any) -> BGR:
    """``#rrggbb`` (or ``#rgb``) to BGR; anything else gives the live view's default yellow."""
    text = value if isinstance(value, str) else DEFAULT_COLOR
    text = text.strip().lstrip("#")
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    try:
        rgb = int(text, 16) if len(text) == 6 else None
    except ValueError:
        rgb = None
    if rgb is None:
        return parse_color(DEFAULT_COLOR)
    return (rgb & 0xFF, (rgb >> 8) & 0xFF, (rgb >> 16) & 0xFF)


def _ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def _fixed(x: float, y: float) -> tuple[int, int]:
    return round(x * _ONE), round(y * _ONE)


def _points(annotation: Mapping[str, Any], width: int, height: int) -> list[tuple[float, float]]:
    out = []
    for point in annotation.get("points") or []:
        try:
            x, y = float(point[0]), float(point[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(x) and math.isfinite(y):
            out.append((x * width, y * height))
    return out


def draw_annotation(image: np.ndarray, annotation: Mapping[str, Any], alpha: float = 1.0) -> None:
    """Draw one annotation (protocol form: normalized ``points``) into ``image`` in place.

    ``alpha`` < 1 blends it (a fading pointer); unknown kinds and bad points draw nothing.
    """
    if alpha <= 0.0:
        return
    if alpha < 1.0:
        # Blend a drawn copy back; a pointer touches only a small box around its dot.
        height, width = image.shape[:2]
        pts = _points(annotation, width, height)
        if annotation.get("type") == "pointer" and pts:
            (x, y), r = pts[0], math.ceil(2 * max(8.0, width * 0.012)) + 3
            x0, y0 = max(0, int(x) - r), max(0, int(y) - r)
            region = image[y0 : max(0, int(y) + r + 1), x0 : max(0, int(x) + r + 1)]
            if region.size == 0:
                return
            layer = region.copy()
            _pointer(layer, (x - x0, y - y0), width, parse_color(annotation.get("color")))
        else:
            region, layer = image, image.copy()
            draw_annotation(layer, annotation, 1.0)
        cv2.addWeighted(layer, alpha, region, 1.0 - alpha, 0.0, dst=region)
        return
    height, width = image.shape[:2]
    pts = _points(annotation, width, height)
    if not pts:
        return
    color = parse_color(annotation.get("color"))
    try:
        fraction = float(annotation.get("width") or DEFAULT_WIDTH)
    except (TypeError, ValueError):
        fraction = DEFAULT_WIDTH
    line = max(2.0, fraction * width)
    thick = max(1, round(line))
    kind = annotation.get("type")
    if kind == "arrow" and len(pts) >= 2:
        _arrow(image, pts[0], pts[1], line, color)
    elif kind == "circle" and len(pts) >= 2:
        (cx, cy), (rx, ry) = pts[0], pts[1]
        radius = max(2.0, math.hypot(rx - cx, ry - cy))
        cv2.circle(image, _fixed(cx, cy), round(radius * _ONE), color, thick, cv2.LINE_AA, _SHIFT)
    elif kind == "stroke":
        poly = np.array([_fixed(x, y) for x, y in pts], np.int32)
        if len(poly) == 1:
            cv2.circle(
                image, tuple(poly[0]), round(line / 2 * _ONE), color, -1, cv2.LINE_AA, _SHIFT
            )
        else:
            cv2.polylines(image, [poly], False, color, thick, cv2.LINE_AA, _SHIFT)
    elif kind == "text":
        _label(image, pts[0], str(annotation.get("text") or ""), annotation, color)
    elif kind == "pointer":
        _pointer(image, pts[0], width, color)


def _arrow(
    image: np.ndarray, tail: tuple[float, float], head: tuple[float, float], line: float, color: BGR
) -> None:
    (x0, y0), (x1, y1) = tail, head
    angle = math.atan2(y1 - y0, x1 - x0)
    size = max(12.0, line * 4)
    # The shaft stops where the head begins, so the tip stays sharp (as overlay.js).
    sx, sy = x1 - math.cos(angle) * size * 0.8, y1 - math.sin(angle) * size * 0.8
    cv2.line(image, _fixed(x0, y0), _fixed(sx, sy), color, max(1, round(line)), cv2.LINE_AA, _SHIFT)
    tri = np.array(
        [
            _fixed(x1, y1),
            _fixed(x1 - math.cos(angle - 0.45) * size, y1 - math.sin(angle - 0.45) * size),
            _fixed(x1 - math.cos(angle + 0.45) * size, y1 - math.sin(angle + 0.45) * size),
        ],
        np.int32,
    )
    cv2.fillConvexPoly(image, tri, color, cv2.LINE_AA, _SHIFT)


def _pointer(image: np.ndarray, at: tuple[float, float], width: int, color: BGR) -> None:
    radius = max(8.0, width * 0.012)
    x, y = at
    # The halo first, at 35 % as the live view, then the dot over it.
    r = math.ceil(radius * 2) + 2
    h, w = image.shape[:2]
    x0, y0 = max(0, int(x) - r), max(0, int(y) - r)
    x1, y1 = min(w, int(x) + r + 1), min(h, int(y) + r + 1)
    if x0 < x1 and y0 < y1:
        roi = image[y0:y1, x0:x1]
        halo = roi.copy()
        cv2.circle(
            halo, _fixed(x - x0, y - y0), round(2 * radius * _ONE), color, -1, cv2.LINE_AA, _SHIFT
        )
        cv2.addWeighted(halo, 0.35, roi, 0.65, 0.0, dst=roi)
    cv2.circle(image, _fixed(x, y), round(radius * _ONE), color, -1, cv2.LINE_AA, _SHIFT)


def _text_scale(pixels: float, thickness: int) -> float:
    """Hershey scale whose capitals are about 0.72 em of a ``pixels`` px CSS font."""
    return float(cv2.getFontScaleFromHeight(_FONT, max(4, round(pixels * 0.72)), thickness))


def _label(
    image: np.ndarray,
    at: tuple[float, float],
    text: str,
    annotation: Mapping[str, Any],
    color: BGR,
) -> None:
    """Text on a 70 % black plate, the author's name tag above it (overlay.js drawLabel)."""
    height, width = image.shape[:2]
    size = max(14, round(width * 0.03))
    tag_size = max(11, round(size * 0.6))
    x, y = at
    pad = size * 0.25
    thick = max(1, round(size / 11))
    scale = _text_scale(size, thick)
    text = _ascii(text)
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thick)
    px0, py0 = max(0, int(x - pad)), max(0, int(y - pad))
    px1, py1 = min(width, math.ceil(x + tw + pad)), min(height, math.ceil(y + size + pad))
    if px0 < px1 and py0 < py1:
        roi = image[py0:py1, px0:px1]
        np.multiply(roi, 0.3, out=roi, casting="unsafe")
    baseline = round(y + (size + th) / 2)  # capitals centred in the em box
    cv2.putText(image, text, (round(x), baseline), _FONT, scale, color, thick, cv2.LINE_AA)
    name = _ascii(str(annotation.get("author_name") or ""))
    if name:
        tag_thick = max(1, round(tag_size / 12))
        cv2.putText(
            image,
            name,
            (round(x - pad), round(y - pad - 2 - tag_size * 0.2)),
            _FONT,
            _text_scale(tag_size, tag_thick),
            color,
            tag_thick,
            cv2.LINE_AA,
        )


# --- vitals --------------------------------------------------------------------------------

# Numeric kinds shown (rooms.vitals.model keys: the server normalizes every feed to them).
_HR_KINDS = ("hr", "pulse")
_SHOWN = ("hr", "pulse", "spo2", "nibp_sys", "nibp_dia", "nibp_mean")
_STALE_MS = {"nibp_sys": 15 * 60_000, "nibp_dia": 15 * 60_000, "nibp_mean": 15 * 60_000}
_STALE_DEFAULT_MS = 15_000  # a continuous value older than this is shown as "--"
_TRACE_KINDS = ("ecg_ii", "pleth")
_OFFSET_WINDOW = 25  # batches either side for the least transport delay (as replay)


@dataclass
class VitalsView:
    """What the strip shows at one instant."""

    numerics: dict[str, float | None] = field(default_factory=dict)
    """``hr``, ``spo2``, ``nibp_sys``, ``nibp_dia``: latest fresh value or None."""
    trace_kind: str | None = None
    trace_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Sample times relative to the instant (ms, in ``[-TRACE_MS, 0]``)."""
    trace_v: np.ndarray = field(default_factory=lambda: np.zeros(0))
    trace_gap_ms: float = 0.0
    """Spacing beyond which consecutive samples are not joined (a gap in the stream)."""


class VitalsTimeline:
    """The vitals of an event log, indexed by timeline ``t`` for :meth:`at` lookups.

    Numerics: the latest value of each kind with ``t <= instant``, shown as long as it is
    fresh (15 s; NIBP 15 min). Waveforms: one stream per kind (the first source seen); the
    device clock only orders a batch's samples, and the offset device -> timeline is the least
    (arrival - device end of batch) over nearby batches: jitter only ever delays, so the trace
    does not tear, and a monitor's clock error or drift does not shift it against the video.
    The replay page (static/js/replay-events.js) places them the same way.
    """

    def __init__(self, events: Iterable[Mapping[str, Any]]) -> None:
        numerics: dict[str, list[tuple[float, float]]] = {}
        batches: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
        sources: dict[str, Any] = {}
        for event in events:
            if event.get("type") != "vitals" or not isinstance(event.get("batch"), Mapping):
                continue
            t = float(event["t"])
            batch = event["batch"]
            for numeric in batch.get("numerics") or []:
                kind, value = numeric.get("kind"), numeric.get("value")
                if kind in _SHOWN and isinstance(value, int | float) and math.isfinite(value):
                    numerics.setdefault(kind, []).append((t, float(value)))
            for wave in batch.get("waveforms") or []:
                kind = wave.get("kind")
                if kind not in _TRACE_KINDS or not wave.get("samples"):
                    continue
                if sources.setdefault(kind, wave.get("source")) != wave.get("source"):
                    continue
                batches.setdefault(kind, []).append((t, wave))
        self._numerics: dict[str, tuple[list[float], list[float]]] = {}
        for kind, items in numerics.items():
            items.sort(key=lambda item: item[0])
            self._numerics[kind] = ([i[0] for i in items], [i[1] for i in items])
        self._traces: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
        for kind, items in batches.items():
            trace = _place_batches(items)
            if trace is not None:
                self._traces[kind] = trace

    @property
    def empty(self) -> bool:
        return not self._numerics and not self._traces

    def _latest(self, kind: str, wall_ms: float) -> float | None:
        found = self._numerics.get(kind)
        if found is None:
            return None
        times, values = found
        index = bisect.bisect_right(times, wall_ms) - 1
        if index < 0 or wall_ms - times[index] > _STALE_MS.get(kind, _STALE_DEFAULT_MS):
            return None
        return values[index]

    def at(self, wall_ms: float) -> VitalsView:
        view = VitalsView()
        hr = None
        for kind in _HR_KINDS:
            hr = self._latest(kind, wall_ms)
            if hr is not None:
                break
        view.numerics = {
            "hr": hr,
            "spo2": self._latest("spo2", wall_ms),
            "nibp_sys": self._latest("nibp_sys", wall_ms),
            "nibp_dia": self._latest("nibp_dia", wall_ms),
        }
        for kind in _TRACE_KINDS:
            trace = self._traces.get(kind)
            if trace is None:
                continue
            times, values, period = trace
            lo = int(np.searchsorted(times, wall_ms - TRACE_MS, "left"))
            hi = int(np.searchsorted(times, wall_ms, "right"))
            if hi > lo:
                view.trace_kind = kind
                view.trace_t = times[lo:hi] - wall_ms
                view.trace_v = values[lo:hi]
                view.trace_gap_ms = 3 * period
                break
        return view


def _place_batches(
    items: list[tuple[float, Mapping[str, Any]]],
) -> tuple[np.ndarray, np.ndarray, float] | None:
    items = sorted(items, key=lambda item: item[0])
    offsets = []
    for t, wave in items:
        try:
            rate = float(wave["rate_hz"])
            end = float(wave["start_ms"]) + len(wave["samples"]) * 1000.0 / rate
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            end = t
        offsets.append(t - end)
    times, values = [], []
    period = 0.0
    for index, (_, wave) in enumerate(items):
        try:
            rate = float(wave["rate_hz"])
            start = float(wave["start_ms"])
            samples = np.asarray(wave["samples"], np.float64)
        except (KeyError, TypeError, ValueError):
            continue
        if rate <= 0 or samples.ndim != 1:
            continue
        offset = min(offsets[max(0, index - _OFFSET_WINDOW) : index + _OFFSET_WINDOW + 1])
        period = max(period, 1000.0 / rate)
        times.append(start + offset + np.arange(len(samples)) * 1000.0 / rate)
        values.append(samples)
    if not times:
        return None
    all_t, all_v = np.concatenate(times), np.concatenate(values)
    order = np.argsort(all_t, kind="stable")
    return all_t[order], all_v[order], period


def vitals_strip_height(width: int, height: int) -> int:
    """Height of the strip stacked under a ``width`` x ``height`` picture (even, >= 48)."""
    strip = max(48, round(min(height, width * 9 / 16) * 0.16))
    return strip + strip % 2


def draw_vitals_strip(strip: np.ndarray, view: VitalsView) -> None:
    """Draw the strip (black background, trace on the left, numerics on the right) in place."""
    height, width = strip.shape[:2]
    strip[:] = 16
    cv2.line(strip, (0, 0), (width - 1, 0), (70, 70, 70), 1)
    pad = max(3, height // 12)
    numerics_w = min(width // 2, round(height * 5.2))
    trace_x0, trace_x1 = pad, width - numerics_w - pad
    _draw_trace(strip, view, trace_x0, pad, trace_x1, height - pad)
    _draw_numerics(strip, view, width - numerics_w, numerics_w, height)


def _draw_trace(strip: np.ndarray, view: VitalsView, x0: int, y0: int, x1: int, y1: int) -> None:
    if x1 - x0 < 20 or view.trace_kind is None or len(view.trace_t) < 2:
        label_scale = _text_scale(max(10, (y1 - y0) * 0.3), 1)
        cv2.putText(
            strip,
            "no waveform",
            (x0 + 4, (y0 + y1) // 2),
            _FONT,
            label_scale,
            STALE_COLOR,
            1,
            cv2.LINE_AA,
        )
        return
    values = view.trace_v
    if view.trace_kind == "ecg_ii":
        low, high = -0.8, 1.6  # fixed gain in mV, as a monitor (a flat line stays flat)
        color: BGR = ECG_COLOR
        label = "II"
    else:
        low, high = float(values.min()), float(values.max())
        if high - low < 1e-9:
            low, high = low - 1.0, high + 1.0
        color = SPO2_COLOR
        label = "Pleth"
    xs = x0 + (view.trace_t + TRACE_MS) / TRACE_MS * (x1 - x0)
    ys = y1 - (np.clip(values, low, high) - low) / (high - low) * (y1 - y0)
    breaks = np.nonzero(np.diff(view.trace_t) > view.trace_gap_ms)[0] + 1
    runs = []
    for run_x, run_y in zip(np.split(xs, breaks), np.split(ys, breaks), strict=True):
        if len(run_x) >= 2:
            run_x, run_y = _envelope(run_x, run_y)
            runs.append(np.round(np.stack([run_x, run_y], axis=1) * _ONE).astype(np.int32))
    if runs:
        cv2.polylines(strip, runs, False, color, max(1, (y1 - y0) // 40), cv2.LINE_AA, _SHIFT)
    cv2.putText(
        strip,
        label,
        (x0 + 2, y0 + max(10, (y1 - y0) // 4)),
        _FONT,
        _text_scale(max(9, (y1 - y0) * 0.25), 1),
        color,
        1,
        cv2.LINE_AA,
    )


def _envelope(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most two points (min, max) per pixel column: 4 s at 500 Hz is 2000 samples for a few
    hundred columns, and anti-aliased polylines cost per point; spikes keep their height."""
    columns = np.floor(xs).astype(np.int64)
    if len(xs) <= 2 * (int(columns[-1]) - int(columns[0]) + 1):
        return xs, ys
    starts = np.concatenate(([0], np.flatnonzero(np.diff(columns)) + 1))
    low, high = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)
    return np.repeat(columns[starts] + 0.5, 2), np.stack([low, high], axis=1).ravel()


def _draw_numerics(strip: np.ndarray, view: VitalsView, x: int, width: int, height: int) -> None:
    def show(value: float | None) -> str:
        return "--" if value is None else str(round(value))

    sys_, dia = view.numerics.get("nibp_sys"), view.numerics.get("nibp_dia")
    nibp = "--" if sys_ is None and dia is None else f"{show(sys_)}/{show(dia)}"
    boxes = [
        ("HR", show(view.numerics.get("hr")), ECG_COLOR, 1.0),
        ("SpO2 %", show(view.numerics.get("spo2")), SPO2_COLOR, 1.0),
        ("NIBP", nibp, NIBP_COLOR, 1.6),
    ]
    total = sum(b[3] for b in boxes)
    label_px = max(9, height * 0.2)
    value_px = max(12, height * 0.5)
    label_scale = _text_scale(label_px, 1)
    value_thick = max(1, round(value_px / 14))
    left = float(x)
    for label, value, color, share in boxes:
        box_w = width * share / total
        shown = color if value != "--" else STALE_COLOR
        cv2.putText(
            strip,
            label,
            (round(left + 4), round(height * 0.28)),
            _FONT,
            label_scale,
            LABEL_COLOR,
            1,
            cv2.LINE_AA,
        )
        scale = _text_scale(value_px, value_thick)
        (tw, _), _ = cv2.getTextSize(value, _FONT, scale, value_thick)
        if tw > box_w - 8:
            scale *= (box_w - 8) / tw
        cv2.putText(
            strip,
            value,
            (round(left + 4), round(height * 0.86)),
            _FONT,
            scale,
            shown,
            value_thick,
            cv2.LINE_AA,
        )
        left += box_w
