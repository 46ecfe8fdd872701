"""Annotation latency: from an expert's `annotate` to its arrival at the OR client, with N
participants in the room (all of whom receive every annotation).

The server (`orbridge serve`, pinned to core 0) relays; the clients (this process, core 1) are
one expert drawing arrows and pointers at 20 a second, one OR (surgeon) client, and N-2 trainees.
Latency = arrival at the OR (this machine's clock) - `sent_ms` (the expert's clock, the same
machine). Prints one JSON object.

    .venv/bin/python -m benchmarks.annotations --participants 50 --duration 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from typing import Any

from benchmarks.common import cpu_seconds, percentile, pinned_server
from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import RoomClient

SECRET = "annotation-benchmark-secret-0123456789ab"


async def run(participants: int, duration: float, url: str, pid: int) -> dict[str, Any]:
    def client(role: Role, identity: str) -> RoomClient:
        token = tokens.mint(SECRET, room="bench", role=role, name=identity, identity=identity)
        return RoomClient(url, token)

    or_latency: list[float] = []
    everyone_latency: list[float] = []
    surgeon = client(Role.SURGEON, "county-or")

    async def at_or(data: dict[str, Any]) -> None:
        or_latency.append(time.time() * 1000 - data["sent_ms"])

    surgeon.on("annotation", at_or)
    watchers = [client(Role.TRAINEE, f"trainee-{i}") for i in range(participants - 2)]
    for w in watchers:

        async def seen(data: dict[str, Any]) -> None:
            everyone_latency.append(time.time() * 1000 - data["sent_ms"])

        w.on("annotation", seen)
    expert = client(Role.EXPERT, "dr-wang")
    for c in [surgeon, *watchers, expert]:
        await c.connect()
        await c.join()
    rng = random.Random(7)
    sent = 0
    start = time.monotonic()
    c0 = cpu_seconds(pid)
    while time.monotonic() - start < duration:
        x, y = rng.random() * 0.8, rng.random() * 0.8
        kind = "pointer" if sent % 2 else "arrow"
        points = [[x, y]] if kind == "pointer" else [[x, y], [x + 0.1, y + 0.1]]
        now_ms = int(time.time() * 1000)
        payload = {"type": kind, "track_id": "TR_0123456789ab", "points": points, "sent_ms": now_ms}
        await expert.request("annotate", payload)
        sent += 1
        await asyncio.sleep(max(0.0, start + sent * 0.05 - time.monotonic()))
    await asyncio.sleep(0.5)
    cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - start)
    for c in [surgeon, *watchers, expert]:
        await c.close()
    return {
        "participants": participants, "annotations": sent, "at_or": len(or_latency),
        "deliveries_to_trainees": len(everyone_latency),
        "complete": len(or_latency) == sent and len(everyone_latency) == sent * len(watchers),
        "or_latency_ms": {"p50": percentile(or_latency, 50), "p99": percentile(or_latency, 99),
                          "max": round(max(or_latency), 2)},
        "all_latency_ms": {"p50": percentile(everyone_latency, 50),
                           "p99": percentile(everyone_latency, 99)},
        "server_cpu": round(cpu, 3),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--duration", type=float, default=15.0)
    opts = parser.parse_args()
    with pinned_server(SECRET) as (server, url):
        os.sched_setaffinity(0, {1})  # the clients on the other core
        print(json.dumps(asyncio.run(run(opts.participants, opts.duration, url, server.pid))))


if __name__ == "__main__":
    main()
