"""De-identification for exports: mask burned-in patient data, blur out-of-body frames.

**Regions.** Endoscopy towers burn the patient's name, ID and date into fixed places of the
picture. Those rectangles (fractions of the picture: ``x, y, w, h``) are filled with solid
black, rounded outwards to whole pixels so no anti-aliased edge of a letter survives.

**Out of body.** When the scope is withdrawn it films the operating room: faces, screens,
whiteboards. A laparoscopic picture inside the body is reddish tissue (often inside a dark
circular vignette); outside it is bright and grey, green or blue. The detector looks at the
central part of a small copy of the frame (the corners hold tower text and the vignette),
ignores dark pixels, and scores the fraction of the lit ones that are saturated red to orange
(OpenCV hue <= 20 or >= 165, saturation >= 90). Decisions use hysteresis (out below
:data:`ENTER_OUT`, back in only above :data:`EXIT_OUT`), a frame too dark to judge (the scope
in the trocar) keeps the current state, and in-body runs shorter than ``gap_frames`` between
out-of-body frames are blurred too (the flicker of a scope being moved). Entering is never
delayed: the first out-of-body frame is already blurred. Those frames are replaced by a
strong blur (a 1/32 downscale, blurred and scaled back), which leaves colours but no shapes.

Limits: a heuristic. Smoke, gauze or a white-balance card fill the view with grey and are
blurred (harmless for privacy, a loss for teaching); a close-up of reddish skin (the abdomen
before the first trocar) or a red surface outside the body counts as in-body and is *not*
blurred. Review an export before it leaves the hospital.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = [
    "ENTER_OUT",
    "EXIT_OUT",
    "DeidentifyReport",
    "OutOfBodyDetector",
    "OutOfBodyRange",
    "Region",
    "blur_frame",
    "check_region",
    "in_body_score",
    "mask_regions",
    "region_pixels",
]

Region = tuple[float, float, float, float]
"""x, y, width, height as fractions of the picture."""

ENTER_OUT = 0.25
"""In-body score under which a frame is out of body (synthetic: in-body ~0.9, out ~0.02)."""
EXIT_OUT = 0.45
"""Score a frame needs to count as in-body again once out of body (hysteresis)."""
MIN_LIT = 0.05
"""Fraction of the analysed area that must be lit for a frame to be judged at all."""
DEFAULT_GAP_FRAMES = 5

_ANALYSIS_SIZE = (96, 54)  # (w, h): colour statistics need no detail
_CENTRE = 0.42  # analysed ellipse: radii as fractions of the width and height
_LIT = 45  # HSV value (0-255) below which a pixel is vignette or shadow
_SATURATED = 90
_RED_HUE_MAX, _RED_HUE_MIN = 20, 165  # OpenCV hue 0-180: red to orange (fat)
_BLUR_FACTOR = 32


def check_region(region: Sequence[float]) -> Region:
    """A region inside the picture, as fractions (ValueError otherwise)."""
    if len(region) != 4:
        raise ValueError(f"a region is x,y,w,h (4 fractions), not {list(region)}")
    x, y, w, h = (float(v) for v in region)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"region {[x, y, w, h]} has a non-finite value")
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
        raise ValueError(f"region {[x, y, w, h]} is not inside the picture (fractions)")
    return (x, y, w, h)


def region_pixels(region: Region, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel rectangle (x, y, w, h) covering the region, rounded outwards and clipped."""
    x, y, w, h = region
    x0, y0 = max(0, math.floor(x * width)), max(0, math.floor(y * height))
    x1 = min(width, math.ceil((x + w) * width - 1e-9))
    y1 = min(height, math.ceil((y + h) * height - 1e-9))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def mask_regions(image: np.ndarray, regions: Sequence[Region]) -> None:
    """Fill each region with solid black, in place."""
    height, width = image.shape[:2]
    for region in regions:
        x, y, w, h = region_pixels(region, width, height)
        image[y : y + h, x : x + w] = 0


def _shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average to a small size; a stride first, as OpenCV's area resize is slow (~3 ms
    at 720p) for ratios that are not whole numbers."""
    h, w = image.shape[:2]
    step = max(1, min(w // (2 * width), h // (2 * height)))
    return cv2.resize(image[::step, ::step], (width, height), interpolation=cv2.INTER_AREA)


def blur_frame(image: np.ndarray) -> None:
    """Replace the picture by a strong blur, in place: colours survive, faces and text not."""
    height, width = image.shape[:2]
    small = _shrink(image, max(4, width // _BLUR_FACTOR), max(4, height // _BLUR_FACTOR))
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    cv2.resize(small, (width, height), dst=image, interpolation=cv2.INTER_LINEAR)


_centre_masks: dict[tuple[int, int], np.ndarray] = {}


def _centre_mask(width: int, height: int) -> np.ndarray:
    mask = _centre_masks.get((width, height))
    if mask is None:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        dx = (xx + 0.5 - width / 2) / (_CENTRE * width)
        dy = (yy + 0.5 - height / 2) / (_CENTRE * height)
        mask = dx * dx + dy * dy <= 1.0
        _centre_masks[(width, height)] = mask
    return mask


def in_body_score(image: np.ndarray) -> float | None:
    """Fraction of the lit central pixels that look like tissue; None if too dark to tell."""
    small = _shrink(image, *_ANALYSIS_SIZE)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    centre = _centre_mask(*_ANALYSIS_SIZE)
    hue, sat, val = hsv[:, :, 0][centre], hsv[:, :, 1][centre], hsv[:, :, 2][centre]
    lit = val >= _LIT
    count = int(lit.sum())
    if count < MIN_LIT * centre.sum():
        return None
    warm = lit & (sat >= _SATURATED) & ((hue <= _RED_HUE_MAX) | (hue >= _RED_HUE_MIN))
    return int(warm.sum()) / count


class OutOfBodyDetector:
    """Streaming out-of-body decisions with hysteresis and gap filling.

    :meth:`push` takes a frame's score (:func:`in_body_score`) and returns the decisions
    (True = out of body) now settled, oldest first; after an out-of-body frame, in-body frames
    are held back until ``gap_frames`` of them in a row confirm the scope is back in (so
    the caller must buffer at most ``gap_frames`` frames). :meth:`flush` settles the rest.
    """

    def __init__(self, gap_frames: int = DEFAULT_GAP_FRAMES) -> None:
        self.gap_frames = max(1, gap_frames)
        self._out = False  # hysteresis state
        self._held = 0  # in-body frames held after an out-of-body one
        self._after_out = False

    def push(self, score: float | None) -> list[bool]:
        if score is not None:
            if self._out and score > EXIT_OUT:
                self._out = False
            elif not self._out and score < ENTER_OUT:
                self._out = True
        if self._out:
            settled = [True] * (self._held + 1)  # a short in-body gap is blurred too
            self._held, self._after_out = 0, True
            return settled
        if not self._after_out:
            return [False]
        self._held += 1
        if self._held >= self.gap_frames:
            settled = [False] * self._held
            self._held, self._after_out = 0, False
            return settled
        return []

    def flush(self) -> list[bool]:
        settled = [False] * self._held
        self._held, self._after_out = 0, False
        return settled


@dataclass
class OutOfBodyRange:
    first_frame: int
    last_frame: int
    start: float
    """Output media time (s) of the first blurred frame."""
    end: float
    """Output media time (s) where the range ends (the next frame's time)."""
    start_ms: int | None = None
    """Recording timeline (ms since the epoch) of the first frame."""
    end_ms: int | None = None

    @property
    def frames(self) -> int:
        return self.last_frame - self.first_frame + 1


@dataclass
class DeidentifyReport:
    """What de-identification did to an export."""

    regions: list[Region] = field(default_factory=list)
    regions_source: str = "none"
    """``flags`` (--mask), ``settings`` (deidentify_regions) or ``none``."""
    region_pixels: list[tuple[int, int, int, int]] = field(default_factory=list)
    frames: int = 0
    out_of_body_frames: int = 0
    out_of_body_ranges: list[OutOfBodyRange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def record(
        self, index: int, out_of_body: bool, time_s: float, next_s: float, wall_ms: float | None
    ) -> None:
        """Count frame ``index`` (output order) and extend or open an out-of-body range."""
        self.frames += 1
        if not out_of_body:
            return
        self.out_of_body_frames += 1
        last = self.out_of_body_ranges[-1] if self.out_of_body_ranges else None
        wall = None if wall_ms is None else round(wall_ms)
        if last is not None and last.last_frame == index - 1:
            last.last_frame, last.end = index, next_s
            last.end_ms = wall if wall is None else wall + round(1000 * (next_s - time_s))
        else:
            end_ms = None if wall is None else wall + round(1000 * (next_s - time_s))
            self.out_of_body_ranges.append(
                OutOfBodyRange(index, index, time_s, next_s, wall, end_ms)
            )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["regions"] = [list(r) for r in self.regions]
        data["region_pixels"] = [list(r) for r in self.region_pixels]
        data["out_of_body_ranges"] = [
            {**asdict(r), "frames": r.frames, "start": round(r.start, 3), "end": round(r.end, 3)}
            for r in self.out_of_body_ranges
        ]
        return data

    def summary(self) -> str:
        if self.regions:
            masked = f"masked {len(self.regions)} region(s) ({self.regions_source})"
        else:
            masked = "no regions configured: nothing masked"
        ranges = ", ".join(f"{r.start:.2f}-{r.end:.2f} s" for r in self.out_of_body_ranges)
        blurred = f"blurred {self.out_of_body_frames}/{self.frames} out-of-body frames"
        return f"{masked}; {blurred}" + (f" ({ranges})" if ranges else "")
