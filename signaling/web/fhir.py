"""FHIR R4 vitals ingest over HTTP: `POST /api/rooms/{room}/observations`.

The route only: authorization (an API key, or a token for the room with `publish_vitals`), the
content type, a body of at most `MAX_BODY_BYTES`, then the mapping in
signaling/ingest/fhir.py (in a thread for large bodies) and the vitals hub.

Errors: `{"error": {"code", "message", "details": [{"path", "message"}]}, "outcome":
{OperationOutcome}}` with 400 `invalid_fhir` / `invalid_room`, 401 `unauthorized` /
`token_*`, 403 `forbidden` / `token_wrong_room`, 413 `payload_too_large`, 415
`unsupported_media_type`, 503 `vitals_unavailable`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from orbridge.rooms import tokens
from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Grant
from orbridge.signaling.ingest.fhir import (
    FhirError,
    Issue,
    Parsed,
    number_waveforms,
    parse_observations,
)
from orbridge.signaling.json_body import parse_json
from orbridge.signaling.node import NODE
from orbridge.signaling.web.api import auth_status, authenticate

__all__ = [
    "MAX_BODY_BYTES",
    "add_fhir_routes",
    "post_observations",
]

MAX_BODY_BYTES = 1024 * 1024
THREAD_ABOVE_BYTES = 64 * 1024
CONTENT_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
SEQ_KEY = web.AppKey("orbridge_fhir_seq", dict)


def _outcome(issues: list[Issue], message: str) -> dict[str, Any]:
    entries = [{"severity": "error", "code": i.code, "diagnostics": i.message,
                **({"expression": [i.path]} if i.path else {})} for i in issues]  # fmt: skip
    fallback = [{"severity": "error", "code": "processing", "diagnostics": message}]
    return {"resourceType": "OperationOutcome", "issue": entries or fallback}


def _error(status: int, code: str, message: str, issues: list[Issue] | None = None,
           fhir_code: str = "processing") -> web.Response:  # fmt: skip
    issues = issues or []
    body = {
        "error": {"code": code, "message": message, "details": [i.public() for i in issues]},
        # The same, as FHIR clients expect it.
        "outcome": _outcome(issues or [Issue("", message, fhir_code)], message),
    }
    return web.json_response(body, status=status)


def _authorize(request: web.Request, room: str) -> None:
    """An API key, or a token for this room with `publish_vitals`; DomainError otherwise."""
    claims = authenticate(request, room)
    if claims is not None and not claims.allows(Grant.PUBLISH_VITALS):
        raise DomainError("forbidden", f"a {claims.role.value} token may not publish vitals")


async def _read_body(request: web.Request) -> bytes | None:
    """The body, or None when it exceeds MAX_BODY_BYTES (declared or actually sent)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_and_parse(raw: bytes, room: str) -> Parsed:
    try:
        body = parse_json(raw)
    except DomainError as exc:
        raise FhirError(
            "the body is not usable JSON", [Issue("", exc.message, "structure")]
        ) from None
    return parse_observations(body, room)


async def post_observations(request: web.Request) -> web.Response:
    """POST /api/rooms/{room}/observations: FHIR vital signs into a room's vitals."""
    room = request.match_info["room"]
    try:
        tokens.check_name("room", room)
    except ValueError as exc:
        return _error(400, "invalid_room", str(exc))
    try:
        _authorize(request, room)
    except DomainError as exc:
        return _error(auth_status(exc.code), exc.code, exc.message, fhir_code="security")
    if request.content_type not in CONTENT_TYPES:
        return _error(415, "unsupported_media_type",
                      f"send Content-Type: application/fhir+json, not {request.content_type!r}",
                      fhir_code="not-supported")  # fmt: skip
    raw = await _read_body(request)
    if raw is None:
        return _error(413, "payload_too_large", f"at most {MAX_BODY_BYTES} bytes per request",
                      fhir_code="too-costly")  # fmt: skip
    try:
        if len(raw) > THREAD_ABOVE_BYTES:  # ~50-200 ms of validation: keep the loop serving
            parsed = await asyncio.to_thread(_decode_and_parse, raw, room)
        else:
            parsed = _decode_and_parse(raw, room)
    except FhirError as exc:
        return _error(400, "invalid_fhir", exc.message, exc.issues)
    hub = getattr(request.app[NODE], "vitals", None)
    if hub is None:
        return _error(503, "vitals_unavailable", "this server has no vitals hub")
    number_waveforms(parsed.batch, request.app[SEQ_KEY])
    try:
        result = await hub.ingest(parsed.batch)
    except DomainError as exc:
        return _error(400, exc.code, exc.message)
    return web.json_response(
        {
            "room": room,
            "received_ms": parsed.batch.received_ms,
            "accepted": {
                "numerics": len(parsed.batch.numerics),
                "waveforms": len(parsed.batch.waveforms),
                "samples": parsed.samples,
            },
            "alarms": (result or {}).get("alarms", []) if isinstance(result, dict) else [],
            "skipped": [i.public() for i in parsed.skipped],
        }
    )


def add_fhir_routes(app: web.Application) -> None:
    """Register the FHIR ingest (idempotent: a second call adds nothing)."""
    path = "/api/rooms/{room}/observations"
    for resource in app.router.resources():
        if resource.canonical == path:
            return
    app[SEQ_KEY] = {}
    app.router.add_post(path, post_observations)
