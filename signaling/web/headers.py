"""Headers every HTTP answer carries: no sniffing, no version banner, no caching of API data."""

from __future__ import annotations

from aiohttp import web

SERVER = "orbridge"  # not aiohttp's "Python/3.x aiohttp/3.x": no versions for a scanner


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["Server"] = SERVER
    headers.setdefault("X-Content-Type-Options", "nosniff")
    content_type = headers.get("Content-Type", "")
    if content_type.startswith(("application/json", "application/fhir+json")):
        # presence, recordings' metadata and vitals are patient data: never kept by a cache
        headers.setdefault("Cache-Control", "no-store")


def add_header_rules(app: web.Application) -> None:
    app.on_response_prepare.append(_headers)
