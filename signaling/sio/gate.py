"""The event table: for every inbound event, its schema, the grant it needs and its handler.

Every event passes one gate (`EventGate.check`) before its handler runs: known name,
joined, rate limit, size, grant, schema. Acks are uniform:
`{"ok": true, "data": ...}` or `{"ok": false, "error": {"code": ..., "message": ...}}`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Grant

Ack = dict[str, Any]
Handler = Callable[[str, Any], Awaitable[Any]]


def ok(data: Any = None) -> Ack:
    return {"ok": True, "data": data}


def fail(code: str, message: str) -> Ack:
    return {"ok": False, "error": {"code": code, "message": message}}


@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    schema: type[BaseModel]
    handler: Handler
    grant: Grant | None = None
    needs_join: bool = True
    max_bytes: int | None = None  # None: the server-wide limit


def payload_size(args: tuple[Any, ...]) -> int:
    try:
        return len(json.dumps(args, separators=(",", ":")))
    except (TypeError, ValueError) as exc:  # binary attachments and the like
        raise DomainError("invalid_payload", "payloads must be JSON objects") from exc


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse(spec: EventSpec, args: tuple[Any, ...], max_bytes: int) -> BaseModel:
    """Size limit, then schema. Payload is the event's single argument (an object) or nothing."""
    limit = spec.max_bytes or max_bytes
    size = payload_size(args)
    if size > limit:
        raise DomainError(
            "payload_too_large", f"{spec.name} payload is {size} bytes; limit {limit}"
        )
    if len(args) > 1:
        raise DomainError("invalid_payload", f"{spec.name} takes one object argument")
    raw = args[0] if args else {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise DomainError("invalid_payload", f"{spec.name} payload must be an object")
    try:
        return spec.schema.model_validate(raw)
    except ValidationError as exc:
        raise DomainError("invalid_payload", f"{spec.name}: {describe(exc)}") from exc
