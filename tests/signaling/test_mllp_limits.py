"""Who gets into the MLLP listener and for how long (issue #11 item 8): per-address limits that
let a reconnecting monitor in, an idle timeout only real messages reset, an allow-list of
networks. Over real TCP on loopback; other peers are other 127.x.y.z source addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from orbridge.rooms.vitals.model import VitalsBatch
from orbridge.signaling.ingest.ack import ack_fields
from orbridge.signaling.ingest.mllp import CR, FS, VT, FrameError, MllpListener, read_frame
from orbridge.signaling.ingest.peers import (
    LogLimiter,
    address_allowed,
    parse_networks,
    peer_address,
)
from orbridge.signaling.settings import SettingsError, load_settings

HR_72 = "OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R"


def oru(control_id: str, device: str = "SIM-1") -> bytes:
    return "\r".join(
        [
            rf"MSH|^~\&|{device}|OR|ORBRIDGE||20261122100000||ORU^R01|{control_id}|P|2.6",
            "OBR|1|||182777000^monitoring of patient^SCT|||20261122100000",
            HR_72,
        ]
    ).encode()


class Peer:
    """A raw MLLP connection from a chosen loopback source address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1") -> Peer:
        async with asyncio.timeout(3):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
        return cls(reader, writer)

    async def send(self, control_id: str) -> str | None:
        """The ACK code for one ORU^R01, or None when the listener closed instead."""
        try:
            self.writer.write(VT + oru(control_id) + FS + b"\r")
            await self.writer.drain()
            async with asyncio.timeout(3):
                frame = await read_frame(self.reader, None, None)
        except (ConnectionError, FrameError):
            return None
        return None if frame is None else ack_fields(frame[0].decode())["code"]

    async def closed(self, within: float = 3.0) -> bool:
        """True when the listener closed this connection (EOF or reset) with nothing (more)
        sent: only the CR that ends the last ACK's frame may still be unread."""
        try:
            async with asyncio.timeout(within):
                while data := await self.reader.read(65536):
                    assert data.strip(CR) == b"", f"expected a close, got {data[:60]!r}"
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.writer.close()


Start = Callable[..., Awaitable[MllpListener]]


@pytest.fixture
async def mllp() -> AsyncIterator[Start]:
    started: list[MllpListener] = []

    async def start(ingest: Callable[[VitalsBatch], Awaitable[Any]] | None = None,
                    **kw: Any) -> MllpListener:  # fmt: skip
        async def drop(batch: VitalsBatch) -> None:
            pass

        kw.setdefault("default_room", "or-1")
        listener = MllpListener(ingest or drop, host="127.0.0.1", port=0, **kw)
        await listener.start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        await asyncio.wait_for(listener.close(), 5)


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polls a counter; no event to wait on
            await asyncio.sleep(0.01)


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# ---------------------------------------------------------------------------------------------
# connection limits


async def test_70_idle_connections_do_not_keep_a_monitor_out(mllp: Start) -> None:
    """The lock-out of #11: more idle sockets than the listener's 64 slots, then a monitor."""
    listener = await mllp()  # the defaults: 64 in all, 8 per address
    idle = [await Peer.connect(listener.port) for _ in range(70)]
    await eventually(lambda: listener.connections_total + listener.connections_refused == 70)
    monitor = await Peer.connect(listener.port)
    assert await monitor.send("M-1") == "AA"
    assert listener.connections_refused == 0
    assert listener.connections_active == 8
    assert listener.connections_evicted == 70 + 1 - 8
    assert all([await peer.closed() for peer in idle[:63]])  # the oldest went first
    assert not await idle[-1].closed(within=0.05)
    for peer in [*idle, monitor]:
        peer.close()


async def test_a_reconnect_at_the_per_peer_limit_replaces_the_stale_connection(
    mllp: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "orbridge.mllp")
    listener = await mllp(max_per_peer=2)
    stale = await Peer.connect(listener.port)  # the socket a network blip left behind
    assert await stale.send("S-1") == "AA"
    live = await Peer.connect(listener.port)
    assert await live.send("B-1") == "AA"
    again = await Peer.connect(listener.port)  # the monitor, back after the blip
    assert await again.send("A-1") == "AA"
    assert await stale.closed()
    assert await live.send("B-2") == "AA"
    assert (listener.connections_evicted, listener.connections_active) == (1, 2)
    assert len(lines(caplog, "idle longest")) == 1
    # Idle longest, not connected first: `live` keeps sending, a silent newer one goes.
    silent = await Peer.connect(listener.port)  # evicts `again` (its last message is older)
    assert await again.closed()
    assert await live.send("B-3") == "AA"
    newest = await Peer.connect(listener.port)
    assert await silent.closed()
    assert await live.send("B-4") == "AA" and await newest.send("N-1") == "AA"
    for peer in (stale, live, again, silent, newest):
        peer.close()


async def test_a_peer_whose_connections_are_all_busy_is_refused_and_logged_once(
    mllp: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "orbridge.mllp")
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(batch: VitalsBatch) -> None:
        entered.set()
        await release.wait()

    listener = await mllp(slow, max_per_peer=1)
    working = await Peer.connect(listener.port)
    pending = asyncio.create_task(working.send("W-1"))
    await asyncio.wait_for(entered.wait(), 3)  # the frame is in ingest: the connection is busy
    refused = [await Peer.connect(listener.port) for _ in range(3)]
    assert all([await peer.closed() for peer in refused])
    assert listener.connections_refused == 3 and listener.connections_evicted == 0
    assert len(lines(caplog, "all its connections are busy")) == 1  # once a minute, not each
    release.set()
    assert await asyncio.wait_for(pending, 3) == "AA"
    for peer in [working, *refused]:
        peer.close()


async def test_the_global_limit_still_holds_against_other_addresses(mllp: Start) -> None:
    """Full with other addresses' connections: a newcomer is refused (nobody else's connection
    is closed for it), while an address that holds connections can still replace its own."""
    listener = await mllp(max_connections=4, max_per_peer=2)
    held = [await Peer.connect(listener.port, f"127.0.0.{2 + i // 2}") for i in range(4)]
    await eventually(lambda: listener.connections_active == 4)
    stranger = await Peer.connect(listener.port, "127.0.0.9")
    assert await stranger.closed()
    assert listener.connections_refused == 1
    back = await Peer.connect(listener.port, "127.0.0.3")  # one of 127.0.0.3's is stale
    assert await back.send("R-1") == "AA"
    assert await held[2].closed()
    assert not await held[3].closed(within=0.05) and not await held[0].closed(within=0.05)
    assert listener.connections_active == 4
    for peer in [*held, stranger, back]:
        peer.close()


# ---------------------------------------------------------------------------------------------
# idle timeout: only ORU^R01 messages count


async def _empty_frames(peer: Peer) -> None:
    while True:
        peer.writer.write(VT + FS + b"\r")
        await asyncio.sleep(0.2)


async def _not_hl7_frames(peer: Peer) -> None:
    while True:
        peer.writer.write(VT + b"PING" + FS + b"\r")  # answered AR, so the peer reads ACKs
        await asyncio.sleep(0.2)


async def _garbage(peer: Peer) -> None:
    while True:
        peer.writer.write(b"\x00noise\r\n")
        await asyncio.sleep(0.2)


async def _trickled_frame(peer: Peer) -> None:
    peer.writer.write(VT + b"MSH|")
    while True:
        await asyncio.sleep(0.2)
        peer.writer.write(b"x")  # a frame that never ends, one byte at a time


@pytest.mark.parametrize(
    "noise",
    [_empty_frames, _not_hl7_frames, _garbage, _trickled_frame],
    ids=["empty-frames", "not-hl7-frames", "garbage", "trickled-frame"],
)
async def test_noise_does_not_keep_a_connection_past_the_idle_timeout(
    mllp: Start, noise: Callable[[Peer], Awaitable[None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "orbridge.mllp")
    listener = await mllp(idle_timeout=0.5)  # read_timeout stays 30 s: only idleness cuts
    started = time.monotonic()
    peer = await Peer.connect(listener.port)
    sender = asyncio.create_task(noise(peer))
    try:
        await eventually(lambda: listener.connections_idle_closed == 1, within=3)
    finally:
        sender.cancel()
    assert 0.45 <= time.monotonic() - started < 2.0
    assert lines(caplog, "no ORU^R01 in 0.5 s")
    peer.close()


async def test_oru_messages_keep_a_connection_past_the_idle_timeout(mllp: Start) -> None:
    listener = await mllp(idle_timeout=0.5)
    peer = await Peer.connect(listener.port)
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 1.5:  # three idle timeouts
        assert await peer.send(f"K-{n}") == "AA"
        n += 1
        await asyncio.sleep(0.2)
    assert listener.connections_idle_closed == 0
    quiet = time.monotonic()
    assert await peer.closed(within=3)  # and once they stop, it goes
    assert 0.2 <= time.monotonic() - quiet < 2.0
    assert listener.connections_idle_closed == 1
    peer.close()


# ---------------------------------------------------------------------------------------------
# allow-list


async def test_a_peer_outside_the_allow_list_is_closed_unread(
    mllp: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "orbridge.mllp")
    batches: list[VitalsBatch] = []

    async def record(batch: VitalsBatch) -> None:
        batches.append(batch)

    listener = await mllp(record, allow=["10.0.0.0/8"])
    peers = [await Peer.connect(listener.port) for _ in range(3)]
    assert [await peer.send(f"D-{i}") for i, peer in enumerate(peers)] == [None] * 3
    assert all([await peer.closed() for peer in peers])
    assert batches == [] and listener.messages_accepted == listener.messages_rejected == 0
    assert listener.garbage_bytes == 0 and listener.connections_total == 0
    assert listener.connections_denied == 3
    assert len(lines(caplog, "not in mllp_allow")) == 1  # per address per minute
    for peer in peers:
        peer.close()
    admitted = await mllp(allow=["10.0.0.0/8", "127.0.0.1/32"])
    peer = await Peer.connect(admitted.port)
    assert await peer.send("OK-1") == "AA"
    peer.close()


@pytest.mark.parametrize(
    ("peername", "allowed"),
    [
        (("127.0.0.1", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 5000, 0, 0), True),  # a dual-stack socket's IPv4 peer
        (("::ffff:10.1.2.3", 5000, 0, 0), True),
        (("10.1.2.3", 5000), True),
        (("::ffff:192.168.0.9", 5000, 0, 0), False),
        (("192.168.0.9", 5000), False),
        (("fd00::5", 5000, 0, 0), True),
        (("fe80::1%lo", 5000, 0, 2), False),
        (("2001:db8::1", 5000, 0, 0), False),
        (None, False),
        ("/tmp/socket", False),
        (("not-an-ip", 1), False),
    ],
)
def test_peers_are_matched_against_the_allow_list(peername: Any, allowed: bool) -> None:
    networks = parse_networks(["127.0.0.0/8", "::1/128", "10.0.0.0/8", "fd00::/8"])
    assert address_allowed(peer_address(peername), networks) is allowed


def test_ipv4_mapped_peers_and_networks_take_their_ipv4_form() -> None:
    mapped = ipaddress.ip_address("::ffff:10.1.2.3")
    assert peer_address(("::ffff:10.1.2.3", 1, 0, 0)) == ipaddress.ip_address("10.1.2.3")
    assert address_allowed(mapped, parse_networks(["10.0.0.0/8"]))  # given unnormalised too
    assert parse_networks(["::ffff:10.0.0.0/104"]) == [ipaddress.ip_network("10.0.0.0/8")]
    assert not address_allowed(peer_address(("10.1.2.3", 1)), parse_networks(["::/0"]))


def test_cidr_parsing() -> None:
    assert parse_networks([" 10.0.0.0/8", "fd00::/8", "192.168.1.7", "::1"]) == [
        ipaddress.ip_network(n) for n in ("10.0.0.0/8", "fd00::/8", "192.168.1.7/32", "::1/128")
    ]
    for bad, why in (("10.0.0.1/8", "host bits"), ("10.0.0.0/33", "10.0.0.0/33"),
                     ("example.org", "example.org"), ("", "''")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            parse_networks([bad])


# ---------------------------------------------------------------------------------------------
# settings and logging


def test_mllp_limit_settings_from_file_env_and_flags(tmp_path: Any) -> None:
    s = load_settings(environ={})
    assert s.mllp_allow == ["127.0.0.0/8", "::1/128"]
    assert (s.mllp_max_per_peer, s.mllp_idle_timeout) == (8, 180.0)
    config = tmp_path / "orbridge.toml"
    config.write_text('mllp_allow = ["10.0.0.0/8", "fd00::/8"]\nmllp_max_per_peer = 4\n')
    assert load_settings(config_file=config, environ={}).mllp_allow == ["10.0.0.0/8", "fd00::/8"]
    env = {"ORBRIDGE_MLLP_ALLOW": "10.0.0.0/8, 192.168.4.0/24,::1",
           "ORBRIDGE_MLLP_MAX_PER_PEER": "3", "ORBRIDGE_MLLP_IDLE_TIMEOUT": "45"}  # fmt: skip
    s = load_settings(config_file=config, environ=env)
    assert s.mllp_allow == ["10.0.0.0/8", "192.168.4.0/24", "::1/128"]
    assert (s.mllp_max_per_peer, s.mllp_idle_timeout) == (3, 45.0)
    flags = {"mllp_allow": ["172.16.0.0/12,::ffff:10.0.0.0/104", "fd00::1"]}  # --mllp-allow x2
    s = load_settings(flags=flags, environ=env)
    assert s.mllp_allow == ["172.16.0.0/12", "10.0.0.0/8", "fd00::1/128"]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"mllp_allow": ["10.0.0.1/8"]}, r"mllp_allow: .*'10.0.0.1/8'.*host bits set"),
        ({"mllp_allow": "10.0.0.0/8,nonsense"}, r"mllp_allow: .*'nonsense' is not a network"),
        ({"mllp_allow": [" , "]}, r"mllp_allow: .*0\.0\.0\.0/0"),
        ({"mllp_max_per_peer": 0}, "mllp_max_per_peer"),
        ({"mllp_idle_timeout": 0}, "mllp_idle_timeout"),
    ],
)
def test_bad_mllp_limit_settings_are_explained(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        load_settings(flags=values, environ={})


def test_serve_reads_the_mllp_limit_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` passes the three flags on to the settings it starts with."""
    from orbridge.signaling.cli import main as cli

    seen: dict[str, Any] = {}

    def fake_create_app(settings: Any) -> Any:
        seen["settings"] = settings
        raise SystemExit(0)

    monkeypatch.setattr("orbridge.signaling.app.create_app", fake_create_app)
    monkeypatch.setattr("orbridge.signaling.logs.setup_logging", lambda *a: None)
    monkeypatch.setattr("asyncio.set_event_loop_policy", lambda policy: None)  # keep pytest's
    monkeypatch.delenv("ORBRIDGE_CONFIG", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["serve", "--secret", "x" * 32, "--mllp-allow", "10.0.0.0/8,fd00::/8",
                  "--mllp-allow", "192.168.1.0/24", "--mllp-max-per-peer", "3",
                  "--mllp-idle-timeout", "42"])  # fmt: skip
    s = seen["settings"]
    assert s.mllp_allow == ["10.0.0.0/8", "fd00::/8", "192.168.1.0/24"]
    assert (s.mllp_max_per_peer, s.mllp_idle_timeout) == (3, 42.0)
    assert cli.main(["serve", "--secret", "x" * 32, "--mllp-allow", "10.0.0.1/8"]) == 2


async def test_the_server_builds_its_listener_from_the_settings(start_node: Any) -> None:
    from tests.support import free_port

    port = free_port()
    node = await start_node(mllp_port=port, mllp_allow=["10.0.0.0/8"], mllp_max_per_peer=3,
                            mllp_idle_timeout=20)  # fmt: skip
    listener = node.node.mllp
    assert listener is not None
    assert (listener.max_per_peer, listener.idle_timeout) == (3, 20.0)
    peer = await Peer.connect(port)
    assert await peer.send("X-1") is None and await peer.closed()
    assert listener.stats()["connections_denied"] == 1
    peer.close()


def test_log_limiter_speaks_once_per_key_per_interval_and_stays_bounded() -> None:
    now = [0.0]
    limiter = LogLimiter(60.0, max_keys=2, clock=lambda: now[0])
    assert limiter.ready("a") == 0
    assert limiter.ready("a") is None and limiter.ready("a") is None
    assert limiter.ready("b") == 0
    now[0] = 61.0
    assert limiter.ready("a") == 2  # logs again, saying two were held back
    assert limiter.ready("c") == 0  # a third key forgets the least recently logged ("b")
    assert limiter.ready("b") == 0
    assert limiter.ready("c") is None
