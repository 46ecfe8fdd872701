"""Redis URLs: a plain server or a Sentinel group, refused clearly when malformed."""

from __future__ import annotations

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool

from orbridge.rooms.redis_connect import SentinelTarget, parse_redis_url, redacted, redis_client


def test_a_plain_url_is_a_single_server() -> None:
    assert parse_redis_url("redis://127.0.0.1:6390/2") is None
    assert parse_redis_url("rediss://user:pw@redis.hospital.cn:6380/0") is None


def test_a_sentinel_url_names_its_sentinels_db_and_service() -> None:
    target = parse_redis_url("redis+sentinel://:s3cret@10.1.0.5:26379,[fd00::7]:26380/3/orbridge")
    assert target == SentinelTarget(
        (("10.1.0.5", 26379), ("fd00::7", 26380)), "orbridge", 3, None, "s3cret"
    )


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:6379", "redis://"),
        ("redis+sentinel://127.0.0.1:26379/orbridge", "/<db>/<service>"),
        ("redis+sentinel://127.0.0.1:26379/0", "/<db>/<service>"),
        ("redis+sentinel://127.0.0.1/0/orbridge", "host:port"),
        ("redis+sentinel://127.0.0.1:99999/0/orbridge", "host:port"),
        ("redis+sentinel://a:1,,b:2/0/orbridge", "host:port"),
    ],
)
def test_a_malformed_url_is_refused_with_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("+", r"\+")):
        parse_redis_url(url)


async def test_a_sentinel_client_asks_the_sentinels_for_the_master() -> None:
    client = redis_client("redis+sentinel://127.0.0.1:26379/1/orbridge", socket_connect_timeout=2.0)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "orbridge"
    assert pool.connection_kwargs["db"] == 1
    assert pool.connection_kwargs["socket_connect_timeout"] == 2.0
    await client.aclose()


def test_logs_never_show_the_password() -> None:
    assert redacted("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redacted("redis+sentinel://:pw@a:1,b:2/0/s") == "redis+sentinel://:***@a:1,b:2/0/s"
    assert redacted("redis://h:1/0") == "redis://h:1/0"
