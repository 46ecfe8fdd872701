"""A subscription's RTP origin: what a subscriber saw maps back to the source frame."""

from __future__ import annotations

from orbridge.media.subscriber_track import unwrap


def test_unwrap_picks_the_lap_nearest_the_track() -> None:
    assert unwrap(5, None) == 5
    assert unwrap(5, 2**32 + 10) == 2**32 + 5  # 13 h into a 90 kHz track
    assert unwrap(2**32 - 5, 2**32 + 3) == 2**32 - 5  # just before the wrap
    assert unwrap(10, 3 * 2**32 - 100) == 3 * 2**32 + 10
