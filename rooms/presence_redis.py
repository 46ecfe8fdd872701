"""Presence kept in Redis, shared by every node of a hospital group.

Keys (prefix `orbridge:` by default):
  rooms                 ZSET  room -> latest deadline of any member
  room:{room}:alive     ZSET  identity -> deadline (ms, Redis server clock)
  room:{room}:data      HASH  identity -> participant JSON
  nodes                 ZSET  node id -> deadline
  node:{id}             STRING node JSON, expiring with its TTL

Deadlines are taken from Redis's own clock (TIME inside the scripts), so nodes
with skewed clocks still agree on who is alive. Every mutation is one Lua
script, so a record is claimed by exactly one node when it expires and an old
connection can never remove or refresh the record of the one that replaced it.
Every key also carries a Redis expiry, so a whole cluster lost at once leaves
nothing behind (the ghosts of LiveKit issues #989 and #4316).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import ParamSpec, TypeVar

import redis.asyncio as redis_async

from orbridge.rooms.errors import PresenceUnavailable
from orbridge.rooms.participant import Participant
from orbridge.rooms.presence import (
    NodeInfo,
    PresenceKey,
    PresenceStore,
    RoomSummary,
    join_order,
    summarize,
)
from orbridge.rooms.redis_connect import redacted, redis_client

log = logging.getLogger("orbridge.presence")
P = ParamSpec("P")
T = TypeVar("T")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: alive, data, rooms. ARGV: identity, json, ttl_ms, room.
_ADD = (
    _NOW
    + """
local ttl = tonumber(ARGV[3])
local previous = false
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > now then
  previous = redis.call('HGET', KEYS[2], ARGV[1])
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], 'GT', now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
return previous
"""
)

# KEYS: alive, data, rooms. ARGV: identity, sid, room.
_REMOVE = (
    _NOW
    + """
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return false end
if cjson.decode(raw)['sid'] ~= ARGV[2] then return false end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('ZREM', KEYS[3], ARGV[3]) end
if score and tonumber(score) > now then return raw end
return false
"""
)

# KEYS: alive, data. ARGV: identity, sid, json.
_REPLACE = (
    _NOW
    + """
local raw = redis.call('HGET', KEYS[2], ARGV[1])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not raw or not score or tonumber(score) <= now then return 0 end
if cjson.decode(raw)['sid'] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""
)

# KEYS: rooms, then (alive, data) per entry. ARGV: ttl_ms, then (room, identity, sid) per entry.
# Returns the 0-based indexes of entries that are gone.
_REFRESH = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
local lost = {}
local n = (#ARGV - 1) / 3
for i = 0, n - 1 do
  local room, identity, sid = ARGV[2 + i * 3], ARGV[3 + i * 3], ARGV[4 + i * 3]
  local alive, data = KEYS[2 + i * 2], KEYS[3 + i * 2]
  local raw = redis.call('HGET', data, identity)
  local score = redis.call('ZSCORE', alive, identity)
  if raw and score and tonumber(score) > now and cjson.decode(raw)['sid'] == sid then
    redis.call('ZADD', alive, now + ttl, identity)
    redis.call('ZADD', KEYS[1], 'GT', now + ttl, room)
    redis.call('PEXPIRE', alive, ttl * 2)
    redis.call('PEXPIRE', data, ttl * 2)
  else
    table.insert(lost, i)
  end
end
return lost
"""
)

# KEYS: alive, data, rooms. ARGV: room. Claims and returns the expired records of one room.
_REAP_ROOM = (
    _NOW
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
local claimed = {}
for _, identity in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[2], identity)
  if raw then table.insert(claimed, raw) end
  redis.call('ZREM', KEYS[1], identity)
  redis.call('HDEL', KEYS[2], identity)
end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('ZREM', KEYS[3], ARGV[1]) end
return claimed
"""
)

# KEYS: alive, data. Live records of one room.
_LIVE = (
    _NOW
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""
)

# KEYS: nodes, node. ARGV: node id, json, ttl_ms.
_REGISTER_NODE = (
    _NOW
    + """
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return 1
"""
)

# KEYS: nodes. The ids of live nodes.
_LIVE_NODES = (
    _NOW
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""
)

# KEYS: rooms. Rooms with a live member (their latest deadline is in the future).
_LIVE_ROOMS = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '+inf')
"""
)


def _guarded(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Redis being away is `PresenceUnavailable` (a domain error callers degrade on), never a
    raw connection error."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (redis_async.RedisError, OSError) as exc:
            raise PresenceUnavailable() from exc

    return call


class RedisPresence(PresenceStore):
    backend = "redis"

    def __init__(self, url: str, ttl_ms: int, prefix: str = "orbridge:") -> None:
        super().__init__(ttl_ms)
        self.url = url
        self.prefix = prefix
        # Every call is one short Lua script: a Redis that takes a second to answer is hung,
        # and the room must not wait longer than that for presence (it degrades instead).
        self._redis: redis_async.Redis = redis_client(
            url, decode_responses=True, socket_connect_timeout=1.0, socket_timeout=1.0
        )
        self._add = self._redis.register_script(_ADD)
        self._remove = self._redis.register_script(_REMOVE)
        self._replace = self._redis.register_script(_REPLACE)
        self._refresh = self._redis.register_script(_REFRESH)
        self._reap_room = self._redis.register_script(_REAP_ROOM)
        self._live = self._redis.register_script(_LIVE)
        self._register_node = self._redis.register_script(_REGISTER_NODE)
        self._live_nodes = self._redis.register_script(_LIVE_NODES)
        self._live_rooms = self._redis.register_script(_LIVE_ROOMS)

    # keys -------------------------------------------------------------------
    def _alive(self, room: str) -> str:
        return f"{self.prefix}room:{room}:alive"

    def _data(self, room: str) -> str:
        return f"{self.prefix}room:{room}:data"

    @property
    def _rooms_key(self) -> str:
        return f"{self.prefix}rooms"

    @property
    def _nodes_key(self) -> str:
        return f"{self.prefix}nodes"

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    # lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        # A node starts without Redis: the heartbeat connects when it appears.
        if not await self.ping():
            log.error("presence: Redis at %s is unavailable; starting degraded", redacted(self.url))

    async def close(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (redis_async.RedisError, OSError):
            return False

    # nodes --------------------------------------------------------------------
    @_guarded
    async def register_node(self, node: NodeInfo) -> None:
        await self._register_node(
            keys=[self._nodes_key, self._node_key(node.node_id)],
            args=[node.node_id, json.dumps(node.public()), self.ttl_ms],
        )

    @_guarded
    async def unregister_node(self, node_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._nodes_key, node_id)
            pipe.delete(self._node_key(node_id))
            await pipe.execute()

    @_guarded
    async def nodes(self) -> list[NodeInfo]:
        ids = await self._live_nodes(keys=[self._nodes_key])
        if not ids:
            return []
        raws = await self._redis.mget([self._node_key(i) for i in ids])
        return [NodeInfo(**json.loads(raw)) for raw in raws if raw]

    @_guarded
    async def live_node_ids(self) -> set[str]:
        # The deadlines alone, not the node records (whose own expiry may come a moment sooner).
        return set(await self._live_nodes(keys=[self._nodes_key]))

    # participants -------------------------------------------------------------
    @_guarded
    async def add(self, participant: Participant) -> Participant | None:
        room = participant.room
        previous = await self._add(
            keys=[self._alive(room), self._data(room), self._rooms_key],
            args=[participant.identity, participant.to_json(), self.ttl_ms, room],
        )
        return Participant.from_json(previous) if previous else None

    @_guarded
    async def remove(self, key: PresenceKey) -> Participant | None:
        raw = await self._remove(
            keys=[self._alive(key.room), self._data(key.room), self._rooms_key],
            args=[key.identity, key.sid, key.room],
        )
        return Participant.from_json(raw) if raw else None

    @_guarded
    async def replace(self, participant: Participant) -> bool:
        room = participant.room
        done = await self._replace(
            keys=[self._alive(room), self._data(room)],
            args=[participant.identity, participant.sid, participant.to_json()],
        )
        return bool(done)

    @_guarded
    async def refresh(self, keys: Iterable[PresenceKey]) -> list[PresenceKey]:
        entries = list(keys)
        if not entries:
            return []
        script_keys = [self._rooms_key]
        args: list[str | int] = [self.ttl_ms]
        for key in entries:
            script_keys += [self._alive(key.room), self._data(key.room)]
            args += [key.room, key.identity, key.sid]
        lost = await self._refresh(keys=script_keys, args=args)
        return [entries[int(i)] for i in lost]

    async def get(self, room: str, identity: str) -> Participant | None:
        for participant in await self.participants(room):
            if participant.identity == identity:
                return participant
        return None

    @_guarded
    async def participants(self, room: str) -> list[Participant]:
        raws = await self._live(keys=[self._alive(room), self._data(room)])
        return sorted((Participant.from_json(raw) for raw in raws if raw), key=join_order)

    async def _room_names(self) -> list[str]:
        return list(await self._live_rooms(keys=[self._rooms_key]))

    @_guarded
    async def rooms(self) -> list[RoomSummary]:
        summaries = []
        for room in sorted(await self._room_names()):
            members = await self.participants(room)
            if members:
                summaries.append(summarize(room, members))
        return summaries

    @_guarded
    async def reap(self) -> list[Participant]:
        claimed: list[Participant] = []
        for room in await self._room_names():
            raws = await self._reap_room(
                keys=[self._alive(room), self._data(room), self._rooms_key], args=[room]
            )
            claimed += [Participant.from_json(raw) for raw in raws]
        return claimed
