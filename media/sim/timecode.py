"""The timestamp code stamped into synthetic frames, and its reader.

The code sits in the black bottom-left corner of the picture at :func:`code_rect`: the capture
wall-clock time (ms since the epoch, 44 bits) and a frame counter (20 bits, modulo
``FRAME_MODULO``) with a CRC-16, as 10 x 10 black/white blocks (8 data rows between a start
and a stop guard row of alternating blocks). Blocks are ``height / 30`` pixels (24 px at
720p), so the code survives VP8/H.264 at 1-2.5 Mbps and a downscale to half size.
:func:`encode_bits` and :func:`code_pixels` are what the renderer
(:class:`orbridge.media.sim.scene.SyntheticScene`) stamps; :func:`read_timestamp` reads it
back, which measures glass-to-glass latency end to end.

The geometry is expressed in fractions of the frame, so a reader needs nothing but the
picture.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CODE_RECT_720P",
    "FRAME_MODULO",
    "code_pixels",
    "code_rect",
    "decode_bits",
    "encode_bits",
    "read_timestamp",
]

Rect = tuple[int, int, int, int]  # x, y, width, height in pixels

MS_BITS = 44  # ms since the epoch fit in 44 bits until the year 2527
FRAME_BITS = 20
FRAME_MODULO = 1 << FRAME_BITS
"""The frame counter in the code wraps at this value (about 9.7 h at 30 fps)."""

_CODE_COLS = 10
_DATA_ROWS = 8  # 80 bits: 44 ms + 20 frame + 16 CRC
_CODE_ROWS = _DATA_ROWS + 2  # plus a start and a stop guard row
_CELLS_PER_HEIGHT = 30  # block edge = height / 30
_CODE_MARGIN = 0.6  # in blocks, from the left and bottom edges
_START_GUARD = np.array([1, 0] * (_CODE_COLS // 2), np.uint8)
_STOP_GUARD = 1 - _START_GUARD
_MIN_CONTRAST = 60.0  # white guard mean minus black guard mean, in 8-bit luma


# --- geometry ------------------------------------------------------------------------------


def _code_geometry(width: int, height: int) -> tuple[float, float, float]:
    """(x0, y0, block) of the code grid in float pixels: same fractions at every scale."""
    block = height / _CELLS_PER_HEIGHT
    x0 = _CODE_MARGIN * block
    y0 = height - (_CODE_MARGIN + _CODE_ROWS) * block
    return x0, y0, block


def code_rect(width: int, height: int) -> Rect:
    """Pixel rectangle (x, y, w, h) covered by the timestamp code."""
    x0, y0, block = _code_geometry(width, height)
    x1, y1 = round(x0 + _CODE_COLS * block), round(y0 + _CODE_ROWS * block)
    return round(x0), round(y0), x1 - round(x0), y1 - round(y0)


CODE_RECT_720P: Rect = code_rect(1280, 720)


def code_pixels(width: int, height: int) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Per pixel of the code rectangle: which block row/column it shows.

    ``(rows, cols, row_index, col_index)``: the rectangle's slices of the frame and, per
    pixel row and column, the block of :func:`encode_bits`'s grid it shows, so that
    ``frame[rows, cols] = grid[row_index][:, col_index]`` stamps the code.
    """
    x, y, w, h = code_rect(width, height)
    x0, y0, block = _code_geometry(width, height)
    rows = np.clip(((np.arange(y, y + h) + 0.5 - y0) // block).astype(int), 0, _CODE_ROWS - 1)
    cols = np.clip(((np.arange(x, x + w) + 0.5 - x0) // block).astype(int), 0, _CODE_COLS - 1)
    return slice(y, y + h), slice(x, x + w), rows, cols


# --- the timestamp code --------------------------------------------------------------------


def _crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): 8 bytes a frame, plain Python is fine."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode_bits(ms: int, frame_no: int) -> np.ndarray:
    """The 10 x 10 block grid (1 = white) for a timestamp and frame number."""
    payload = ((ms & ((1 << MS_BITS) - 1)) << FRAME_BITS) | (frame_no % FRAME_MODULO)
    value = (payload << 16) | _crc16(payload.to_bytes(8, "big"))
    bits = [(value >> (79 - i)) & 1 for i in range(80)]
    grid = np.empty((_CODE_ROWS, _CODE_COLS), np.uint8)
    grid[0] = _START_GUARD
    grid[1:-1] = np.array(bits, np.uint8).reshape(_DATA_ROWS, _CODE_COLS)
    grid[-1] = _STOP_GUARD
    return grid


def decode_bits(grid: np.ndarray) -> tuple[int, int] | None:
    """Inverse of :func:`encode_bits`: (ms, frame_no), or None when guards or CRC disagree."""
    if grid.shape != (_CODE_ROWS, _CODE_COLS):
        return None
    if not (np.array_equal(grid[0], _START_GUARD) and np.array_equal(grid[-1], _STOP_GUARD)):
        return None
    value = 0
    for bit in grid[1:-1].reshape(-1):
        value = (value << 1) | int(bit)
    payload, crc = value >> 16, value & 0xFFFF
    if _crc16(payload.to_bytes(8, "big")) != crc:
        return None
    return payload >> FRAME_BITS, payload & (FRAME_MODULO - 1)


def _sample_grid(image: np.ndarray) -> np.ndarray | None:
    """Mean level of the central part of every block (block edges blur under compression).

    Works on gray or colour alike: the blocks are black or white, so the mean over the
    channels is as good as a weighted luma.
    """
    height, width = image.shape[:2]
    x0, y0, block = _code_geometry(width, height)
    if block < 3 or y0 < 0 or x0 + _CODE_COLS * block > width:
        return None
    means = np.empty((_CODE_ROWS, _CODE_COLS))
    inset = 0.3 * block
    for row in range(_CODE_ROWS):
        top = y0 + row * block
        r0, r1 = round(top + inset), round(top + block - inset)
        for col in range(_CODE_COLS):
            left = x0 + col * block
            c0, c1 = round(left + inset), round(left + block - inset)
            means[row, col] = image[r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)].mean()
    return means


def _read_plane(image: np.ndarray) -> tuple[int, int] | None:
    means = _sample_grid(image)
    if means is None:
        return None
    guards = np.concatenate([means[0], means[-1]])
    pattern = np.concatenate([_START_GUARD, _STOP_GUARD]).astype(bool)
    white, black = guards[pattern].mean(), guards[~pattern].mean()
    if white - black < _MIN_CONTRAST:
        return None
    grid = (means > (white + black) / 2).astype(np.uint8)
    return decode_bits(grid)


def read_timestamp(image: np.ndarray) -> tuple[int, int] | None:
    """Read ``(capture ms since the epoch, frame number)`` from a frame, or None.

    ``image`` is BGR/RGB ``(h, w, 3)``, gray ``(h, w)`` or planar YUV 4:2:0 ``(h * 3 / 2, w)``
    (what ``VideoFrame.to_ndarray()`` gives for ``yuv420p``): a 2-D array is tried as gray
    first, then as I420. The frame may be scaled (the geometry is relative) but not cropped.
    None means unreadable: no code, guard rows wrong, too little contrast, or a CRC mismatch.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 16:
        return None
    found = _read_plane(image)
    if found is None and image.ndim == 2 and image.shape[0] % 3 == 0:
        found = _read_plane(image[: image.shape[0] * 2 // 3])
    return found
