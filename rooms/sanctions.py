"""Bans and revoked tokens, shared by every node of a group.

A moderator's `remove_participant` bans that identity from that room (for a chosen time, or
for the rest of the consultation: until the room closes) and revokes the removed session's
token chain (the token it joined with and every token refreshed from it). Both are checked at
connect, at join and at `refresh_token`.

Enforcement is local first: a node that made a sanction, or read one, enforces it whatever
Redis does. With Redis, sanctions are written to `{prefix}ban:{room}` (a hash of identity to
the end of the ban in ms, expiring with its last ban) and `{prefix}revoked:{chain}` (expiring
with the chain's longest possible token); a write that fails is kept and retried, so an outage
delays a ban's reach to other nodes but never loses it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as redis_async

from orbridge.rooms.redis_connect import redis_client

log = logging.getLogger("orbridge.rooms")

# HSET, then make the hash live as long as its longest ban (Redis >= 6.2, no EXPIRE GT/NX).
_BAN = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local t = redis.call('TIME')
local left = tonumber(ARGV[2]) - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if left > 0 and redis.call('PTTL', KEYS[1]) < left then
  redis.call('PEXPIRE', KEYS[1], left)
end
return 1
"""
MAX_PENDING = 10_000  # sanctions waiting for Redis; beyond, the oldest is only enforced locally


def now_ms() -> int:
    return int(time.time() * 1000)


class Sanctions:
    def __init__(self, redis_url: str | None = None, prefix: str = "orbridge:",
                 retry_s: float = 1.0) -> None:  # fmt: skip
        self.prefix = prefix
        self._bans: dict[tuple[str, str], int] = {}  # (room, identity) -> until ms
        self._revoked: dict[str, int] = {}  # chain -> until ms
        self._redis: redis_async.Redis | None = (
            redis_client(redis_url, decode_responses=True, socket_connect_timeout=2.0,
                         socket_timeout=2.0) if redis_url else None
        )  # fmt: skip
        self._ban_script = self._redis.register_script(_BAN) if self._redis else None
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._retry_s = retry_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reachable = True

    async def start(self) -> None:
        if self._redis is not None:
            self._task = asyncio.create_task(self._retry_loop(), name="sanctions-retry")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    # -- writes ------------------------------------------------------------------------------
    async def ban(self, room: str, identity: str, until_ms: int) -> None:
        self._bans[(room, identity)] = max(until_ms, self._bans.get((room, identity), 0))
        await self._write("ban", (room, identity, until_ms))

    async def revoke(self, chain: str, until_ms: int) -> None:
        if not chain:
            return
        self._revoked[chain] = max(until_ms, self._revoked.get(chain, 0))
        await self._write("revoke", (chain, until_ms))

    async def clear_room(self, room: str) -> None:
        """The consultation ended: its bans end with it."""
        for key in [k for k in self._bans if k[0] == room]:
            del self._bans[key]
        self._pending = [p for p in self._pending if not (p[0] == "ban" and p[1][0] == room)]
        await self._write("clear", (room,))

    # -- reads -------------------------------------------------------------------------------
    async def banned_until(self, room: str, identity: str) -> int | None:
        """The end (ms) of this identity's ban from this room, or None."""
        now = now_ms()
        until = self._bans.get((room, identity))
        if until is not None and until <= now:
            del self._bans[(room, identity)]
            until = None
        if until is None and self._redis is not None:
            try:
                raw = await self._redis.hget(self._ban_key(room), identity)
            except (redis_async.RedisError, OSError) as exc:
                self._state(False, exc)
                raw = None
            else:
                self._state(True)
            if raw is not None and int(raw) > now:
                until = self._bans[(room, identity)] = int(raw)
        return until

    async def revoked(self, chain: str) -> bool:
        if not chain:
            return False
        now = now_ms()
        until = self._revoked.get(chain)
        if until is not None and until > now:
            return True
        if self._redis is not None:
            try:
                raw = await self._redis.get(self._revoked_key(chain))
            except (redis_async.RedisError, OSError) as exc:
                self._state(False, exc)
                return False
            self._state(True)
            if raw is not None and int(raw) > now:
                self._revoked[chain] = int(raw)
                return True
        return False

    # -- Redis -------------------------------------------------------------------------------
    def _ban_key(self, room: str) -> str:
        return f"{self.prefix}ban:{room}"

    def _revoked_key(self, chain: str) -> str:
        return f"{self.prefix}revoked:{chain}"

    async def _write(self, op: str, args: tuple[Any, ...]) -> None:
        if self._redis is None:
            return
        if self._pending or not await self._apply(op, args):
            if len(self._pending) >= MAX_PENDING:
                dropped = self._pending.pop(0)
                log.error("sanctions: %s kept on this node only (Redis away too long)", dropped[0])
            self._pending.append((op, args))
            self._wake.set()

    async def _apply(self, op: str, args: tuple[Any, ...]) -> bool:
        assert self._redis is not None
        try:
            if op == "ban":
                room, identity, until = args
                assert self._ban_script is not None
                await self._ban_script(keys=[self._ban_key(room)], args=[identity, until])
            elif op == "revoke":
                chain, until = args
                await self._redis.set(self._revoked_key(chain), until, pxat=until)
            else:
                await self._redis.delete(self._ban_key(args[0]))
        except (redis_async.RedisError, OSError) as exc:
            self._state(False, exc)
            return False
        self._state(True)
        return True

    async def _retry_loop(self) -> None:
        while True:
            await self._wake.wait()
            while self._pending:
                op, args = self._pending[0]
                if not await self._apply(op, args):
                    await asyncio.sleep(self._retry_s)
                    continue
                self._pending.pop(0)
            self._wake.clear()

    def _state(self, reachable: bool, exc: BaseException | None = None) -> None:
        if reachable != self._reachable:
            self._reachable = reachable
            if reachable:
                log.info("sanctions: Redis reachable again; %d waiting", len(self._pending))
            else:
                log.warning("sanctions: Redis unreachable (%s); enforced on this node, "
                            "written when it returns", type(exc).__name__)  # fmt: skip
