"""ICE: no implicit public STUN, host candidates limited to configured addresses, announcing."""

from __future__ import annotations

import aioice.ice
import aiortc.rtcicetransport
from aiortc import RTCPeerConnection

from orbridge.media.ice import (
    configure_candidate_addresses,
    rtc_configuration,
    sdp_candidate_addresses,
)


def test_configuration_never_defaults_to_public_stun() -> None:
    assert rtc_configuration().iceServers == []
    config = rtc_configuration(
        stun_urls=["stun:stun.example.org:3478"],
        turn_urls=["turn:turn.example.org:3478"],
        turn_username="u",
        turn_credential="p",
    )
    assert [s.urls for s in config.iceServers] == [
        ["stun:stun.example.org:3478"],
        ["turn:turn.example.org:3478"],
    ]
    assert config.iceServers[1].username == "u"


async def test_aiortc_peers_connect_over_loopback_only(rig) -> None:
    # media_env (conftest) configured ["127.0.0.1"]: aioice's own scan would exclude it.
    offerer, answerer = rig.pc(), rig.pc()
    channel = offerer.createDataChannel("ping")
    await rig.negotiate(offerer, answerer)
    await rig.wait_connected(offerer, answerer)

    for pc in (offerer, answerer):
        assert sdp_candidate_addresses(pc.localDescription.sdp) == {"127.0.0.1"}
        assert sdp_candidate_addresses(pc.remoteDescription.sdp) == {"127.0.0.1"}
        ice = pc.sctp.transport.transport
        pair = next(iter(ice._connection._nominated.values()))  # aioice's selected pair
        assert pair.local_addr[0] == pair.remote_addr[0] == "127.0.0.1"
    assert channel.readyState in ("connecting", "open")


async def test_announced_address_replaces_the_local_one() -> None:
    configure_candidate_addresses(["127.0.0.1"], announced="203.0.113.7")
    pc = RTCPeerConnection(rtc_configuration())
    try:
        pc.createDataChannel("x")
        await pc.setLocalDescription(await pc.createOffer())
        assert sdp_candidate_addresses(pc.localDescription.sdp) == {"203.0.113.7"}
        # The socket itself still listens on the local address.
        connection = pc.sctp.transport.transport.iceGatherer._connection
        assert connection._protocols[0].transport.get_extra_info("sockname")[0] == "127.0.0.1"
    finally:
        await pc.close()


def test_reset_restores_aioice_and_aiortc() -> None:
    configure_candidate_addresses(None)
    assert aioice.ice.get_host_addresses.__module__ == "aioice.ice"
    assert aiortc.rtcicetransport.Connection is aioice.ice.Connection
    policy = configure_candidate_addresses(["127.0.0.1", "::1"])
    assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
    assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    assert policy.addresses == ("127.0.0.1", "::1")


def test_loopback_server_ignores_remote_candidates_elsewhere() -> None:
    from orbridge.media.ice import configure_candidate_addresses, filter_remote_candidates

    sdp = "\r\n".join([
        "v=0", "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
        "a=candidate:2 1 udp 2122194687 10.1.2.3 50001 typ host",
        "a=candidate:3 1 udp 2122129151 0f1e2d3c-aaaa.local 50002 typ host",
        "a=candidate:4 1 udp 2122129151 ::1 50003 typ host",
        "a=end-of-candidates", "",
    ])  # fmt: skip
    configure_candidate_addresses(["127.0.0.1"])
    kept, dropped = filter_remote_candidates(sdp)
    assert dropped == 2
    assert "127.0.0.1 50000" in kept and "::1 50003" in kept
    assert "10.1.2.3" not in kept and ".local" not in kept
    configure_candidate_addresses(["10.0.0.5"])  # a real deployment: nothing is dropped
    assert filter_remote_candidates(sdp) == (sdp, 0)
    configure_candidate_addresses(None)
    assert filter_remote_candidates(sdp) == (sdp, 0)
