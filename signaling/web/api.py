"""HTTP endpoints: health, metrics and the rooms API."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from orbridge.media import tap
from orbridge.rooms import tokens
from orbridge.rooms.errors import DomainError, PresenceUnavailable
from orbridge.rooms.presence import summarize
from orbridge.rooms.roles import Role
from orbridge.signaling.node import NODE, Node


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _node(request: web.Request) -> Node:
    return request.app[NODE]


def _credential(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("X-API-Key") or None


def authenticate(request: web.Request, room: str | None = None) -> tokens.Claims | None:
    """The caller of an HTTP API: None for an API key (every room), else its verified token's
    claims (for `room` when given). DomainError `unauthorized` or `token_*` otherwise."""
    node = _node(request)
    credential = _credential(request)
    if credential is None:
        raise DomainError("unauthorized", "send Authorization: Bearer <token or API key>")
    for key in node.settings.api_keys:
        if hmac.compare_digest(credential.encode(), key.encode()):
            return None
    return tokens.verify(node.secret, credential, room=room, max_ttl_s=node.settings.max_token_ttl)


def authorize(request: web.Request) -> str | None:
    """Who may read presence: an API key (every room) or a moderator's token (its room).
    Returns None for access to every room, or the one room the caller may see."""
    claims = authenticate(request)
    if claims is None:
        return None
    if claims.role is not Role.MODERATOR:
        raise DomainError("forbidden", "only a moderator token or an API key may read presence")
    return claims.room


def auth_status(code: str) -> int:
    """The HTTP status of an authentication or authorization error code."""
    if code == "token_wrong_room":
        return 403  # authenticated, but not for this room
    return 401 if code.startswith("token_") or code == "unauthorized" else 403


async def healthz(request: web.Request) -> web.Response:
    node = _node(request)
    reachable = await node.presence.ping()
    reasons = [] if reachable else ["presence: Redis unreachable"]
    buses = {name: bus for name, bus in node.buses().items() if getattr(bus, "up", True) is False}
    reasons += [f"bus {name}: Redis unreachable, other nodes get this node's news later"
                for name in sorted(buses)]  # fmt: skip
    body = {
        "status": "degraded" if reasons else "ok",
        "node": node.info.node_id,
        "version": node.info.version,
        "presence": {"backend": node.presence.backend, "reachable": reachable},
    }
    if reasons:
        body["reasons"] = reasons
    return web.json_response(body, status=503 if reasons else 200)


async def metrics(request: web.Request) -> web.Response:
    node = _node(request)
    node.metrics.set_media(tap.stats.snapshot(), node.media.stats())
    if node.mllp is not None:
        node.metrics.set_mllp(node.mllp.stats())
    node.metrics.set_recording(node.recordings.stats())
    node.metrics.set_audit(node.audit.stats.snapshot())
    payload = await node.metrics.render(node.presence, len(node.namespace.claims))
    return web.Response(body=payload, headers={"Content-Type": "text/plain; version=0.0.4"})


async def list_rooms(request: web.Request) -> web.Response:
    node = _node(request)
    try:
        scope = authorize(request)
    except DomainError as exc:
        return error_response(auth_status(exc.code), exc.code, exc.message)
    body: dict[str, Any] = {}
    try:
        summaries = await node.presence.rooms()
        nodes = await node.presence.nodes()
    except PresenceUnavailable:  # this node's own rooms, and say so
        rooms = node.registry.rooms
        summaries = [summarize(name, node.registry.members(name)) for name in sorted(rooms)
                     if node.registry.members(name)]  # fmt: skip
        nodes = [node.info]
        body["degraded"] = ["presence"]
    if scope is not None:
        summaries = [s for s in summaries if s.room == scope]
    body["rooms"] = [s.public() for s in summaries]
    if scope is None:
        body["nodes"] = [n.public() for n in nodes]
    return web.json_response(body)


async def get_room(request: web.Request) -> web.Response:
    node = _node(request)
    room = request.match_info["room"]
    try:
        tokens.check_name("room", room)
    except ValueError as exc:
        return error_response(400, "invalid_room", str(exc))
    try:
        scope = authorize(request)
    except DomainError as exc:
        return error_response(auth_status(exc.code), exc.code, exc.message)
    if scope is not None and scope != room:
        return error_response(
            403, "token_wrong_room", f"this token is for another room, not {room!r}"
        )
    members = await node.rooms.participants(room)
    body: dict[str, Any] = {"room": room, "participants": [p.public() for p in members]}
    if not node.rooms.presence_healthy:
        body["degraded"] = ["presence"]  # this node's participants only
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_get("/api/rooms/{room}", get_room)
