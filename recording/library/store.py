"""The recordings directory: find, load and resolve recordings without leaving it.

Every path is built from a checked id and a checked file name, resolved, and required to lie
inside the recording's own directory; only files the manifest names (plus its event log and
thumbnail) are served. Blocking file-system calls: run them off the event loop.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from orbridge.recording.manifest import (
    MANIFEST,
    Manifest,
    check_file_name,
    check_recording_id,
)

logger = logging.getLogger(__name__)

__all__ = ["THUMBNAIL", "RecordingNotFound", "RecordingStore"]

THUMBNAIL = "thumbnail.jpg"


class RecordingNotFound(LookupError):
    pass


class RecordingStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # Manifests by id with the mtime they were read at: a library page re-reads only
        # the recordings that changed.
        self._cache: dict[str, tuple[float, Manifest]] = {}

    def directory(self, recording_id: str) -> Path:
        """The directory of a recording id (ValueError for an unsafe id)."""
        check_recording_id(recording_id)
        root = self.root.resolve()
        path = (root / recording_id).resolve()
        if path.parent != root:
            raise ValueError(f"not a recording id: {recording_id!r}")
        return path

    def load(self, recording_id: str) -> Manifest:
        directory = self.directory(recording_id)
        path = directory / MANIFEST
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError as exc:
            raise RecordingNotFound(recording_id) from exc
        cached = self._cache.get(recording_id)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        manifest = Manifest.load(directory)
        self._cache[recording_id] = (mtime, manifest)
        return manifest

    def list(self) -> list[Manifest]:
        """Every readable recording, newest first (unreadable ones are logged and skipped)."""
        manifests = []
        if not self.root.is_dir():
            return []
        for entry in self.root.iterdir():
            if not (entry / MANIFEST).is_file():
                continue
            try:
                manifests.append(self.load(entry.name))
            except (ValueError, KeyError, TypeError, OSError, json.JSONDecodeError) as exc:
                logger.warning("skipping recording %s: %s", entry.name, exc)
        manifests.sort(key=lambda m: m.started_ms, reverse=True)
        return manifests

    def file_path(self, recording_id: str, name: str) -> Path:
        """A file of a recording that may be served (RecordingNotFound / ValueError)."""
        check_file_name(name)
        manifest = self.load(recording_id)
        allowed = set(manifest.files()) | {manifest.events, THUMBNAIL}
        if name not in allowed:
            raise RecordingNotFound(f"{recording_id}/{name}")
        directory = self.directory(recording_id)
        path = (directory / name).resolve()
        if path.parent != directory:
            raise ValueError(f"not a recording file name: {name!r}")
        if not path.is_file():
            raise RecordingNotFound(f"{recording_id}/{name}")
        return path
