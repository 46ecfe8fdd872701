from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.app import create_app
from orbridge.signaling.cli.client import RoomClient
from orbridge.signaling.node import NODE, Node
from orbridge.signaling.settings import Settings
from tests.support import SECRET, free_port, redis_server


@pytest.fixture(autouse=True)
def no_lost_task_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A background task's exception nobody retrieved, or a failing loop callback, fails the
    test that caused it (asyncio only logs them)."""
    yield
    lost = [r for r in caplog.get_records("call")
            if r.name == "asyncio" and r.levelno >= logging.ERROR]  # fmt: skip
    if lost:
        pytest.fail("asyncio reported errors:\n" + "\n".join(r.getMessage() for r in lost))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_prefix() -> str:
    # Every test keeps its keys apart, so a shared Redis is never wiped or confused.
    return f"orbridge-test-{uuid.uuid4().hex[:10]}:"


def mint(
    room: str, role: Role | str, name: str = "Tester", identity: str | None = None, **kw: Any
) -> str:
    return tokens.mint(SECRET, room=room, role=Role(role), name=name, identity=identity, **kw)


class LiveNode:
    def __init__(self, node: Node, url: str) -> None:
        self.node = node
        self.url = url
        self.clients: list[RoomClient] = []

    def token(self, room: str, role: Role | str, name: str = "Tester", identity: str | None = None,
              **kw: Any) -> str:  # fmt: skip
        return mint(room, role, name, identity, **kw)

    async def client(self, room: str, role: Role | str, identity: str | None = None,
                     name: str = "Tester", join: bool = True, **kw: Any) -> RoomClient:  # fmt: skip
        return await self.client_with(self.token(room, role, name, identity, **kw), join=join)

    async def client_with(self, token: str, join: bool = True) -> RoomClient:
        """A client connected with this very token (a copied link, a refreshed token)."""
        client = RoomClient(self.url, token)
        self.clients.append(client)
        await client.connect()
        if join:
            await client.join()
        return client


StartNode = Callable[..., Awaitable[LiveNode]]


@pytest.fixture
async def start_node(tmp_path: Any) -> AsyncIterator[StartNode]:
    """Start orbridge nodes in this process on free loopback ports."""
    runners: list[web.AppRunner] = []
    nodes: list[LiveNode] = []

    async def start(**overrides: Any) -> LiveNode:
        port = free_port()
        values: dict[str, Any] = {
            "port": port, "secret": SECRET, "data_dir": tmp_path,
            "presence_ttl": 3.0, "heartbeat_interval": 0.5,
        }  # fmt: skip
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(settings)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        nodes.append(LiveNode(app[NODE], f"http://127.0.0.1:{port}"))
        return nodes[-1]

    yield start
    for live in nodes:
        for client in live.clients:
            await client.close()
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def node(start_node: StartNode) -> LiveNode:
    return await start_node()
