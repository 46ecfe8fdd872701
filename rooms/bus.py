"""The room bus: messages about a room reach every node (the sender's too).

In-process for one node; one Redis pub/sub channel per kind of message for several. Vitals and
annotations travel on it; each node fans what it receives out to its own clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis_async

log = logging.getLogger("orbridge.bus")

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


class RoomBus(ABC):
    @abstractmethod
    async def start(self, deliver: Deliver) -> None: ...

    @abstractmethod
    async def publish(self, message: dict[str, Any]) -> None: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


class LocalBus(RoomBus):
    """One node: deliver at once."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, message: dict[str, Any]) -> None:
        if self._deliver is not None:
            await self._deliver(message)


class RedisBus(RoomBus):
    """Several nodes: one Redis pub/sub channel; every node, the publisher too, receives."""

    def __init__(self, url: str, channel: str) -> None:
        self.channel = channel
        self._redis = redis_async.Redis.from_url(url, socket_connect_timeout=2.0)
        self._task: asyncio.Task[None] | None = None
        self.up = False

    async def start(self, deliver: Deliver) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel)
        self.up = True
        self._task = asyncio.create_task(self._run(pubsub, deliver), name=f"bus:{self.channel}")

    async def _run(self, pubsub: Any, deliver: Deliver) -> None:
        while True:
            try:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                await deliver(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except (redis_async.RedisError, OSError) as exc:
                if self.up:
                    log.error("bus %s lost Redis: %s", self.channel, exc)
                self.up = False
                await asyncio.sleep(1.0)
                with contextlib.suppress(redis_async.RedisError, OSError):
                    await pubsub.subscribe(self.channel)
                    self.up = True
            except Exception:  # a bad message must not stop the bus
                log.exception("bus %s could not deliver a message", self.channel)

    async def publish(self, message: dict[str, Any]) -> None:
        await self._redis.publish(self.channel, json.dumps(message, separators=(",", ":")))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()
