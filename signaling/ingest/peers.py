"""Who may connect to a device listener, and logging that a flood of connections cannot flood.

Stdlib only: settings.py validates ``mllp_allow`` with ``parse_networks`` without importing the
listener (and the HL7 library under it).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

__all__ = [
    "DEFAULT_ALLOW",
    "Address",
    "LogLimiter",
    "Network",
    "address_allowed",
    "parse_networks",
    "peer_address",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")  # loopback only, until a deployment says otherwise


def parse_networks(items: Iterable[str | Network]) -> list[Network]:
    """CIDRs (``10.0.0.0/8``, ``fd00::/8``; a bare address is a /32 or /128) as networks.

    Host bits must be clear: ``10.1.2.3/8`` is refused rather than silently read as
    ``10.0.0.0/8``, since on an allow-list either reading could be the typo."""
    networks: list[Network] = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(_unmapped(item))
            continue
        text = str(item).strip()
        try:
            network = ipaddress.ip_network(text)
        except ValueError as exc:
            raise ValueError(
                f"{text!r} is not a network in CIDR notation, e.g. 10.0.0.0/8 or fd00::/8 ({exc})"
            ) from None
        networks.append(_unmapped(network))
    return networks


def _unmapped(network: Network) -> Network:
    """``::ffff:10.0.0.0/104`` as ``10.0.0.0/8``: peers are matched in their IPv4 form."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def peer_address(peername: Any) -> Address | None:
    """The peer's IP from a socket's ``peername`` (a 2- or 4-tuple), IPv4-mapped IPv6
    (``::ffff:a.b.c.d``, what a dual-stack socket reports for IPv4 peers) as the IPv4 address;
    None when there is none (then the peer is treated as not allowed)."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return None
    try:
        address = ipaddress.ip_address(peername[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_allowed(address: Address | None, networks: Sequence[Network]) -> bool:
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # `in` across versions is simply False, so a mixed list needs no sorting.
    return any(address in network for network in networks)


class LogLimiter:
    """At most one log line per key per `interval` seconds, counting what it held back; it
    remembers at most `max_keys` keys (the least recently logged are forgotten first)."""

    def __init__(self, interval: float = 60.0, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def ready(self, key: Hashable) -> int | None:
        """None: stay quiet. Else log now; the number is how many were held back since."""
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return None
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return last[1] if last is not None else 0
