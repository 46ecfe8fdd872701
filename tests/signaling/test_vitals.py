"""Vitals over the protocol: ingest, fan-out, late joiners, alarms, limits, slow clients, nodes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from typing import Any

import pytest

from orbridge.rooms.roles import Role
from orbridge.rooms.vitals.alarms import AlarmEngine
from orbridge.rooms.vitals.model import Numeric
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from tests.conftest import LiveNode, StartNode


def ecg(seq: int, n: int = 20, rate: float = 500.0) -> dict[str, Any]:
    start = 1_795_000_000_000 + seq * n * 1000 / rate
    return {"kind": "ecg_ii", "start_ms": start, "rate_hz": rate, "seq": seq,
            "samples": [round(0.1 * ((i + seq) % 7), 3) for i in range(n)]}  # fmt: skip


async def device(node: LiveNode, room: str = "or-1") -> RoomClient:
    return await node.client(room, Role.DEVICE, identity="monitor-1")


async def test_numerics_and_ecg_reach_those_who_may_see_them(node: LiveNode) -> None:
    expert = await node.client("or-1", Role.EXPERT, identity="dr-wang")
    trainee = await node.client("or-1", Role.TRAINEE, identity="student")
    surgeon = await node.client("or-1", Role.SURGEON, identity="dr-ma")  # publishes, doesn't see
    other_room = await node.client("or-2", Role.EXPERT, identity="dr-li")
    monitor = await device(node)
    before = int(time.time() * 1000)
    ack = await monitor.request("publish_vitals", {
        "numerics": [{"kind": "hr", "value": 72, "unit": "/min"},
                     {"kind": "spo2", "value": 98.0, "unit": "%"}],
        "waveforms": [ecg(0)],
    })  # fmt: skip
    assert ack == {"numerics": 2, "waveforms": 1, "alarms": []}
    for client in (expert, trainee):
        got = await client.next_event("vitals")
        assert got["via"] == "socketio" and got["received_ms"] >= before
        assert [(n["kind"], n["value"], n["unit"], n["loinc"]) for n in got["numerics"]] == [
            ("hr", 72.0, "/min", "8867-4"), ("spo2", 98.0, "%", "59408-5"),
        ]  # fmt: skip
        (wave,) = got["waveforms"]
        assert wave["seq"] == 0 and wave["rate_hz"] == 500 and wave["unit"] == "mV"
        assert wave["samples"] == ecg(0)["samples"] and wave["source"] == "monitor-1"
    await asyncio.sleep(0.2)
    assert surgeon.pending("vitals") == [] and other_room.pending("vitals") == []


async def test_a_late_joiner_gets_the_latest_numerics(node: LiveNode) -> None:
    monitor = await device(node)
    await monitor.request("publish_vitals", {"numerics": [{"kind": "hr", "value": 70}]})
    both = [{"kind": "hr", "value": 75}, {"kind": "temp", "value": 36.6}]
    await monitor.request("publish_vitals", {"numerics": both})
    late = await node.client("or-1", Role.EXPERT, identity="late")
    assert late.snapshot is not None
    latest = {n["kind"]: n["value"] for n in late.snapshot["vitals"]["numerics"]}
    assert latest == {"hr": 75.0, "temp": 36.6}
    assert late.snapshot["vitals"]["limits"]["spo2"]["low"] == 90
    surgeon = await node.client("or-1", Role.SURGEON, identity="dr-ma")
    assert surgeon.snapshot is not None and "vitals" not in surgeon.snapshot


@pytest.mark.parametrize("role", [Role.TRAINEE, Role.EXPERT])
async def test_only_vitals_publishers_may_publish(node: LiveNode, role: Role) -> None:
    client = await node.client("or-1", role)
    with pytest.raises(ProtocolError) as err:
        await client.request("publish_vitals", {"numerics": [{"kind": "hr", "value": 60}]})
    assert err.value.code == "forbidden" and "publish_vitals" in err.value.message


BAD = [
    ({"numerics": [{"kind": "heart", "value": 60}]}, "invalid_vitals"),
    ({"numerics": [{"kind": "hr", "value": 900}]}, "invalid_vitals"),
    ({"numerics": [{"kind": "hr", "value": 60, "unit": "mm[Hg]"}]}, "invalid_vitals"),
    ({"numerics": [{"kind": "hr", "value": "sixty"}]}, "invalid_payload"),
    ({"numerics": [{"kind": "hr"}]}, "invalid_payload"),
    ({"waveforms": [{**ecg(0), "rate_hz": 333}]}, "invalid_vitals"),
    ({"waveforms": [{**ecg(0), "samples": [0.1] * 2001}]}, "invalid_payload"),
    ({"waveforms": [{**ecg(0), "samples": [50.0]}]}, "invalid_vitals"),
    ({"waveforms": [{**ecg(0), "seq": -1}]}, "invalid_payload"),
    ({}, "invalid_vitals"),
]


@pytest.mark.parametrize(("payload", "code"), BAD)
async def test_bad_vitals_are_refused_and_nothing_is_sent(
    node: LiveNode, payload: dict[str, Any], code: str
) -> None:
    expert = await node.client("or-1", Role.EXPERT)
    monitor = await device(node)
    with pytest.raises(ProtocolError) as err:
        await monitor.request("publish_vitals", payload)
    assert err.value.code == code
    assert await monitor.request("publish_vitals", {"numerics": [{"kind": "hr", "value": 61}]})
    got = await expert.next_event("vitals")
    assert got["numerics"][0]["value"] == 61.0  # the first thing the expert saw


def test_alarm_hysteresis() -> None:
    engine = AlarmEngine("or-1")
    events = []
    for t, value in enumerate([97, 91, 89, 89.5, 90.5, 89.8, 91.5, 92, 93, 88]):
        events += [(what, a.kind, a.condition, value) for what, a in
                   engine.evaluate(Numeric("spo2", value, t, "m"))]  # fmt: skip
    # raised once at 89, not again while hovering, cleared at 92 (limit 90 + band 2), raised at 88
    assert events == [("raised", "spo2", "low", 89), ("cleared", "spo2", "low", 92),
                      ("raised", "spo2", "low", 88)]  # fmt: skip
    events = []
    for t, value in enumerate([80, 121, 125, 119, 118, 117, 45]):
        events += [(what, a.condition, value) for what, a in
                   engine.evaluate(Numeric("hr", value, t, "m"))]  # fmt: skip
    assert events == [("raised", "high", 121), ("cleared", "high", 117), ("raised", "low", 45)]


async def test_alarms_reach_the_room_and_late_joiners(node: LiveNode) -> None:
    expert = await node.client("or-1", Role.EXPERT)
    monitor = await device(node)
    ack = await monitor.request("publish_vitals", {"numerics": [{"kind": "spo2", "value": 86}]})
    assert [a["event"] for a in ack["alarms"]] == ["raised"]
    raised = await expert.next_event("alarm_raised")
    assert (raised["kind"], raised["condition"], raised["limit"], raised["value"]) == (
        "spo2", "low", 90, 86.0,
    )  # fmt: skip
    late = await node.client("or-1", Role.TRAINEE)
    assert late.snapshot is not None
    assert [a["id"] for a in late.snapshot["vitals"]["alarms"]] == [raised["id"]]
    await monitor.request("publish_vitals", {"numerics": [{"kind": "spo2", "value": 95}]})
    cleared = await expert.next_event("alarm_cleared")
    assert cleared["id"] == raised["id"] and cleared["value"] == 95.0


async def test_limits_per_room(node: LiveNode) -> None:
    mod = await node.client("or-1", Role.MODERATOR)
    trainee = await node.client("or-1", Role.TRAINEE)
    with pytest.raises(ProtocolError) as err:
        await trainee.request("set_alarm_limits", {"limits": {"hr": {"low": 40}}})
    assert err.value.code == "forbidden"
    for bad in ({"hr": {"low": 130, "high": 120}}, {"nope": {"low": 1}}, {"hr": {"low": -5}}):
        with pytest.raises(ProtocolError) as err:
            await mod.request("set_alarm_limits", {"limits": bad})
        assert err.value.code == "invalid_payload", bad
    answer = await mod.request("set_alarm_limits", {"limits": {"hr": {"low": 40, "high": 140}}})
    assert answer["limits"]["hr"]["low"] == 40
    assert (await trainee.next_event("alarm_limits"))["limits"]["hr"]["high"] == 140
    monitor = await device(node)
    ack = await monitor.request("publish_vitals", {"numerics": [{"kind": "hr", "value": 45}]})
    assert ack["alarms"] == []  # 45 is fine in this room now
    other = await node.client("or-2", Role.DEVICE)
    ack = await other.request("publish_vitals", {"numerics": [{"kind": "hr", "value": 45}]})
    assert len(ack["alarms"]) == 1  # other rooms keep the defaults


async def test_500hz_ecg_reaches_50_clients_without_gaps(node: LiveNode) -> None:
    viewers = [await node.client("or-1", Role.EXPERT, identity=f"v{i}") for i in range(50)]
    monitor = await device(node)
    batches = 50  # 2 s of 500 Hz in 40 ms batches, sent in real time
    for seq in range(batches):
        await monitor.request("publish_vitals", {"waveforms": [ecg(seq)]})
        await asyncio.sleep(0.04)
    for viewer in viewers:
        seqs = []
        for _ in range(batches):
            event = await viewer.next_event("vitals", wait=5)
            seqs += [w["seq"] for w in event["waveforms"]]
        assert seqs == list(range(batches))


class RawWebSocket:
    """A minimal websocket client over a raw socket with a tiny receive buffer: when it stops
    reading, nothing on its side buffers for it (a stalled laptop on a bad link)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str, path: str) -> RawWebSocket:
        host, port = url.split("//")[1].split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())  # fmt: skip
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n")[0], head
        return cls(reader, writer)

    async def send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        header = bytes([0x81])
        n = len(data)
        header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
        self.writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        await self.writer.drain()

    async def receive(self) -> str:
        first, second = await self.reader.readexactly(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        payload = await self.reader.readexactly(n)
        if first & 0x0F == 0x9:  # ping: Engine.IO uses its own pings; ignore websocket ones
            return await self.receive()
        return payload.decode()

    def close(self) -> None:
        self.writer.close()


async def slow_client(url: str, token: str) -> RawWebSocket:
    """A real Engine.IO client that joins and then stops reading."""
    ws = await RawWebSocket.connect(url, "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive()).startswith("0")  # Engine.IO open
    await ws.send("40" + json.dumps({"token": token}))
    assert (await ws.receive()).startswith("40")  # Socket.IO connected
    await ws.send('421["join",{}]')
    while not (await ws.receive()).startswith("431"):  # the join ack
        pass
    return ws


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def test_a_stalled_client_loses_waveforms_not_the_room(start_node: StartNode) -> None:
    # the monitor floods on purpose; the stalled client reads nothing for longer than the
    # default pings allow on a busy machine (it would be declared dead, rightly)
    node = await start_node(event_rate=1000, event_burst=1000, ping_timeout=60)
    healthy = await node.client("or-1", Role.EXPERT, identity="healthy")
    ws = await slow_client(node.url, node.token("or-1", Role.EXPERT, identity="stalled"))
    monitor = await device(node)
    samples = [0.123] * 2000  # large batches fill the stalled client's buffers quickly
    server = node.node.sio
    sid = next(p.sid for p in node.node.rooms.local.values() if p.identity == "stalled")
    queue = server.eio.sockets[server.manager.eio_sid_from_sid(sid, "/")].queue
    try:
        for seq in range(300):
            waves = [{**ecg(seq), "samples": samples}, {**ecg(seq), "kind": "pleth",
                     "rate_hz": 500, "samples": samples}]  # fmt: skip
            await monitor.request("publish_vitals", {"waveforms": waves})
            assert queue.qsize() <= 257  # what it has queued stays bounded all along
        text = (await node.node.metrics.render(node.node.presence, 3)).decode()
        assert metric(text, 'orbridge_vitals_dropped_total{what="waveforms"}') > 0
        assert (
            metric(text, 'orbridge_vitals_ingested_total{via="socketio",what="waveforms"}') == 600
        )
        # the healthy expert got every batch, in order
        seqs = []
        for _ in range(300):
            event = await healthy.next_event("vitals", wait=10)
            seqs += [w["seq"] for w in event["waveforms"] if w["kind"] == "ecg_ii"]
        assert seqs == list(range(300))
        # when it reads again it catches up; the next batch shows it the gap in the sequence
        seen: list[int] = []
        sent_after = False
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), 2)
            except TimeoutError:
                if sent_after:
                    break
                await monitor.request("publish_vitals", {"waveforms": [ecg(300)]})
                sent_after = True
                continue
            if msg == "2":  # Engine.IO ping
                await ws.send("3")
            elif msg.startswith('42["vitals"'):
                waves = json.loads(msg[2:])[1]["waveforms"]
                seen += [w["seq"] for w in waves if w["kind"] == "ecg_ii"]
        assert seen, "the stalled client got nothing at all"
        assert seen[-1] == 300 and seen == sorted(seen)
        assert seen != list(range(seen[0], 301)), "no gap: nothing was dropped for it"
    finally:
        ws.close()


async def test_vitals_cross_nodes(start_node: StartNode, redis_url: str, redis_prefix: str) -> None:
    a = await start_node(redis_url=redis_url, redis_prefix=redis_prefix)
    b = await start_node(redis_url=redis_url, redis_prefix=redis_prefix)
    expert_on_b = await b.client("or-1", Role.EXPERT)
    monitor_on_a = await a.client("or-1", Role.DEVICE, identity="monitor-a")
    await monitor_on_a.request("publish_vitals", {"numerics": [{"kind": "spo2", "value": 85}],
                                                  "waveforms": [ecg(7)]})  # fmt: skip
    got = await expert_on_b.next_event("vitals")
    assert got["waveforms"][0]["seq"] == 7 and got["numerics"][0]["value"] == 85.0
    assert (await expert_on_b.next_event("alarm_raised"))["kind"] == "spo2"
    late_on_b = await b.client("or-1", Role.TRAINEE)
    assert late_on_b.snapshot is not None
    assert late_on_b.snapshot["vitals"]["numerics"][0]["value"] == 85.0
    assert len(late_on_b.snapshot["vitals"]["alarms"]) == 1
