"""python-socketio's Redis manager, with its cross-node publishes queued and bounded in time.

python-socketio delivers an emit to this node's clients first and then awaits the publish to
Redis. A Redis that hangs (a frozen host: the connection open, nothing answered) made that
await, and every handler that emits, wait for good: no event of the room was answered. Here
the publish only queues the message (bounded; the oldest gives way, counted) and one task
sends the queue in order, each send bounded in time: the room on this node never waits for
Redis, and other nodes get the news when Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import socketio

log = logging.getLogger("orbridge.signaling")


class QueuedRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    def __init__(self, url: str, *, channel: str, redis_options: dict[str, Any],
                 queue_size: int = 10_000, send_timeout: float = 3.0) -> None:  # fmt: skip
        super().__init__(url, channel=channel, redis_options=redis_options)
        self._outbox: deque[Any] = deque()
        self._queue_size = queue_size
        self._send_timeout = send_timeout
        self._wake: asyncio.Event | None = None
        self._sender: asyncio.Task[None] | None = None
        self._dropped = 0
        self._healthy = True

    async def _publish(self, data: Any) -> None:
        if len(self._outbox) >= self._queue_size:
            self._outbox.popleft()
            self._dropped += 1
        self._outbox.append(data)
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(
                self._send_loop(), name="socketio-redis-publish"
            )
            self._sender.add_done_callback(_log_failure)

    async def _send_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                data = self._outbox[0]
                try:
                    async with asyncio.timeout(self._send_timeout):
                        sent = await super()._publish(data)
                except TimeoutError:
                    sent = None
                    self.connected = False  # a fresh connection next time
                if sent is None:  # not sent (super() logged why, or it timed out)
                    self._state(False)
                    await asyncio.sleep(0.5)
                    continue
                self._outbox.popleft()
                self._state(True)

    def _state(self, healthy: bool) -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if healthy:
            log.info("Socket.IO fan-out to other nodes: Redis answers again (%d dropped while "
                     "away)", self._dropped)  # fmt: skip
            self._dropped = 0
        else:
            log.warning("Socket.IO fan-out to other nodes: Redis does not answer; this node's "
                        "clients are served, other nodes get the news later")  # fmt: skip


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the Socket.IO publish task failed", exc_info=task.exception())
