"""The recordings library over HTTP: pages, JSON API and signed media files (docs/library.md).

* ``GET /recordings``, ``GET /recordings/{id}``: the library and replay pages (the token
  travels in the URL fragment; the pages send it as ``Authorization: Bearer``).
* ``GET /api/recordings``, ``GET|PATCH /api/recordings/{id}``: the JSON API.
* ``GET /recordings/{id}/files/{name}?exp=&sig=``: a media file behind a signed, expiring link
  (a ``<video>`` cannot send a header), with HTTP ranges so that seeking is instant.

The query string and the PATCH body are validated by the models of
:mod:`orbridge.signaling.web.recording_models`. The recordings directory is read off the event
loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from pydantic import ValidationError

from orbridge.recording.library.access import may_edit, may_view
from orbridge.recording.library.store import THUMBNAIL, RecordingNotFound, RecordingStore
from orbridge.recording.library.thumbnails import ensure_thumbnail, make_thumbnail
from orbridge.recording.manifest import Manifest, check_file_name, check_recording_id
from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Grant
from orbridge.rooms.tokens import Claims
from orbridge.signaling.json_body import parse_json
from orbridge.signaling.node import NODE, Node
from orbridge.signaling.sio.gate import describe
from orbridge.signaling.web.api import auth_status, authenticate, error_response
from orbridge.signaling.web.pages import _render
from orbridge.signaling.web.recording_models import LibraryQuery, RecordingPatch

log = logging.getLogger("orbridge.recordings")

__all__ = ["add_recording_routes", "link_signature", "signed_link"]

FILE_HEADERS = {
    "Cache-Control": "private, max-age=3600",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class _Locks:
    """Per recording: one thumbnail build and one metadata edit at a time."""

    thumbnails: dict[str, asyncio.Lock]
    edits: dict[str, asyncio.Lock]

    def thumbnail(self, recording_id: str) -> asyncio.Lock:
        return self.thumbnails.setdefault(recording_id, asyncio.Lock())

    def edit(self, recording_id: str) -> asyncio.Lock:
        return self.edits.setdefault(recording_id, asyncio.Lock())


LOCKS = web.AppKey("orbridge.recordings.locks", _Locks)


# -- signed links ---------------------------------------------------------------------------


audit = logging.getLogger("orbridge.audit")
_HOLDER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def link_signature(secret: str, recording_id: str, name: str, exp: int, holder: str = "") -> str:
    message = f"{recording_id}\n{name}\n{exp}" + (f"\n{holder}" if holder else "")
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed_link(secret: str, recording_id: str, name: str, exp: int, holder: str = "") -> str:
    """A same-origin URL of one file of a recording, valid until ``exp`` (unix seconds).
    ``holder``: the id of the token it is given to (``tid``, signed too), which the audit
    trail names when the file is opened."""
    sig = link_signature(secret, recording_id, name, exp, holder)
    tid = f"&tid={holder}" if holder else ""
    return f"/recordings/{quote(recording_id)}/files/{quote(name)}?exp={exp}{tid}&sig={sig}"


def _holder(claims: Claims | None) -> str:
    return claims.jti if claims is not None and _HOLDER_RE.match(claims.jti) else ""


def _link_expiry(node: Node, claims: Claims | None) -> int:
    # A link never outlives the token that obtained it.
    expiry = int(time.time()) + node.settings.recording_grant_ttl
    return expiry if claims is None else min(expiry, claims.expires_at)


# -- request helpers ------------------------------------------------------------------------


def _node(request: web.Request) -> Node:
    return request.app[NODE]


def _store(request: web.Request) -> RecordingStore:
    return _node(request).recordings.store


def _refusal(exc: DomainError) -> web.Response:
    return error_response(auth_status(exc.code), exc.code, exc.message)


def _caller(request: web.Request) -> Claims | None:
    """An API key (None) or a token allowed to open recordings (DomainError otherwise)."""
    claims = authenticate(request)
    if claims is not None and not claims.allows(Grant.VIEW_RECORDINGS):
        raise DomainError("forbidden", "this token does not open recordings (no view_recordings)")
    return claims


async def _load_visible(
    request: web.Request,
) -> tuple[Claims | None, Manifest] | web.Response:
    """The caller and the recording of the path if the caller may see it, else the error
    response."""
    try:
        claims = _caller(request)
    except DomainError as exc:
        return _refusal(exc)
    recording_id = request.match_info["id"]
    try:
        check_recording_id(recording_id)
        manifest = await asyncio.to_thread(_store(request).load, recording_id)
    except ValueError as exc:
        return error_response(400, "invalid_recording", str(exc))
    except RecordingNotFound:
        return error_response(404, "not_found", f"no recording {recording_id!r}")
    if not may_view(claims, manifest):
        return error_response(403, "forbidden", "this recording is not open to this token")
    return claims, manifest


def _summary(node: Node, manifest: Manifest, claims: Claims | None, exp: int) -> dict[str, Any]:
    return {
        "id": manifest.id,
        "room": manifest.room,
        "procedure": manifest.procedure,
        "hospital": manifest.hospital,
        "tags": list(manifest.tags),
        "started_ms": manifest.started_ms,
        "stopped_ms": manifest.stopped_ms,
        "duration": round(manifest.duration, 3),
        "state": manifest.state,
        "consent": manifest.consent.state,
        "participants": len(manifest.participants),
        "chapters": len(manifest.chapters),
        "has_video": manifest.main_video() is not None,
        "thumbnail": signed_link(node.secret, manifest.id, THUMBNAIL, exp, _holder(claims)),
        "can_edit": may_edit(claims, manifest),
    }


def _viewer(claims: Claims | None) -> dict[str, Any]:
    if claims is None:
        return {"api_key": True, "role": None, "identity": None, "name": None, "rooms": ["*"]}
    rooms = list(claims.library) if claims.library else [claims.room]
    return {"api_key": False, "role": claims.role.value, "identity": claims.identity,
            "name": claims.name, "rooms": rooms}  # fmt: skip


# -- the library: list and search -----------------------------------------------------------


async def list_recordings(request: web.Request) -> web.Response:
    node = _node(request)
    try:
        claims = _caller(request)
    except DomainError as exc:
        return _refusal(exc)
    try:
        query = LibraryQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return error_response(400, "invalid_query", describe(exc))
    manifests = await asyncio.to_thread(_store(request).list)
    found = [m for m in manifests if may_view(claims, m) and query.matches(m)]
    exp = _link_expiry(node, claims)
    page = found[query.offset : query.offset + query.limit]
    body = {
        "recordings": [_summary(node, m, claims, exp) for m in page],
        "total": len(found),
        "limit": query.limit,
        "offset": query.offset,
        "viewer": _viewer(claims),
    }
    return web.json_response(body)


# -- one recording ----------------------------------------------------------------------------


async def get_recording(request: web.Request) -> web.Response:
    node = _node(request)
    loaded = await _load_visible(request)
    if isinstance(loaded, web.Response):
        return loaded
    claims, manifest = loaded
    # Who opened which patient's recording, when and from where: the audit trail, and the log.
    address = node.audit.client_address(request)
    node.audit.append("recording_opened", recording=manifest.id, room=manifest.room,
                      identity=claims.identity if claims else "api-key",
                      role=claims.role.value if claims else None,
                      token_id=claims.jti if claims else None, address=address)  # fmt: skip
    audit.info("recording %s opened by %s (%s) from %s", manifest.id,
               claims.identity if claims else "api-key", claims.role.value if claims else "-",
               address)  # fmt: skip
    return web.json_response(_detail(node, manifest, claims))


def _detail(node: Node, manifest: Manifest, claims: Claims | None) -> dict[str, Any]:
    exp = _link_expiry(node, claims)
    names = [*manifest.files(), manifest.events, THUMBNAIL]
    holder = _holder(claims)
    return {
        **manifest.to_json(),
        "links": {name: signed_link(node.secret, manifest.id, name, exp, holder) for name in names},
        "links_expire": exp,
        "can_edit": may_edit(claims, manifest),
        "viewer": _viewer(claims),
    }


async def patch_recording(request: web.Request) -> web.Response:
    node = _node(request)
    loaded = await _load_visible(request)
    if isinstance(loaded, web.Response):
        return loaded
    claims, manifest = loaded
    if not may_edit(claims, manifest):
        return error_response(
            403, "forbidden", "only a moderator of this room or an API key may edit a recording"
        )
    try:
        body = parse_json(await request.read())
    except DomainError as exc:
        return error_response(400, exc.code, exc.message)
    if not isinstance(body, dict):
        return error_response(400, "invalid_payload", "the body must be a JSON object")
    try:
        patch = RecordingPatch.model_validate(body)
    except ValidationError as exc:
        return error_response(400, "invalid_payload", describe(exc))
    by = claims.identity if claims is not None else "api-key"
    now_ms = int(time.time() * 1000)
    async with request.app[LOCKS].edit(manifest.id):
        live = node.recordings.recording(manifest.room)
        if live is not None and live.id == manifest.id:
            # The recorder owns a running recording's manifest and rewrites it every few
            # seconds: edit its copy, and let it save.
            patch.apply(live.manifest, by, now_ms)
            live.save_soon()
            updated = live.manifest
        else:
            try:
                updated = await asyncio.to_thread(_patch_on_disk, _store(request), manifest.id,
                                                  patch, by, now_ms)  # fmt: skip
            except RecordingNotFound:
                return error_response(404, "not_found", f"no recording {manifest.id!r}")
    log.info("recording %s edited by %s: %s", manifest.id, by, sorted(patch.model_fields_set))
    node.audit.append("recording_edited", recording=manifest.id, room=manifest.room, by=by,
                      by_role=claims.role.value if claims else None,
                      address=node.audit.client_address(request),
                      fields=sorted(patch.model_fields_set), consent=updated.consent.state,
                      previous_consent=manifest.consent.state)  # fmt: skip
    return web.json_response(_detail(node, updated, claims))


def _patch_on_disk(store: RecordingStore, recording_id: str, patch: RecordingPatch, by: str,
                   now_ms: int) -> Manifest:  # fmt: skip
    # Re-read right before saving (never the store's cached object, which others share).
    directory = store.directory(recording_id)
    try:
        manifest = Manifest.load(directory)
    except FileNotFoundError as exc:
        raise RecordingNotFound(recording_id) from exc
    patch.apply(manifest, by, now_ms)
    manifest.save(directory)
    return manifest


# -- media files ----------------------------------------------------------------------------


def _content_type(manifest: Manifest, name: str) -> str:
    if name == manifest.events:
        return "application/x-ndjson"
    if name == THUMBNAIL:
        return "image/jpeg"
    kind = next((t.kind for t in manifest.tracks for s in t.segments if s.file == name), "video")
    prefix = "audio" if kind == "audio" else "video"
    return f"{prefix}/x-matroska" if name.endswith(".mkv") else f"{prefix}/webm"


def _check_link(secret: str, recording_id: str, name: str, query: Any) -> DomainError | None:
    exp_text, sig, holder = query.get("exp", ""), query.get("sig", ""), query.get("tid", "")
    if not exp_text.isdigit() or len(exp_text) > 12 or not sig:
        return DomainError("link_invalid", "this media link is incomplete")
    if holder and not _HOLDER_RE.match(holder):
        return DomainError("link_invalid", "this media link is not valid")
    expected = link_signature(secret, recording_id, name, int(exp_text), holder)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        return DomainError("link_invalid", "this media link is not valid")
    if int(exp_text) < time.time():
        return DomainError("link_expired", "this media link has expired; reload the page")
    return None


async def get_file(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    recording_id, name = request.match_info["id"], request.match_info["name"]
    try:
        check_recording_id(recording_id)
    except ValueError as exc:
        return error_response(400, "invalid_recording", str(exc))
    try:
        check_file_name(name)
    except ValueError as exc:
        return error_response(400, "invalid_file", str(exc))
    refused = _check_link(node.secret, recording_id, name, request.query)
    if refused is not None:
        return error_response(403, refused.code, refused.message)
    store = _store(request)
    try:
        manifest = await asyncio.to_thread(store.load, recording_id)
        if manifest.consent.state == "withdrawn":
            # Links given out before the patient withdrew consent stop working at once.
            return error_response(403, "consent_withdrawn", "the patient withdrew consent")
        headers = {**FILE_HEADERS, "Content-Type": _content_type(manifest, name)}
        made: Path | bytes | None = None
        if name == THUMBNAIL:
            async with request.app[LOCKS].thumbnail(recording_id):
                made = await asyncio.to_thread(_thumbnail, store, manifest)
        if not isinstance(made, bytes):
            made = await asyncio.to_thread(store.file_path, recording_id, name)
    except RecordingNotFound:
        return error_response(404, "not_found", f"no file {name!r} in recording {recording_id!r}")
    except ValueError as exc:
        return error_response(400, "invalid_file", str(exc))
    # Every file served (each range request of a replay too) is in the audit trail.
    node.audit.append("recording_file_opened", recording=recording_id, room=manifest.room,
                      file=name, token_id=request.query.get("tid") or None,
                      address=node.audit.client_address(request),
                      range=request.headers.get("Range"))  # fmt: skip
    if isinstance(made, bytes):
        return web.Response(body=made, headers=headers)
    return web.FileResponse(made, headers=headers)


def _thumbnail(store: RecordingStore, manifest: Manifest) -> Path | bytes:
    """The thumbnail's file; its bytes when it cannot be saved (a read-only or full disk)."""
    directory = store.directory(manifest.id)
    try:
        return ensure_thumbnail(directory, manifest)
    except OSError as exc:
        log.warning("thumbnail of %s not saved: %s", manifest.id, exc)
        return make_thumbnail(directory, manifest)


# -- pages ------------------------------------------------------------------------------------


async def library_page(request: web.Request) -> web.Response:
    return _render("library.html", request, {})


async def replay_page(request: web.Request) -> web.Response:
    recording_id = request.match_info["id"]
    try:
        check_recording_id(recording_id)
    except ValueError:
        message = "This is not a recording's address. Open the recording from the library."
        context = {"title": "Not a recording", "message": message}
        return _render("error.html", request, context, status=400)
    return _render("replay.html", request, {"recording_id": recording_id})


def add_recording_routes(app: web.Application) -> None:
    """Add /recordings pages, /api/recordings and signed media file routes to `app`."""
    app[LOCKS] = _Locks({}, {})
    app.router.add_get("/recordings", library_page, name="library")
    app.router.add_get("/recordings/{id}", replay_page, name="replay")
    app.router.add_get("/recordings/{id}/files/{name}", get_file, name="recording_file")
    app.router.add_get("/api/recordings", list_recordings)
    app.router.add_get("/api/recordings/{id}", get_recording)
    app.router.add_patch("/api/recordings/{id}", patch_recording)
