"""How long after a node is killed (SIGKILL) do its participants leave presence?

Two `orbridge serve` processes share a Redis (our own redis-server on a free loopback port, or
--redis URL). N participants join on node B, a watcher on node A; node B is killed, and we time
(1) until `GET /api/rooms/{room}` on node A no longer lists them and (2) until the watcher has
received `participant_left` (reason `timeout`) for each. Repeated --runs times; prints JSON.

    .venv/bin/python -m benchmarks.presence_expiry --runs 3 --participants 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import urllib.request
import uuid

from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import RoomClient
from tests.support import SECRET, ServerProcess, redis_server

API_KEY = "presence-expiry-bench"


def listed(node: ServerProcess, room: str) -> int:
    request = urllib.request.Request(f"{node.url}/api/rooms/{room}", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, timeout=5) as response:
        return len(json.loads(response.read())["participants"])


async def one_run(redis_url: str, participants: int, extra: list[str]) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    args = ["--redis", redis_url, "--api-key", API_KEY, *extra]
    env = {"ORBRIDGE_REDIS_PREFIX": prefix}
    a = ServerProcess(*args, "--node-id", "bench-a", env=env)
    b = ServerProcess(*args, "--node-id", "bench-b", env=env)
    clients: list[RoomClient] = []
    try:

        def token(role: Role, identity: str) -> str:
            return tokens.mint(SECRET, room="or-1", role=role, name=identity, identity=identity)

        watcher = RoomClient(a.url, token(Role.MODERATOR, "watcher"))
        await watcher.connect()
        await watcher.join()
        clients.append(watcher)
        for i in range(participants):
            c = RoomClient(b.url, token(Role.EXPERT, f"p{i}"))
            await c.connect()
            await c.join()
            clients.append(c)
        assert await asyncio.to_thread(listed, a, "or-1") == participants + 1
        b.kill()
        killed = time.monotonic()
        gone_from_api = None
        left = 0
        deadline = killed + 30
        while time.monotonic() < deadline and (gone_from_api is None or left < participants):
            if gone_from_api is None and await asyncio.to_thread(listed, a, "or-1") == 1:
                gone_from_api = time.monotonic() - killed
            left += len(
                [e for e in watcher.pending("participant_left") if e["reason"] == "timeout"]
            )
            await asyncio.sleep(0.05)
        told = time.monotonic() - killed
        return {"gone_from_presence_s": round(gone_from_api or float("nan"), 2),
                "room_told_s": round(told, 2), "participant_left_events": left}  # fmt: skip
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        a.stop()
        b.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--redis", help="use this Redis instead of starting one")
    parser.add_argument("--presence-ttl", default=None, help="seconds (server default: 10)")
    opts = parser.parse_args()
    extra = ["--presence-ttl", opts.presence_ttl] if opts.presence_ttl else []
    with contextlib.ExitStack() as stack:
        url = opts.redis or stack.enter_context(redis_server())
        runs = [await one_run(url, opts.participants, extra) for _ in range(opts.runs)]
    gone = [r["gone_from_presence_s"] for r in runs]
    print(json.dumps({
        "participants": opts.participants, "presence_ttl_s": float(opts.presence_ttl or 10),
        "runs": runs, "gone_max_s": max(gone), "gone_median_s": statistics.median(gone),
    }))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
