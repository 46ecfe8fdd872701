"""A Python client of the orbridge protocol (docs/protocol.md).

The CLI tools (`orbridge publish`, `orbridge loadtest`, `orbridge vitals`) and the
tests speak to the server through this class, exactly as the browser pages do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

SERVER_EVENTS = (
    "participant_joined",
    "participant_left",
    "participant_updated",
    "removed",
    "server_shutdown",
    "consultation_ended",
    "track_published",
    "track_ended",
    "track_stalled",
    "track_resumed",
    "vitals",
    "alarm_raised",
    "alarm_cleared",
    "alarm_limits",
    "annotation",
    "annotation_removed",
    "recording_started",
    "recording_stopped",
    "recording_error",
    "chapter_marked",
)


class ProtocolError(Exception):
    """The server refused the connection or answered `{"ok": false, "error": ...}`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RoomClient:
    def __init__(self, url: str, token: str, request_timeout: float = 10.0) -> None:
        self.url = url
        self.token = token
        self.request_timeout = request_timeout
        self.sio = socketio.AsyncClient(reconnection=False)
        self.snapshot: dict[str, Any] | None = None
        self._queues: dict[str, asyncio.Queue[Any]] = defaultdict(lambda: asyncio.Queue(1000))
        self.disconnected = asyncio.Event()
        self._refusal: ProtocolError | None = None
        for name in SERVER_EVENTS:
            self.on_event(name)
        self.sio.on("connect_error", self._on_connect_error)
        self.sio.on("disconnect", self._on_disconnect)

    def on_event(self, name: str) -> None:
        """Queue every `name` event from the server for `next_event`."""

        async def handler(data: Any = None) -> None:
            queue = self._queues[name]
            if queue.full():  # keep the newest: drop the oldest
                queue.get_nowait()
            queue.put_nowait(data)

        self.sio.on(name, handler)

    def on(self, name: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Handle `name` events with `handler` instead of queueing them."""
        self.sio.on(name, handler)

    async def _on_connect_error(self, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            err = data["data"]
            self._refusal = ProtocolError(str(err.get("code")), str(err.get("message")))
        else:
            self._refusal = ProtocolError("connect_refused", str(data))

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.disconnected.set()

    async def connect(self, room: str | None = None, transport: str = "websocket",
                      headers: dict[str, str] | None = None) -> None:  # fmt: skip
        auth: dict[str, Any] = {"token": self.token}
        if room is not None:
            auth["room"] = room
        try:
            await self.sio.connect(self.url, auth=auth, transports=[transport],
                                   wait_timeout=self.request_timeout,
                                   headers=headers or {})  # fmt: skip
        except socketio.exceptions.ConnectionError as exc:
            raise self._refusal or ProtocolError("connect_failed", str(exc)) from exc

    async def request(self, event: str, payload: Any = None) -> Any:
        """Send an event, wait for its ack; return `data` or raise ProtocolError."""
        args = () if payload is None else (payload,)
        answer = await self.sio.call(event, *args, timeout=self.request_timeout)
        if not isinstance(answer, dict) or "ok" not in answer:
            raise ProtocolError("bad_ack", f"unexpected ack {answer!r}")
        if not answer["ok"]:
            err = answer.get("error") or {}
            raise ProtocolError(str(err.get("code")), str(err.get("message")))
        return answer.get("data")

    async def join(self, **payload: Any) -> dict[str, Any]:
        self.snapshot = await self.request("join", payload)
        return self.snapshot

    async def next_event(self, name: str, wait: float = 5.0) -> Any:
        return await asyncio.wait_for(self._queues[name].get(), wait)

    def pending(self, name: str) -> list[Any]:
        """Events of this name received and not yet taken."""
        queue = self._queues[name]
        items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        return items

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()

    async def __aenter__(self) -> RoomClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
