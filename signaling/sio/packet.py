"""Socket.IO packets whose JSON is bounded in nesting before it is parsed.

python-socketio parses a packet's JSON before any handler runs: a payload nested 30,000 deep
raised RecursionError there, and the event vanished without an answer. Here an over-deep
payload becomes the event `TOO_DEEP` (its ack id kept), which the namespace answers
`invalid_payload`.
"""

from __future__ import annotations

import json
from typing import Any

import socketio

from orbridge.signaling.json_body import MAX_DEPTH, nesting_depth

TOO_DEEP = "\x00payload_too_deep"  # no client event can collide with a NUL-led name


class _BoundedJson:
    @staticmethod
    def dumps(obj: Any, *args: Any, **kwargs: Any) -> str:
        return json.dumps(obj, *args, **kwargs)

    @staticmethod
    def loads(text: str | bytes, *args: Any, **kwargs: Any) -> Any:
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        limit = MAX_DEPTH + 1  # + the packet's own array
        # Counting brackets runs in C: only a packet with many of them is scanned in Python.
        if raw.count("[") + raw.count("{") > limit and nesting_depth(raw, limit) > limit:
            return [TOO_DEEP]
        return json.loads(text, *args, **kwargs)


class BoundedPacket(socketio.packet.Packet):
    json = _BoundedJson
