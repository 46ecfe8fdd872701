"""A laparoscopy-like synthetic picture, stamped with a machine-readable timestamp code.

No laparoscopy clips can be shipped or downloaded, so the publisher, the load tests and the
de-identification tests use this picture instead. It imitates what an endoscopy tower sends:

* a **circular scope view** (black outside the circle, vignetted towards the rim) centred in
  the frame, showing reddish tissue with vessels, fat and wet highlights, panning slowly as a
  hand-held scope does;
* a **moving instrument** (metallic shaft entering from the lower right, grasper jaws that
  open and close) drawn inside the circle;
* a **burned-in fake patient banner** in the black top-left corner at :func:`banner_rect`
  (``BANNER_RECT`` in fractions of the frame, ``BANNER_RECT_720P`` in pixels), as towers
  burn name, ID and date into the picture. De-identification must blank this rectangle;
* optionally an **out-of-body segment** (scope withdrawn: a bright grey-green operating room
  with a face-like ellipse) for ``out_of_body_seconds`` every ``out_of_body_every`` seconds;
* a **timestamp code** in the black bottom-left corner (capture wall-clock time and frame
  number): its bits, geometry and reader are in :mod:`orbridge.media.sim.timecode`.

The geometry is expressed in fractions of the frame, so a reader needs nothing but the
picture. It is laid out for 16:9; for narrower frames the scope circle shrinks so it never
covers the banner or the code.

Cost: textures are built once per size; a frame only crops a shifted window, draws the
instrument, multiplies the vignette and writes the code blocks into the scope's bounding box
(about 1.5 ms at 1280x720 on one core, colour conversion included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from orbridge.media.sim.timecode import Rect, code_pixels, code_rect, encode_bits

__all__ = [
    "BANNER_LINES",
    "BANNER_RECT",
    "BANNER_RECT_720P",
    "SyntheticScene",
    "banner_rect",
    "scope_circle",
]

BANNER_LINES = ("PATIENT ZHANG SAN", "ID 0012345", "2026-11-22")
"""The fake patient data burned into every frame (a made-up name, ID and date)."""

BANNER_RECT = (0.0125, 0.0222, 0.2, 0.16)
"""Banner rectangle as fractions (x / width, y / height, w / width, h / height)."""

_SCOPE_RADIUS = 0.46  # of the height, shrunk if the frame is too narrow for it


# --- geometry ------------------------------------------------------------------------------


def banner_rect(width: int, height: int) -> Rect:
    """Pixel rectangle (x, y, w, h) of the burned-in patient banner in a frame of this size."""
    fx, fy, fw, fh = BANNER_RECT
    return (round(fx * width), round(fy * height), round(fw * width), round(fh * height))


def scope_circle(width: int, height: int) -> tuple[float, float, float]:
    """(cx, cy, radius) of the scope view; it never reaches the banner or the code."""
    cx, cy = width / 2, height / 2
    radius = _SCOPE_RADIUS * height
    margin = 0.02 * height
    bx, by, bw, bh = banner_rect(width, height)
    kx, ky, kw, _ = code_rect(width, height)
    for corner in ((bx + bw, by + bh), (kx + kw, ky)):
        radius = min(radius, math.hypot(corner[0] - cx, corner[1] - cy) - margin)
    return cx, cy, max(radius, 0.1 * height)


BANNER_RECT_720P: Rect = banner_rect(1280, 720)
"""The banner at 1280x720: (16, 16, 256, 115)."""


# --- texture synthesis (once per size) -----------------------------------------------------


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1]: random cells upscaled bicubically."""
    small = rng.random((cells + 3, cells + 3), dtype=np.float32)
    big = cv2.resize(
        small, (size + 3 * size // cells, size + 3 * size // cells), interpolation=cv2.INTER_CUBIC
    )
    off = size // cells
    return np.clip(big[off : off + size, off : off + size], 0.0, 1.0)


def _fractal(rng: np.random.Generator, size: int, octaves: tuple[int, ...]) -> np.ndarray:
    total = np.zeros((size, size), np.float32)
    weight = 0.0
    for i, cells in enumerate(octaves):
        amplitude = 0.55**i
        total += amplitude * _noise(rng, size, cells)
        weight += amplitude
    total /= weight
    return (total - total.min()) / max(float(total.max() - total.min()), 1e-6)


def _tissue_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """Reddish wet tissue: mottled base, yellow fat islands, branching vessels, highlights."""
    base = _fractal(rng, size, (3, 7, 17, 41))
    mottle = _fractal(rng, size, (5, 13, 29))
    fat = _fractal(rng, size, (4, 9))
    image = np.empty((size, size, 3), np.float32)
    image[:, :, 2] = 140 + 90 * base  # red dominates everywhere
    image[:, :, 1] = 38 + 40 * mottle * base
    image[:, :, 0] = 42 + 32 * mottle
    fat_mask = np.clip((fat - 0.68) * 6.0, 0.0, 1.0)[:, :, None]
    fat_color = np.array([70, 170, 225], np.float32)  # BGR pale yellow
    image = image * (1 - 0.8 * fat_mask) + fat_color * (0.8 * fat_mask)

    vessels = np.zeros((size, size), np.float32)
    scale = size / 800
    for _ in range(int(10 + 6 * rng.random())):
        _draw_vessel(vessels, rng, scale, depth=0)
    vessels = cv2.GaussianBlur(vessels, (0, 0), 1.2 * max(scale, 0.5))
    vessel_color = np.array([55, 25, 95], np.float32)  # dark purplish red
    strength = np.clip(vessels, 0.0, 1.0)[:, :, None] * 0.85
    image = image * (1 - strength) + vessel_color * strength

    # Wet highlights: small bright blobs.
    shine = np.zeros((size, size), np.float32)
    for _ in range(int(18 * scale * scale) + 6):
        center = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (int(2 + 9 * scale * rng.random()), int(1 + 4 * scale * rng.random()))
        cv2.ellipse(shine, center, axes, float(rng.random() * 180), 0, 360, 1.0, -1)
    shine = cv2.GaussianBlur(shine, (0, 0), 3.0 * max(scale, 0.5))[:, :, None]
    image = image + (255 - image) * np.clip(1.6 * shine, 0.0, 0.7)
    grain = rng.normal(0.0, 3.0, (size, size, 1)).astype(np.float32)
    return np.clip(image + grain, 0, 255).astype(np.uint8)


def _draw_vessel(
    layer: np.ndarray,
    rng: np.random.Generator,
    scale: float,
    depth: int,
    start: tuple[float, float] | None = None,
    angle: float | None = None,
    thickness: float | None = None,
) -> None:
    size = layer.shape[0]
    x, y = start if start is not None else (rng.random() * size, rng.random() * size)
    angle = rng.random() * 2 * math.pi if angle is None else angle
    thickness = (2.0 + 5.0 * rng.random()) * scale if thickness is None else thickness
    points = [(x, y)]
    for _ in range(int(20 + 30 * rng.random())):
        angle += rng.normal(0.0, 0.25)
        step = (6 + 10 * rng.random()) * scale
        x, y = x + step * math.cos(angle), y + step * math.sin(angle)
        points.append((x, y))
        if depth < 2 and rng.random() < 0.06:
            branch = angle + rng.choice([-1, 1]) * (0.5 + rng.random())
            _draw_vessel(layer, rng, scale, depth + 1, (x, y), branch, thickness * 0.6)
    pts = np.array(points, np.float32)
    cv2.polylines(
        layer, [np.round(pts).astype(np.int32)], False, 1.0, max(1, round(thickness)), cv2.LINE_AA
    )


def _operating_room(size: int, rng: np.random.Generator) -> np.ndarray:
    """Scope withdrawn: bright grey-green room, a lamp, drapes and a masked face."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.empty((size, size, 3), np.float32)
    image[:, :, 0] = 150 + 40 * yy  # B
    image[:, :, 1] = 175 + 35 * (1 - yy)  # G: greenish walls
    image[:, :, 2] = 150 + 30 * xx
    # Green drapes across the lower third.
    drape = yy > 0.68
    image[drape] = (120, 150, 90)
    # Operating lamp: a bright disc.
    lamp = np.zeros((size, size), np.float32)
    cv2.circle(lamp, (int(0.78 * size), int(0.18 * size)), int(0.09 * size), 1.0, -1)
    lamp = cv2.GaussianBlur(lamp, (0, 0), 0.02 * size)[:, :, None]
    image = image * (1 - lamp) + 252 * lamp
    # Equipment rack.
    cv2.rectangle(
        image,
        (int(0.05 * size), int(0.25 * size)),
        (int(0.2 * size), int(0.7 * size)),
        (90, 95, 100),
        -1,
    )
    # A face under a cap and a mask (what de-identification must blur).
    cx, cy, ax, ay = int(0.45 * size), int(0.42 * size), int(0.11 * size), int(0.15 * size)
    cv2.ellipse(image, (cx, cy), (ax, ay), 0, 0, 360, (120, 160, 215), -1, cv2.LINE_AA)
    cv2.ellipse(
        image,
        (cx, cy - ay // 2),
        (int(ax * 1.05), ay // 2),
        0,
        180,
        360,
        (150, 120, 60),
        -1,
        cv2.LINE_AA,
    )  # cap
    cv2.ellipse(
        image,
        (cx, cy + ay // 3),
        (int(ax * 0.95), ay // 2),
        0,
        0,
        180,
        (210, 190, 150),
        -1,
        cv2.LINE_AA,
    )  # mask
    for dx in (-ax // 2, ax // 2):
        cv2.ellipse(
            image,
            (cx + dx, cy - ay // 10),
            (ax // 5, ay // 10),
            0,
            0,
            360,
            (40, 40, 50),
            -1,
            cv2.LINE_AA,
        )
    grain = rng.normal(0.0, 2.0, (size, size, 1)).astype(np.float32)
    return np.clip(image + grain, 0, 255).astype(np.uint8)


def _vignette(size: int, radius: float) -> np.ndarray:
    """uint8 3-channel mask: 255 at the centre, darker to the rim, 0 outside the circle."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.sqrt((xx - c) ** 2 + (yy - c) ** 2) / radius
    gain = 1.0 - 0.45 * d**2  # light falls off towards the rim
    rim = np.clip((1.0 - d) / 0.04, 0.0, 1.0)  # soft optical edge about 4 % of the radius
    mask = np.clip(255 * gain * rim, 0, 255).astype(np.uint8)
    return np.repeat(mask[:, :, None], 3, axis=2)


# --- the scene -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    width: int
    height: int
    box: Rect  # the scope's bounding square (clipped to the frame)
    radius: float
    pan: int  # texture margin for the scope's panning


class SyntheticScene:
    """Renders frames of one size. Not thread-safe: one renderer per thread (buffers reused).

    :param out_of_body_every: seconds between out-of-body segments (None or 0: never).
    :param out_of_body_seconds: length of each segment; the first starts after one period.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        *,
        seed: int = 7,
        out_of_body_every: float | None = None,
        out_of_body_seconds: float = 3.0,
    ) -> None:
        if width < 64 or height < 64 or width % 2 or height % 2:
            raise ValueError("frame size must be even and at least 64x64")
        self.width, self.height = width, height
        self.out_of_body_every = out_of_body_every or None
        self.out_of_body_seconds = out_of_body_seconds
        cx, cy, radius = scope_circle(width, height)
        side = math.ceil(2 * radius) + 2
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        pan = int(0.12 * height)
        self._layout = _Layout(width, height, (x0, y0, side, side), radius, pan)
        rng = np.random.default_rng(seed)
        self._tissue = _tissue_texture(side + 2 * pan, rng)
        self._room = _operating_room(side + 2 * pan, rng)
        self._mask = _vignette(side, radius)
        self._work = np.zeros((side, side, 3), np.uint8)
        self._frame = np.zeros((height, width, 3), np.uint8)
        self._banner = self._draw_banner()
        self.banner_rect = banner_rect(width, height)
        self.code_rect = code_rect(width, height)
        self._code_index = code_pixels(width, height)

    # -- static parts

    def _draw_banner(self) -> np.ndarray:
        _, _, w, h = banner_rect(self.width, self.height)
        banner = np.zeros((h, w, 3), np.uint8)
        font = cv2.FONT_HERSHEY_SIMPLEX
        line_h = h / len(BANNER_LINES)
        widest = max(cv2.getTextSize(t, font, 1.0, 2)[0][0] for t in BANNER_LINES)
        scale = min(w * 0.96 / widest, line_h * 0.62 / cv2.getTextSize("A", font, 1.0, 2)[0][1])
        thick = max(1, round(scale * 1.6))
        for i, text in enumerate(BANNER_LINES):
            baseline = int((i + 0.78) * line_h)
            cv2.putText(
                banner, text, (2, baseline), font, scale, (255, 255, 255), thick, cv2.LINE_AA
            )
        return banner

    # -- per frame

    def is_out_of_body(self, t: float) -> bool:
        """True while the scope is "withdrawn" at media time ``t`` (seconds)."""
        every = self.out_of_body_every
        if not every:
            return False
        return t >= every and (t % every) < self.out_of_body_seconds

    def render(self, t: float, wall_ms: int, frame_no: int) -> np.ndarray:
        """The BGR frame at media time ``t`` stamped with ``wall_ms`` and ``frame_no``.

        Returns an internal buffer that the next call overwrites: convert or copy it first.
        """
        lay = self._layout
        x0, y0, side, _ = lay.box
        out_of_body = self.is_out_of_body(t)
        # Slow hand-held panning (a Lissajous path over the texture margin).
        px = int(lay.pan * (1 + 0.85 * math.sin(0.23 * t)))
        py = int(lay.pan * (1 + 0.85 * math.sin(0.31 * t + 1.1)))
        source = self._room if out_of_body else self._tissue
        np.copyto(self._work, source[py : py + side, px : px + side])
        if not out_of_body:
            self._draw_instrument(t, side / 2, lay.radius)
        # Vignette and circular mask in one saturating multiply, written into the frame.
        fx0, fy0 = max(x0, 0), max(y0, 0)
        fx1, fy1 = min(x0 + side, self.width), min(y0 + side, self.height)
        region = self._frame[fy0:fy1, fx0:fx1]
        sx, sy = fx0 - x0, fy0 - y0
        cv2.multiply(
            self._work[sy : sy + fy1 - fy0, sx : sx + fx1 - fx0],
            self._mask[sy : sy + fy1 - fy0, sx : sx + fx1 - fx0],
            dst=region,
            scale=1 / 255,
        )
        bx, by, bw, bh = self.banner_rect
        self._frame[by : by + bh, bx : bx + bw] = self._banner
        rows, cols, row_idx, col_idx = self._code_index
        grid = encode_bits(wall_ms, frame_no) * 255
        self._frame[rows, cols] = grid[row_idx][:, col_idx][:, :, None]
        return self._frame

    def _draw_instrument(self, t: float, c: float, radius: float) -> None:
        """A grasper entering from the lower right: metallic shaft, jaws opening and closing."""
        work = self._work
        tip = np.array(
            [
                c + radius * (-0.12 + 0.28 * math.sin(0.61 * t)),
                c + radius * (-0.05 + 0.22 * math.sin(0.83 * t + 0.7)),
            ]
        )
        entry_angle = 0.55 + 0.12 * math.sin(0.4 * t)  # the trocar wobbles a little
        entry = c + 1.25 * radius * np.array([math.cos(entry_angle), math.sin(entry_angle)])
        axis = tip - entry
        axis /= max(float(np.linalg.norm(axis)), 1e-6)
        normal = np.array([-axis[1], axis[0]])
        half = 0.055 * radius
        jaw_len = 0.16 * radius
        base = tip - axis * jaw_len

        def quad(a: np.ndarray, b: np.ndarray, w0: float, w1: float) -> np.ndarray:
            pts = [a + normal * w0, b + normal * w0, b + normal * w1, a + normal * w1]
            return np.round(np.array(pts) * 16).astype(np.int32)  # 4 fractional bits

        shadow = quad(entry + 0.05 * radius, base + 0.05 * radius, -half, half)
        cv2.fillConvexPoly(work, shadow, (20, 15, 40), cv2.LINE_AA, 4)
        # Metal: dark edges, a bright specular stripe off-centre, like a lit cylinder.
        cv2.fillConvexPoly(work, quad(entry, base, -half, half), (95, 98, 104), cv2.LINE_AA, 4)
        cv2.fillConvexPoly(
            work, quad(entry, base, -0.55 * half, 0.25 * half), (160, 163, 170), cv2.LINE_AA, 4
        )
        cv2.fillConvexPoly(
            work, quad(entry, base, -0.3 * half, -0.05 * half), (232, 234, 238), cv2.LINE_AA, 4
        )
        # Joint ring.
        ring = quad(base - axis * 0.03 * radius, base, -1.05 * half, 1.05 * half)
        cv2.fillConvexPoly(work, ring, (60, 60, 66), cv2.LINE_AA, 4)
        opening = 0.08 + 0.32 * (0.5 + 0.5 * math.sin(2.1 * t))  # radians per jaw
        for side in (-1, 1):
            angle = side * opening
            cos_a, sin_a = math.cos(angle), math.sin(angle)
            direction = np.array(
                [axis[0] * cos_a - axis[1] * sin_a, axis[0] * sin_a + axis[1] * cos_a]
            )
            across = np.array([-direction[1], direction[0]])
            root = base + normal * side * 0.35 * half
            end = root + direction * jaw_len
            pts = np.array(
                [
                    root - across * 0.55 * half,
                    root + across * 0.55 * half,
                    end + across * 0.15 * half,
                    end - across * 0.15 * half,
                ]
            )
            cv2.fillConvexPoly(
                work, np.round(pts * 16).astype(np.int32), (185, 188, 195), cv2.LINE_AA, 4
            )
            cv2.polylines(
                work, [np.round(pts * 16).astype(np.int32)], True, (70, 70, 78), 1, cv2.LINE_AA, 4
            )
