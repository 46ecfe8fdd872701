"""RecordingService: a node's recordings (start/stop per room, the store the library reads)."""

from __future__ import annotations

from pathlib import Path

from recording.store import RecordingStore

__all__ = ["RecordingService"]


class RecordingService:
    def __init__(self, directory: str | Path, node_id: str) -> None:
        self.directory = Path(directory)
        self.node_id = node_id
        self.store = RecordingStore(self.directory)
