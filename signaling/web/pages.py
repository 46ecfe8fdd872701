"""Browser pages: the landing page, the live room page behind every join link, and /static/.

`setup_pages(app)` adds them to an app built by `create_app`. The pages carry a strict
Content-Security-Policy (scripts only from this origin, none inline), so all JavaScript lives
in static/js/ as ES modules, and the vendored libraries in static/vendor/ (no CDN).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

import orbridge.signaling
from orbridge.rooms import tokens
from orbridge.signaling import __version__
from orbridge.signaling.node import NODE

PACKAGE_DIR = Path(orbridge.signaling.__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
# static/ sits beside signaling/ both in the repository and installed (orbridge/static).
STATIC_DIR = PACKAGE_DIR.parent / "static"
STATIC_PREFIX = "/static/"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",  # the Socket.IO websocket is same-origin (CSP3: 'self' covers ws/wss)
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # The later consoles use the camera and microphone of this origin only.
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=(), payment=(), usb=()",
    "Cache-Control": "no-store",
}

STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new release must not run stale modules
}


def _render(
    template: str, request: web.Request, context: dict[str, Any], status: int = 200
) -> web.Response:
    response = aiohttp_jinja2.render_template(
        template, request, {"version": __version__, **context}, status=status
    )
    response.headers.update(PAGE_HEADERS)
    return response


async def index(request: web.Request) -> web.Response:
    return _render("index.html", request, {"origin": str(request.url.origin())})


async def room_page(request: web.Request) -> web.Response:
    room = request.match_info["room"]
    try:
        tokens.check_name("room", room)
    except ValueError:
        return _render(
            "error.html",
            request,
            {
                "title": "Not a room name",
                "message": (
                    "Room names are 1-64 characters of letters, digits, '.', '_' or '-',"
                    " starting with a letter or digit. Check the join link you were given."
                ),
            },
            status=400,
        )
    settings = request.app[NODE].settings
    return _render("room.html", request, {"room": room, "video_codec": settings.video_codec})


async def _static_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith(STATIC_PREFIX):
        for name, value in STATIC_HEADERS.items():
            response.headers.setdefault(name, value)


def setup_pages(app: web.Application) -> None:
    """Add the browser pages and /static/ to `app` (before it starts)."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(("html",), default=True),
        undefined=jinja2.StrictUndefined,
    )
    app.router.add_get("/", index, name="index")
    app.router.add_get("/room/{room}", room_page, name="room")
    app.router.add_static(STATIC_PREFIX, STATIC_DIR, name="static", follow_symlinks=False)
    app.on_response_prepare.append(_static_headers)
