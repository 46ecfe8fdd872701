"""ICE set-up for aiortc peers: no silent public STUN, chosen host addresses, announced IPs.

Two facts about aiortc 1.16 / aioice 0.13 drive this module:

* ``RTCIceGatherer`` falls back to ``stun:stun.l.google.com:19302`` whenever
  ``RTCConfiguration.iceServers`` is ``None``. A hospital server must not talk to a third party
  it was not configured for, so :func:`rtc_configuration` always passes an explicit list.
* ``aioice.ice.get_host_addresses`` lists every interface address *except* 127.0.0.1 and
  offers no filter. :func:`configure_candidate_addresses` replaces that module function (aioice
  looks it up at call time in ``Connection.gather_candidates``) so peers gather exactly the
  configured addresses, and installs a small ``aioice.Connection`` subclass into
  ``aiortc.rtcicetransport`` that rewrites host candidates to an announced public address
  (mediasoup's ``announcedIp``) while the socket stays bound to the local address.

Both hooks are process-wide, installed once at start-up, and reverted by
``configure_candidate_addresses(None)``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aioice import Candidate
from aiortc import RTCConfiguration, RTCIceServer

from orbridge.media import aiortc_compat as compat

logger = logging.getLogger(__name__)

__all__ = [
    "CandidatePolicy",
    "candidate_policy",
    "configure_candidate_addresses",
    "rtc_configuration",
    "sdp_candidate_addresses",
]


def rtc_configuration(
    stun_urls: Sequence[str] = (),
    turn_urls: Sequence[str] = (),
    turn_username: str | None = None,
    turn_credential: str | None = None,
) -> RTCConfiguration:
    """Build an ``RTCConfiguration`` that only uses the STUN/TURN servers given.

    ``iceServers`` is ``[]`` (never ``None``) when nothing is configured: ``None`` would make
    aiortc contact Google's public STUN server.
    """
    servers: list[RTCIceServer] = []
    if stun_urls:
        servers.append(RTCIceServer(urls=list(stun_urls)))
    if turn_urls:
        servers.append(
            RTCIceServer(urls=list(turn_urls), username=turn_username, credential=turn_credential)
        )
    return RTCConfiguration(iceServers=servers)


@dataclass(frozen=True)
class CandidatePolicy:
    """Which local addresses aiortc peers gather, and what they announce instead."""

    addresses: tuple[str, ...] = ()
    """Addresses to bind host candidates on; empty means aioice's own interface scan."""
    announced: Mapping[str, str] = field(default_factory=dict)
    """Local address -> address written into candidates (e.g. the NAT's public IP)."""


_policy = CandidatePolicy()
_original_get_host_addresses: Callable[[bool, bool], list[str]] = compat.ICE_HOST_ADDRESSES.original
_original_connection: type[compat.IceConnection] = compat.ICE_CONNECTION.original


def candidate_policy() -> CandidatePolicy:
    """The policy in force (the default one when nothing was configured)."""
    return _policy


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    # Same signature as aioice's function; honours the IPv4/IPv6 switches of the Connection.
    if not _policy.addresses:
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    chosen = []
    for address in _policy.addresses:
        version = ipaddress.ip_address(address).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            chosen.append(address)
    return chosen


class _AnnouncingConnection(_original_connection):  # type: ignore[misc, valid-type]
    """aioice Connection whose host candidates carry the announced address.

    Only the advertised ``host`` changes: connectivity checks are matched by socket
    (``StunProtocol``), not by address, so answering checks that arrive through a 1:1 NAT
    keeps working. Server-reflexive candidates keep the real local address as their base.
    """

    async def get_component_candidates(
        self,
        component: int,
        addresses: list[str],
        timeout: int = 5,  # noqa: ASYNC109 (aioice signature)
    ) -> list[Candidate]:
        candidates: list[Candidate] = await super().get_component_candidates(
            component, addresses, timeout
        )
        announced = _policy.announced
        if announced:
            for candidate in candidates:
                if candidate.type == "host" and candidate.host in announced:
                    candidate.host = announced[candidate.host]
        return candidates


def configure_candidate_addresses(
    addresses: Sequence[str] | None,
    announced: Mapping[str, str] | str | None = None,
) -> CandidatePolicy:
    """Restrict (and optionally announce) the host candidates of every aiortc peer.

    Call once at start-up, before any ``RTCPeerConnection`` gathers candidates.

    :param addresses: IP literals to bind host candidates on (``["127.0.0.1"]`` in tests, the
        server's private address behind a NAT). ``None`` restores aioice's default behaviour.
    :param announced: the public address to write into candidates instead of the local one:
        either a mapping ``{local: public}`` or one address applied to every configured one.
    """
    global _policy
    if addresses is None:
        _policy = CandidatePolicy()
        compat.ICE_HOST_ADDRESSES.restore()
        compat.ICE_CONNECTION.restore()
        return _policy

    normalized = tuple(str(ipaddress.ip_address(a)) for a in addresses)
    if not normalized:
        raise ValueError("at least one candidate address is required (or None for defaults)")
    if isinstance(announced, str):
        mapping = dict.fromkeys(normalized, str(ipaddress.ip_address(announced)))
    else:
        mapping = {
            str(ipaddress.ip_address(k)): str(ipaddress.ip_address(v))
            for k, v in (announced or {}).items()
        }
    _policy = CandidatePolicy(addresses=normalized, announced=mapping)
    compat.ICE_HOST_ADDRESSES.install(_configured_host_addresses)
    compat.ICE_CONNECTION.install(_AnnouncingConnection)
    logger.info("ICE host candidates restricted to %s (announced: %s)", normalized, mapping)
    return _policy


def sdp_candidate_addresses(sdp: str) -> set[str]:
    """Connection addresses of every ``a=candidate`` line in an SDP (for checks and tests)."""
    found: set[str] = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            # a=candidate:<foundation> <component> <transport> <priority> <address> <port> ...
            parts = line.split()
            if len(parts) >= 6:
                found.add(parts[4])
    return found


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # an mDNS name (xxxx.local) or garbage
        return False


def filter_remote_candidates(sdp: str) -> tuple[str, int]:
    """Drop remote candidates this server must not probe; returns (sdp, how many dropped).

    When every local candidate address is loopback (tests, a single-machine demo), a remote
    candidate elsewhere is unreachable from our sockets, and probing it would send traffic off
    loopback (an mDNS ``.local`` name would even make aioice query the LAN by multicast). So
    only loopback remote candidates are kept then; otherwise the SDP is returned unchanged.
    """
    addresses = _policy.addresses
    if not addresses or not all(_is_loopback(a) for a in addresses):
        return sdp, 0
    kept, dropped = [], 0
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) < 6 or not _is_loopback(parts[4]):
                dropped += 1
                continue
        kept.append(line)
    return "\r\n".join(kept), dropped
