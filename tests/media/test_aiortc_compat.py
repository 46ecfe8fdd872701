"""Every aiortc/aioice/engineio internal orbridge uses, checked on real objects of the installed
versions: an upgrade that renames or drops one fails here, not silently in forwarding."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import engineio
import engineio.async_socket
import pytest
import socketio
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver

from orbridge.media import aiortc_compat as compat
from orbridge.media.ice import rtc_configuration
from tests.media.conftest import MovingPattern, negotiate, wait_connected, wait_until


@dataclass
class Live:
    """A connected offerer -> answerer pair with one video track, and their parts."""

    offerer: RTCPeerConnection
    answerer: RTCPeerConnection
    sender: RTCRtpSender
    receiver: RTCRtpReceiver
    answer_transceiver: RTCRtpTransceiver

    def instance(self, owner: str) -> Any:
        dtls = self.sender.transport
        return {
            "aiortc.rtcrtpreceiver.RemoteStreamTrack": self.receiver.track,
            "aiortc.rtcrtptransceiver.RTCRtpTransceiver": self.answer_transceiver,
            "aiortc.rtcrtpsender.RTCRtpSender": self.sender,
            "aiortc.rtcdtlstransport.RTCDtlsTransport": dtls,
            "aiortc.rtcicetransport.RTCIceTransport": dtls.transport,
            "aioice.ice.Connection": dtls.transport._connection,
            "engineio.async_server.AsyncServer": engineio.AsyncServer(async_mode="aiohttp"),
        }[owner]


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    offerer = RTCPeerConnection(rtc_configuration())
    answerer = RTCPeerConnection(rtc_configuration())
    sender = offerer.addTrack(MovingPattern())
    tracks: list[Any] = []
    answerer.on("track", tracks.append)
    await negotiate(offerer, answerer)
    await wait_connected(offerer, answerer)
    [transceiver] = answerer.getTransceivers()
    live = Live(offerer, answerer, sender, transceiver.receiver, transceiver)
    await wait_until(lambda: compat.last_rtp_timestamp(sender) is not None, within=10)
    try:
        yield live
    finally:
        await offerer.close()
        await answerer.close()


def test_the_installed_versions_are_the_tested_ones() -> None:
    assert compat.version_problems() == []
    assert compat.missing_names() == []
    compat.check_versions()


def test_an_untested_version_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(compat.TESTED, "aiortc", "0.9")
    with pytest.raises(compat.UntestedVersion, match=r"aiortc 1\.16"):
        compat.check_versions()
    monkeypatch.setenv(compat.ALLOW_UNTESTED, "1")
    compat.check_versions()  # warned, not refused


def test_a_missing_name_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = compat.PrivateName("aiortc.rtcrtpsender.RTCRtpSender", "_gone", "class", "test")
    monkeypatch.setattr(compat, "PRIVATE_NAMES", (*compat.PRIVATE_NAMES, ghost))
    assert compat.missing_names() == ["aiortc.rtcrtpsender.RTCRtpSender._gone"]
    with pytest.raises(compat.UntestedVersion, match="_gone"):
        compat.check_versions()


@pytest.mark.parametrize("entry", compat.PRIVATE_NAMES, ids=lambda e: f"{e.owner}.{e.name}")
async def test_each_private_name_exists(entry: compat.PrivateName, live: Live) -> None:
    if entry.where == "instance":
        owner = live.instance(entry.owner)
    else:
        module, _, attr = entry.owner.rpartition(".")
        try:
            owner = importlib.import_module(entry.owner)
        except ImportError:
            owner = getattr(importlib.import_module(module), attr)
    assert hasattr(owner, entry.name), f"{entry.owner} has no {entry.name} ({entry.why})"


async def test_sender_state_reads_and_writes(live: Live) -> None:
    sender = live.sender
    ssrc, rtx = compat.sender_ssrcs(sender)
    assert ssrc != rtx and ssrc > 0
    assert compat.sender_get(sender, "mid") == live.offerer.getTransceivers()[0].mid
    assert isinstance(compat.sender_get(sender, "rtp_started"), asyncio.Event)
    packets = compat.sender_get(sender, "packet_count")
    sent = compat.last_rtp_timestamp(sender)
    assert packets > 0 and isinstance(sent, int)
    octets = compat.sender_get(sender, "octet_count")
    compat.record_sent(sender, 1 << 40, 1234, 100, 2)
    assert compat.sender_get(sender, "octet_count") >= octets + 100
    assert compat.sender_get(sender, "packet_count") >= packets + 2


async def test_transceiver_codecs_and_the_offer_direction(live: Live) -> None:
    codecs = compat.transceiver_codecs(live.answer_transceiver)
    assert codecs and codecs[0].mimeType.lower() == "video/vp8"
    # the remote offered sendrecv (addTrack); aiortc stores it as the remote's direction
    assert compat.offer_direction(live.answer_transceiver) in ("sendrecv", "recvonly")
    compat.set_transceiver_codecs(live.answer_transceiver, codecs[:1])
    assert compat.transceiver_codecs(live.answer_transceiver) == codecs[:1]


async def test_remote_track_queue_and_pli(live: Live) -> None:
    assert isinstance(compat.remote_track_queue(live.receiver.track), asyncio.Queue)
    assert compat.remote_track_queue(object()) is None
    requested: list[int] = []
    compat.on_keyframe_request(live.sender, lambda: requested.append(1))
    ssrc, _ = compat.sender_ssrcs(live.sender)
    await compat.send_pli(live.receiver, ssrc)
    await wait_until(lambda: bool(requested), within=5)


async def test_direct_send_and_the_slow_path(live: Live) -> None:
    send = compat.direct_send(live.sender.transport)
    assert callable(send)
    assert compat.direct_send(object()) is None
    received: list[bytes] = []

    async def count(data: bytes, arrival_time_ms: int) -> None:
        received.append(data)

    compat.replace_rtp_handler(live.receiver.transport, count)
    await wait_until(lambda: len(received) > 3, within=5)  # the sender's own packets arrive


def test_module_hooks_install_and_restore() -> None:
    hook = compat.ModuleHook(compat.aiortc.rtcrtpsender, "get_encoder")
    original = hook.original
    hook.install(len)
    try:
        assert hook.installed and compat.aiortc.rtcrtpsender.get_encoder is len
    finally:
        hook.restore()
    assert compat.aiortc.rtcrtpsender.get_encoder is original and not hook.installed


async def test_engineio_backlog_of_a_connected_client() -> None:
    server = socketio.AsyncServer(async_mode="aiohttp")
    eio_sid = "e1"
    socket = engineio.async_socket.AsyncSocket(server.eio, eio_sid)
    server.eio.sockets[eio_sid] = socket
    await server.manager.connect(eio_sid, "/")
    sid = server.manager.sid_from_eio_sid(eio_sid, "/")
    await socket.queue.put("packet")
    assert compat.engineio_backlog(server, sid, "/") == 1
    assert compat.engineio_backlog(server, "nobody", "/") == 0
