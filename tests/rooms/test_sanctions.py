"""The sanctions store: bans and revoked chains, local first, shared through a real Redis,
kept and retried through an outage."""

from __future__ import annotations

import asyncio
import uuid

from orbridge.rooms.sanctions import Sanctions, now_ms
from tests.support import RedisProcess


async def test_in_process_bans_expire_and_end_with_the_room() -> None:
    store = Sanctions()
    await store.ban("or-1", "dr-wang", now_ms() + 300)
    await store.ban("or-1", "dr-li", now_ms() + 60_000)
    await store.ban("or-2", "dr-li", now_ms() + 60_000)
    assert await store.banned_until("or-1", "dr-wang") is not None
    assert await store.banned_until("or-1", "nobody") is None
    await asyncio.sleep(0.4)
    assert await store.banned_until("or-1", "dr-wang") is None
    await store.clear_room("or-1")
    assert await store.banned_until("or-1", "dr-li") is None
    assert await store.banned_until("or-2", "dr-li") is not None
    await store.revoke("chain-1", now_ms() + 60_000)
    assert await store.revoked("chain-1") and not await store.revoked("chain-2")
    assert not await store.revoked("")


async def test_redis_shares_sanctions_between_nodes_and_expires_them(redis_url: str) -> None:
    prefix = f"sanctions-{uuid.uuid4().hex[:8]}:"
    a, b = Sanctions(redis_url, prefix), Sanctions(redis_url, prefix)
    await a.start()
    await b.start()
    try:
        until = now_ms() + 60_000
        await a.ban("or-1", "dr-wang", until)
        await a.revoke("chain-9", now_ms() + 400)
        assert await b.banned_until("or-1", "dr-wang") == until
        assert await b.revoked("chain-9")
        await asyncio.sleep(0.6)
        c = Sanctions(redis_url, prefix)  # a node that never saw it: Redis expired it
        assert not await c.revoked("chain-9")
        await c.close()
        await b.clear_room("or-1")
        fresh = Sanctions(redis_url, prefix)
        assert await fresh.banned_until("or-1", "dr-wang") is None
        await fresh.close()
    finally:
        await a.close()
        await b.close()


async def test_a_ban_made_during_an_outage_reaches_other_nodes_when_redis_returns() -> None:
    with RedisProcess() as redis:
        a = Sanctions(redis.url, "s:", retry_s=0.1)
        await a.start()
        try:
            redis.stop()
            until = now_ms() + 60_000
            await a.ban("or-1", "dr-wang", until)  # no exception: kept and retried
            await a.revoke("chain-1", until)
            assert await a.banned_until("or-1", "dr-wang") == until  # enforced here at once
            redis.start()
            b = Sanctions(redis.url, "s:")
            try:
                for _ in range(100):
                    if await b.banned_until("or-1", "dr-wang") and await b.revoked("chain-1"):
                        break
                    await asyncio.sleep(0.05)
                assert await b.banned_until("or-1", "dr-wang") == until
                assert await b.revoked("chain-1")
            finally:
                await b.close()
        finally:
            await a.close()
