"""Vitals fan-out: a 500 Hz ECG (40 ms batches) plus numerics to N Socket.IO subscribers.

The server (`orbridge serve`, pinned to core 0) receives batches from one device client and
fans them out; N expert clients (in this process, pinned to core 1) record when each batch
arrives. Latency = arrival (this machine's clock) - `received_ms` (the server's clock on ingest,
the same machine's clock). Prints one JSON object.

    .venv/bin/python -m benchmarks.vitals --subscribers 50 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from typing import Any

from benchmarks.common import cpu_seconds, percentile, pinned_server
from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import RoomClient

SECRET = "vitals-benchmark-secret-0123456789abcdef"
RATE = 500
BATCH_S = 0.04


async def run(subscribers: int, duration: float, url: str, server_pid: int) -> dict[str, Any]:
    def token(role: Role, identity: str) -> str:
        return tokens.mint(SECRET, room="bench", role=role, name=identity, identity=identity)

    latencies: list[float] = []
    received = [0] * subscribers
    clients = []
    for i in range(subscribers):
        client = RoomClient(url, token(Role.EXPERT, f"viewer-{i}"))

        async def on_vitals(data: dict[str, Any], i: int = i) -> None:
            latencies.append(time.time() * 1000 - data["received_ms"])
            received[i] += 1

        client.on("vitals", on_vitals)
        await client.connect()
        await client.join()
        clients.append(client)
    device = RoomClient(url, token(Role.DEVICE, "monitor"))
    await device.connect()
    await device.join()

    batch_samples = round(RATE * BATCH_S)
    sent = 0
    start = time.monotonic()
    c0 = cpu_seconds(server_pid)
    seq = 0
    while time.monotonic() - start < duration:
        t_ms = time.time() * 1000
        samples = [round(math.sin(2 * math.pi * 1.2 * (seq * BATCH_S + k / RATE)), 4)
                   for k in range(batch_samples)]  # fmt: skip
        wave = {"kind": "ecg_ii", "start_ms": t_ms, "rate_hz": RATE, "seq": seq, "samples": samples}
        payload: dict[str, Any] = {"waveforms": [wave]}
        if seq % 25 == 0:  # numerics once a second
            payload["numerics"] = [{"kind": "hr", "value": 72}, {"kind": "spo2", "value": 98}]
        await device.request("publish_vitals", payload)
        sent += 1
        seq += 1
        await asyncio.sleep(max(0.0, start + seq * BATCH_S - time.monotonic()))
    await asyncio.sleep(0.5)
    cpu = (cpu_seconds(server_pid) - c0) / (time.monotonic() - start)
    for client in [*clients, device]:
        await client.close()
    return {
        "subscribers": subscribers, "batches_sent": sent, "ecg_hz": RATE,
        "batch_ms": BATCH_S * 1000, "deliveries": len(latencies),
        "complete": all(r == sent for r in received),
        "latency_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                       "max": round(max(latencies), 2)},
        "server_cpu": round(cpu, 3),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20.0)
    opts = parser.parse_args()
    with pinned_server(SECRET) as (server, url):
        os.sched_setaffinity(0, {1})  # the clients on the other core
        print(json.dumps(asyncio.run(run(opts.subscribers, opts.duration, url, server.pid))))


if __name__ == "__main__":
    main()
