"""Track vocabulary: what a published track's `source` label may say."""

from __future__ import annotations

from typing import Literal, get_args

Source = Literal["laparoscope", "room-camera", "microphone", "screen", "camera"]
SOURCES: tuple[str, ...] = get_args(Source)
