"""The Python media client against offers that arrive while it is leaving."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCPeerConnection

from orbridge.media.client import MediaClient


class RecordingPort:
    """A signalling port that records what the client sends (the server is not under test)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.handlers: dict[str, Callable[[Any], Awaitable[None]]] = {}

    async def request(self, event: str, payload: Any = None) -> Any:
        self.sent.append((event, payload))
        return {"tracks": []}

    def on(self, name: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        self.handlers[name] = handler


async def server_offer() -> dict[str, Any]:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return {"sdp": sdp, "tracks": []}


async def test_an_offer_after_close_is_ignored() -> None:
    port = RecordingPort()
    client = MediaClient(port)
    await client.subscribe(lambda info, track: None)
    await client.close()
    await port.handlers["subscriber_offer"](await server_offer())
    assert client.subscriber is None
    assert client.offers_answered == 0
    assert [e for e, _ in port.sent] == ["subscribe"]


async def test_an_offer_racing_close_neither_raises_nor_answers() -> None:
    port = RecordingPort()
    client = MediaClient(port)
    await client.subscribe(lambda info, track: None)
    offer = await server_offer()
    handling = asyncio.create_task(port.handlers["subscriber_offer"](offer))
    await asyncio.sleep(0)  # the handler has created the connection and is applying the offer
    await client.close()
    await asyncio.wait_for(handling, 5)
    assert "subscriber_answer" not in [e for e, _ in port.sent]


async def test_an_offer_is_answered() -> None:
    port = RecordingPort()
    client = MediaClient(port)
    await client.subscribe(lambda info, track: None)
    await port.handlers["subscriber_offer"](await server_offer())
    assert client.offers_answered == 1
    event, payload = port.sent[-1]
    assert event == "subscriber_answer" and "a=recvonly" in payload["sdp"]
    await client.close()
