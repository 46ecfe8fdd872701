"""The room bus: messages about a room reach every node (the sender's too).

In-process for one node; one Redis pub/sub channel per kind of message for several. Vitals and
annotations travel on it; each node fans what it receives out to its own clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis_async

from orbridge.rooms.redis_connect import redis_client

log = logging.getLogger("orbridge.bus")

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


Resync = Callable[[], Awaitable[None]]


class RoomBus(ABC):
    # Run after an outage, so that state that must not be lost is sent again (active alarms).
    on_resync: list[Resync]

    @abstractmethod
    async def start(self, deliver: Deliver) -> None: ...

    @abstractmethod
    async def publish(self, message: dict[str, Any], *, sticky: bool = False) -> None: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


class LocalBus(RoomBus):
    """One node: deliver at once."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self.on_resync = []  # one process never loses its bus

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, message: dict[str, Any], *, sticky: bool = False) -> None:
        if self._deliver is not None:
            await self._deliver(message)


class RedisBus(RoomBus):
    """Several nodes: one Redis stream per kind of message, capped at `history` entries.

    A message reaches this node's own subscribers at once, whatever Redis does, and goes to the
    other nodes through a bounded outbox that a background task drains into the stream,
    retrying while Redis is away. Each node reads the stream from the last entry it saw, so a
    node that lost Redis for a while gets what the others sent meanwhile when it is back (a
    pub/sub channel would have dropped it). Entries carry the sending bus's `origin` so that a
    node skips its own. After an outage (its own, or another node's that asks), `on_resync`
    hooks run so state that must not be lost (active alarms) is sent again; receivers treat it
    idempotently.
    """

    RESYNC = "bus_resync"

    def __init__(self, url: str, channel: str, outbox: int = 10_000, history: int = 10_000,
                 retry_s: float = 0.5) -> None:  # fmt: skip
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self._redis = redis_client(url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self._deliver: Deliver | None = None
        self._outbox: deque[tuple[bool, str]] = deque()  # (sticky, payload) oldest first
        self._outbox_limit = outbox
        self._history = history
        self._wake = asyncio.Event()
        self._retry_s = retry_s
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._settled = asyncio.Event()  # connected, or known to be away
        self._connect_wait_s = 2.0
        self.on_resync = []
        self.up = False  # reading the stream
        self._known = False  # whether `up` has been logged once
        self.stats = {"published": 0, "dropped": 0, "outages": 0, "resyncs": 0}

    async def start(self, deliver: Deliver) -> None:
        # Never fails: without Redis the node works alone and joins the others when it appears.
        self._deliver = deliver
        self._tasks = [
            asyncio.create_task(self._listen(), name=f"bus-listen:{self.channel}"),
            asyncio.create_task(self._send(), name=f"bus-send:{self.channel}"),
        ]
        # A normal start is connected when it returns; a start without Redis goes on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_wait_s):
                await self._settled.wait()

    async def publish(self, message: dict[str, Any], *, sticky: bool = False) -> None:
        """Deliver here now, and to the other nodes as soon as Redis takes it.

        `sticky` messages (alarms) are the last the bounded outbox gives up."""
        if self._deliver is not None:
            await self._deliver(message)
        self._enqueue(sticky, json.dumps({"origin": self.origin, "message": message},
                                         separators=(",", ":")))  # fmt: skip

    @property
    def backlog(self) -> int:
        return len(self._outbox)

    def _enqueue(self, sticky: bool, payload: str) -> None:
        if len(self._outbox) >= self._outbox_limit:
            victim = next((i for i, (keep, _) in enumerate(self._outbox) if not keep), 0)
            del self._outbox[victim]
            if self.stats["dropped"] == 0 or self.stats["dropped"] % 1000 == 0:
                log.error("bus %s: outbox full while Redis is away; dropping the oldest "
                          "messages for other nodes (%d so far)", self.channel,
                          self.stats["dropped"] + 1)  # fmt: skip
            self.stats["dropped"] += 1
        self._outbox.append((sticky, payload))
        self._wake.set()

    def _state(self, up: bool, why: str = "") -> None:
        """One log line per change of state (and for the first), never one per retry."""
        if up == self.up and self._known:
            return
        self._known, self.up = True, up
        self._settled.set()
        if up and self.stats["outages"] == 0:
            log.info("bus %s: connected to Redis", self.channel)
        elif up:
            log.warning("bus %s: Redis is back", self.channel)
        else:
            self.stats["outages"] += 1
            log.error("bus %s: Redis unavailable (%s); this node's own rooms go on, other "
                      "nodes get the news when it returns", self.channel, why)  # fmt: skip

    async def _send(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                _, payload = self._outbox[0]
                try:
                    await self._redis.xadd(
                        self.channel, {"d": payload}, maxlen=self._history, approximate=True
                    )
                except (redis_async.RedisError, OSError) as exc:
                    self._state(False, str(exc) or type(exc).__name__)
                    await asyncio.sleep(self._retry_s)
                    continue
                if self._outbox and self._outbox[0][1] is payload:
                    self._outbox.popleft()
                self.stats["published"] += 1

    async def _listen(self) -> None:
        last: str | None = None  # the last entry read; None: not connected yet
        while not self._closing:
            try:
                if last is None:  # start after the newest entry: history is not replayed
                    newest = await self._redis.xrevrange(self.channel, count=1)
                    last = _id(newest[0][0]) if newest else "0-0"
                    self._state(True)
                    self._wake.set()  # drain what waited
                    continue
                if not self.up:  # back after an outage: read on from `last`, then resync
                    await self._redis.ping()
                    self._state(True)
                    self._wake.set()
                    await self._resync(announce=True)
                batch = await self._redis.xread({self.channel: last}, count=500, block=1000)
                for _stream, entries in batch or []:
                    for entry_id, fields in entries:
                        last = _id(entry_id)
                        await self._entry(fields.get(b"d") or fields.get("d"))
            except asyncio.CancelledError:
                raise
            except (redis_async.RedisError, OSError) as exc:
                self._state(False, str(exc) or type(exc).__name__)
                await asyncio.sleep(self._retry_s)
            except Exception:  # a bad entry must not stop the bus
                log.exception("bus %s could not deliver a message", self.channel)

    async def _entry(self, raw: bytes | str | None) -> None:
        if raw is None:
            return
        envelope = json.loads(raw)
        if envelope.get("origin") == self.origin:
            return  # delivered here when it was published
        message = envelope["message"]
        if message.get("type") == self.RESYNC:
            await self._resync(announce=False)
        elif self._deliver is not None:
            await self._deliver(message)

    async def _resync(self, announce: bool) -> None:
        """Send again what must survive an outage; with `announce`, ask the others to as well."""
        self.stats["resyncs"] += 1
        if announce:
            self._enqueue(True, json.dumps({"origin": self.origin,
                                            "message": {"type": self.RESYNC}}))  # fmt: skip
        for hook in self.on_resync:
            try:
                await hook()
            except Exception:
                log.exception("bus %s: a resync hook failed", self.channel)

    async def close(self) -> None:
        # redis-py can turn a cancellation inside a command into a connection error, which
        # the loops would retry: the flag ends them, and the wait is bounded regardless.
        self._closing = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5.0)
            for task in pending:
                log.error("bus %s: %s did not stop", self.channel, task.get_name())
        with contextlib.suppress(redis_async.RedisError, OSError):
            await self._redis.aclose()


def _id(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id
