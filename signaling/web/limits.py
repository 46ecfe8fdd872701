"""Bounds on what reaches Engine.IO: a long-polling POST is refused before it is read.

python-engineio reads a polling POST of any length from the stream and, over its own bound,
drops the session and answers nothing useful; this answers 413 (or 411 without a length) in
our error format first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from orbridge.signaling.web.api import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def engineio_body_limit(path: str, max_bytes: int) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and request.path.startswith(path):
            length = request.content_length
            if length is None:
                return error_response(
                    411, "length_required", "a long-polling POST must give its Content-Length"
                )
            if length > max_bytes:
                return error_response(
                    413,
                    "payload_too_large",
                    f"a long-polling POST carries at most {max_bytes} bytes",
                )
        return await handler(request)

    return limit
