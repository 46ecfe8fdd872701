"""A Redis outage under load: what the rooms still do, what they are told, how fast they heal.

Two `orbridge serve` processes share our own redis-server. Room `or-1` spans both nodes (a
monitor, a surgeon and an expert on node A, an expert on node B); room `or-2` lives on node A
alone. Redis stops for --outage seconds while, on both rooms, the monitor streams vitals at
10 Hz (with SpO2 dips that raise alarms), experts draw every 0.5 s and update every second,
and a newcomer joins. Counted per run:

* answers by error code during the outage (`internal_error` goal: 0; the single-node room's
  goal: no error at all);
* alarms raised during the outage, and how many reached each subscriber on the local node
  (at once) and on the other node, with the delay after Redis returned (goal: all, < 2 s);
* time until node B's presence lists node A's participants again after Redis returned.

    .venv/bin/python -m benchmarks.faults --runs 2 --outage 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import urllib.request
from collections import Counter
from typing import Any

from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from tests.support import SECRET, RedisProcess, ServerProcess

API_KEY = "faults-bench-api-key"
FAST = ("--presence-ttl", "3", "--heartbeat-interval", "0.5")
ARROW = {"type": "arrow", "track_id": "TR_0123456789ab", "points": [[0.2, 0.3], [0.5, 0.5]]}


def listed(node: ServerProcess, room: str) -> set[str]:
    request = urllib.request.Request(f"{node.url}/api/rooms/{room}", headers={"X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return set()
    if body.get("degraded"):
        return set()
    return {p["identity"] for p in body.get("participants", [])}


async def member(node: ServerProcess, room: str, role: Role, identity: str) -> RoomClient:
    token = tokens.mint(SECRET, room=room, role=role, name=identity, identity=identity)
    client = RoomClient(node.url, token, request_timeout=5.0)
    await client.connect()
    await client.join()
    return client


class Load:
    """Drives one room's participants and tallies every answer by code."""

    def __init__(self, monitor: RoomClient, experts: list[RoomClient]) -> None:
        self.monitor, self.experts = monitor, experts
        self.answers: Counter[str] = Counter()
        self.dips: list[float] = []  # monotonic times of the SpO2 dips sent

    async def _ask(self, client: RoomClient, event: str, payload: Any) -> None:
        try:
            await client.request(event, payload)
            self.answers["ok"] += 1
        except ProtocolError as exc:
            self.answers[exc.code] += 1
        except TimeoutError:
            self.answers["timeout"] += 1

    async def vitals(self, seconds: float) -> None:
        started = time.monotonic()
        tick = 0
        while time.monotonic() - started < seconds:
            # a dip every 2 s (an alarm), back to normal between (the alarm clears)
            low = tick % 20 in range(5, 10)
            if tick % 20 == 5:
                self.dips.append(time.monotonic())
            spo2 = 85.0 if low else 97.0
            numerics = [{"kind": "spo2", "value": spo2, "unit": "%"}]
            await self._ask(self.monitor, "publish_vitals", {"numerics": numerics})
            tick += 1
            await asyncio.sleep(0.1)

    async def experts_work(self, seconds: float) -> None:
        started = time.monotonic()
        tick = 0
        while time.monotonic() - started < seconds:
            for expert in self.experts:
                await self._ask(expert, "annotate", ARROW)
                if tick % 2 == 0:
                    quality = "poor" if tick % 4 else "good"
                    await self._ask(expert, "update", {"quality": quality})
            tick += 1
            await asyncio.sleep(0.5)


def alarm_ids(client: RoomClient) -> dict[str, float]:
    """Alarm ids this client has received, with when we took them off its queue."""
    now = time.monotonic()
    return {a["id"]: now for a in client.pending("alarm_raised")}


async def one_run(outage: float) -> dict[str, Any]:
    redis = RedisProcess().start()
    a = ServerProcess("--redis", redis.url, "--node-id", "node-a", "--api-key", API_KEY, *FAST)
    b = ServerProcess("--redis", redis.url, "--node-id", "node-b", "--api-key", API_KEY, *FAST)
    clients: list[RoomClient] = []
    try:
        spanning = [
            await member(a, "or-1", Role.DEVICE, "monitor-1"),
            await member(a, "or-1", Role.SURGEON, "dr-zhao"),
            await member(a, "or-1", Role.EXPERT, "dr-wang"),
            await member(b, "or-1", Role.EXPERT, "dr-li"),
        ]
        local = [
            await member(a, "or-2", Role.DEVICE, "monitor-2"),
            await member(a, "or-2", Role.EXPERT, "dr-sun"),
        ]
        clients += spanning + local
        here, there, lone = spanning[2], spanning[3], local[1]
        expected = {"monitor-1", "dr-zhao", "dr-wang", "dr-li"}
        deadline = time.monotonic() + 10
        while listed(b, "or-1") != expected:
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not form")
            await asyncio.sleep(0.1)

        loads = {
            "spanning": Load(spanning[0], [spanning[2]]),
            "single_node": Load(local[0], [local[1]]),
        }
        redis.stop()
        stopped = time.monotonic()
        newcomer_answer = "ok"
        work = [
            task
            for load in loads.values()
            for task in (load.vitals(outage), load.experts_work(outage))
        ]
        tasks = [asyncio.ensure_future(w) for w in work]
        await asyncio.sleep(outage / 2)
        try:
            clients.append(await member(a, "or-2", Role.TRAINEE, "student-chen"))
        except ProtocolError as exc:
            newcomer_answer = exc.code
        await asyncio.gather(*tasks)
        await asyncio.sleep(max(0.0, outage - (time.monotonic() - stopped)))
        raised_local = alarm_ids(here)
        raised_lone = alarm_ids(lone)
        early_remote = alarm_ids(there)  # must be none: Redis is down
        redis.start()
        back = time.monotonic()
        remote: dict[str, float] = dict(early_remote)
        presence_s = None
        while time.monotonic() - back < 15:
            remote.update(alarm_ids(there))
            if presence_s is None and listed(b, "or-1") >= expected:
                presence_s = time.monotonic() - back
            if presence_s is not None and set(raised_local) <= set(remote):
                break
            await asyncio.sleep(0.05)
        delays = [remote[i] - back for i in raised_local if i in remote]
        dips = len(loads["spanning"].dips)
        return {
            "outage_s": outage,
            "answers": {name: dict(load.answers) for name, load in loads.items()},
            "internal_error": sum(load.answers["internal_error"] for load in loads.values()),
            "newcomer_join": newcomer_answer,
            "alarm_dips_sent": dips,
            "alarms_local": len(raised_local),
            "alarms_single_node_room": len(raised_lone),
            "alarms_other_node": len(set(raised_local) & set(remote)),
            "alarms_other_node_before_redis_back": len(early_remote),
            "alarm_delay_after_redis_back_s": round(max(delays), 2) if delays else None,
            "presence_resync_s": round(presence_s, 2) if presence_s is not None else None,
        }
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        a.stop()
        b.stop()
        redis.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--outage", type=float, default=5.0)
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        runs.append(await one_run(args.outage))
        print(json.dumps(runs[-1]), flush=True)
    alarms_ok = all(
        r["alarms_other_node"] == r["alarms_local"] == r["alarm_dips_sent"]
        and (r["alarm_delay_after_redis_back_s"] or 0) < 2.0
        for r in runs
    )
    summary = {
        "runs": len(runs),
        "internal_error_total": sum(r["internal_error"] for r in runs),
        "single_node_room_errors": sum(
            n for r in runs for code, n in r["answers"]["single_node"].items() if code != "ok"
        ),
        "every_alarm_on_every_node_within_2s": alarms_ok,
        "presence_resync_s_max": max((r["presence_resync_s"] or float("inf")) for r in runs),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
