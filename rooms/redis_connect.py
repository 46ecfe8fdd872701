"""One way to reach Redis from a URL: a plain server, or a master found through Sentinel.

``redis://[user:password@]host:port/db`` (and ``rediss://``, ``unix://``) is a single server.
``redis+sentinel://[user:password@]host1:port1,host2:port2,.../db/service`` asks the
sentinels which server is the master of ``service`` and follows it through a failover: a
connection that breaks, or lands on a demoted master (``READONLY``), asks again. The format
is python-socketio's, so the Socket.IO manager reads the same setting. The credentials are the
data servers'; the sentinels are reached without them (the usual Sentinel setup).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis_async
from redis.asyncio.sentinel import Sentinel

__all__ = ["SentinelTarget", "parse_redis_url", "redacted", "redis_client"]

SENTINEL_SCHEMES = ("redis+sentinel",)
SERVER_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_redis_url(url: str) -> SentinelTarget | None:
    """The Sentinel target of a ``redis+sentinel://`` URL, None for a plain server URL.

    Raises ValueError (with a message fit for a settings error) for anything else."""
    parts = urlsplit(url)
    if parts.scheme in SERVER_SCHEMES:
        return None
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(
            f"a Redis URL starts with redis://, rediss://, unix:// or redis+sentinel://, "
            f"not {parts.scheme or 'nothing'}://"
        )
    hosts = parts.netloc.rpartition("@")[2]
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        host = host.strip("[]")  # an IPv6 address in brackets
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a sentinel is host:port, not {item.strip() or 'nothing'!r}")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if len(path) != 2 or not path[0].isdigit():
        raise ValueError("a Sentinel URL ends with /<db>/<service>, e.g. /0/mymaster")
    return SentinelTarget(
        tuple(sentinels), path[1], int(path[0]), parts.username or None, parts.password or None
    )


def redis_client(url: str, **options: Any) -> redis_async.Redis:
    """An asyncio Redis client for ``url``; ``options`` are connection options
    (timeouts, ``decode_responses``), applied to the sentinels' connections too."""
    target = parse_redis_url(url)
    if target is None:
        return redis_async.Redis.from_url(url, **options)
    sockets = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sockets, **options)
    return sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
    )


def redacted(url: str) -> str:
    """The URL without its password, for logs and health output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))
