"""The event log of a recording: one JSON object per line, written off the event loop.

The loop only puts the event into a bounded queue (:meth:`EventLog.append`, O(1), never
blocks); a thread serializes, appends, flushes each batch and ``fsync``s every couple of
seconds. A full queue (the disk stalls) drops the oldest kind of data first: waveform-bearing
``vitals`` events are refused when the queue is over 3/4 full, everything else only when it is
full. Readers skip a torn last line (a ``kill -9`` mid-write).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orbridge.recording.files import make_private_dir, private_opener

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_EVENT_QUEUE", "EventLog", "EventLogStats", "iter_events", "read_events"]

DEFAULT_EVENT_QUEUE = 4096
"""Events queued for the writer: minutes of a busy room (vitals batches every 200 ms,
annotations at 30/s per expert); the bound caps memory when the disk stalls."""
_STOP = object()


@dataclass
class EventLogStats:
    written: int = 0
    bytes: int = 0
    dropped: int = 0
    fsyncs: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


class EventLog:
    """Appends events to ``path`` (created with its directory on the first event).

    :param on_error: called once with the exception, on ``loop`` if given, when a write fails;
        later events are dropped (counted) rather than retried against a failing disk.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        queue_size: int = DEFAULT_EVENT_QUEUE,
        loop: asyncio.AbstractEventLoop | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        fsync_interval: float = 2.0,
    ) -> None:
        self.path = Path(path)
        self.stats = EventLogStats()
        self.error: BaseException | None = None
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._soft_limit = max(1, queue_size * 3 // 4)
        self._loop = loop
        self._on_error = on_error
        self._fsync_interval = fsync_interval
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"events:{self.path}", daemon=True)
        self._thread.start()

    def append(self, event: dict[str, Any]) -> bool:
        """Queue ``event`` (it must carry ``t`` and ``type``). False when dropped."""
        if self.error is not None or self._closing:
            self.stats.dropped += 1
            return False
        if event.get("type") == "vitals" and self._queue.qsize() >= self._soft_limit:
            self.stats.dropped += 1
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.stats.dropped += 1
            return False
        return True

    async def close(self, grace: float = 10.0) -> None:
        await asyncio.to_thread(self.close_sync, grace)

    def close_sync(self, timeout: float = 10.0) -> None:
        self._closing = True
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        handle = None
        last_fsync = time.monotonic()
        stop = False
        while not stop:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 256:
                    batch.append(self._queue.get_nowait())
            if batch[-1] is _STOP or _STOP in batch:
                stop = True
                batch = [e for e in batch if e is not _STOP]
            if self.error is not None:
                self.stats.dropped += len(batch)
                continue
            if not batch:
                continue
            try:
                if handle is None:
                    make_private_dir(self.path.parent)
                    handle = open(  # noqa: SIM115
                        self.path, "a", encoding="utf-8", opener=private_opener
                    )
                text = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in batch)
                handle.write(text)
                handle.flush()
                self.stats.written += len(batch)
                self.stats.bytes += len(text)
                now = time.monotonic()
                if now - last_fsync >= self._fsync_interval:
                    os.fsync(handle.fileno())
                    self.stats.fsyncs += 1
                    last_fsync = now
            except Exception as exc:  # disk full, permissions: reported, never fatal
                self._fail(exc)
                self.stats.dropped += len(batch)
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(Exception):
                handle.close()

    def _fail(self, exc: BaseException) -> None:
        if self.error is not None:
            return
        self.error = exc
        logger.error("event log %s failed: %s", self.path, exc)
        callback, loop = self._on_error, self._loop
        if callback is None:
            return
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, exc)
        else:
            callback(exc)


def iter_events(path: str | Path) -> Iterator[dict[str, Any]]:
    """Events of a log in order; a torn or garbled line (a crash mid-write) is skipped."""
    try:
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.endswith("\n"):
                return  # torn last line
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("t"), int | float):
                yield event


def read_events(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_events(path))
