"""The recordings library over HTTP: listing and search, access by grant, scope and consent,
signed media links with ranges, path traversal, metadata edits and thumbnails."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import cv2
import numpy as np
import pytest
from yarl import URL

from orbridge.media.sim.timecode import read_timestamp
from orbridge.recording.library.store import THUMBNAIL
from orbridge.recording.library.thumbnails import ensure_thumbnail
from orbridge.recording.manifest import Consent, Manifest, ParticipantEntry
from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from orbridge.signaling.web.recordings import link_signature
from tests.conftest import LiveNode, StartNode, mint
from tests.recording.sample import make_sample_recording
from tests.support import SECRET

API_KEY = "library-api-key-0123456789"
A = "or-1-20261118T110640Z-000a"  # or-1, written consent, 2026-11-18
B = "or-2-20261119T110640Z-000b"  # or-2, verbal consent, 2026-11-19
C = "or-1-20261120T184000Z-000c"  # or-1, consent pending, 2026-11-20
D = "or-3-20261120T190000Z-000d"  # or-3, no video (audio-only session, say)
DAY_A, DAY_B, DAY_C = 1_795_000_000_000, 1_795_086_400_000, 1_795_200_000_000
VIDEO = "laparoscope-surgeon-1-001.webm"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four recordings, built once (the sample encodes real VP8); tests get a copy."""
    root = tmp_path_factory.mktemp("library")
    make_sample_recording(root, A, room="or-1", seconds=2.0, start_ms=DAY_A)
    make_sample_recording(root, B, room="or-2", seconds=1.0, start_ms=DAY_B, consent="verbal",
                          procedure="Appendectomy", hospital="Yushu Prefecture Hospital",
                          tags=("appendix", "emergency"))  # fmt: skip
    make_sample_recording(root, C, room="or-1", seconds=1.0, start_ms=DAY_C, consent="pending",
                          procedure="Inguinal hernia repair", tags=("hernia",))  # fmt: skip
    audio_only = Manifest(D, "or-3", DAY_C + 1_200_000, state="complete", node="n",
                          procedure="Case discussion", hospital="Qinghai Provincial Hospital",
                          tags=["teaching"], consent=Consent("not_required"),
                          stopped_ms=DAY_C + 1_500_000,
                          participants=[ParticipantEntry("expert-9", "Dr. Lin", "expert",
                                                         DAY_C + 1_200_000)])  # fmt: skip
    (root / D).mkdir()
    audio_only.save(root / D)
    return root


@pytest.fixture
def recordings(library: Path, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "recordings"
    shutil.copytree(library, root)
    (tmp_path / "outside.txt").write_text("SECRET OUTSIDE THE RECORDINGS")
    yield root


@pytest.fixture
async def lib(start_node: StartNode, recordings: Path) -> LiveNode:
    return await start_node(recordings_dir=recordings, api_keys=[API_KEY])


async def call(node: LiveNode, method: str, path: str, credential: str | None = None,
               **kw: Any) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
    headers = dict(kw.pop("headers", {}))
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    async with (
        aiohttp.ClientSession() as session,
        # encoded=True: the path reaches the server as written (no client-side normalizing)
        session.request(method, URL(node.url + path, encoded=True), headers=headers, **kw) as r,
    ):
        is_json = r.headers.get("Content-Type", "").startswith("application/json")
        body = await r.json() if is_json else await r.read()
        return r.status, body, dict(r.headers)


def ids(body: dict[str, Any]) -> list[str]:
    return [r["id"] for r in body["recordings"]]


def code(body: Any) -> str:
    return str(body["error"]["code"])


# -- listing and search -------------------------------------------------------------------------


async def test_list_and_filters(lib: LiveNode) -> None:
    status, body, _ = await call(lib, "GET", "/api/recordings", API_KEY)
    assert status == 200
    assert ids(body) == [D, C, B, A] and body["total"] == 4  # newest first
    first = next(r for r in body["recordings"] if r["id"] == A)
    assert first["procedure"] == "Laparoscopic cholecystectomy" and first["room"] == "or-1"
    assert first["tags"] == ["cholecystectomy", "teaching"] and first["consent"] == "written"
    assert first["participants"] == 2 and first["chapters"] == 1 and first["has_video"]
    assert first["duration"] == pytest.approx(2.04) and first["state"] == "complete"
    assert first["thumbnail"].startswith(f"/recordings/{A}/files/thumbnail.jpg?exp=")

    async def search(query: str) -> list[str]:
        status, body, _ = await call(lib, "GET", f"/api/recordings?{query}", API_KEY)
        assert status == 200, body
        return ids(body)

    assert await search("q=HERNIA") == [C]  # procedure, any case
    assert await search("q=yushu") == [B]  # hospital
    assert await search("q=emergency") == [B]  # a tag
    assert await search("q=or-3") == [D]  # the room
    assert await search("q=dr.+lin") == [D]  # a participant's name
    assert await search("q=nothing-like-it") == []
    assert await search("procedure=cholecyst") == [A]
    assert await search("hospital=maduo") == [C, A]
    assert await search("tag=Teaching") == [D, A]  # a whole tag, any case
    assert await search("tag=teach") == []
    assert await search("from=2026-11-19") == [D, C, B]
    assert await search("to=2026-11-19") == [B, A]
    assert await search("from=2026-11-19&to=2026-11-19") == [B]
    # 2026-11-20 18:40 UTC is already the 21st in Beijing (UTC+8): dates are the viewer's.
    assert await search("from=2026-11-21&tz=480") == [D, C]
    assert await search("procedure=repair&hospital=maduo&tag=hernia&q=or-1") == [C]
    status, body, _ = await call(lib, "GET", "/api/recordings?limit=2&offset=1", API_KEY)
    assert ids(body) == [C, B] and body["total"] == 4


@pytest.mark.parametrize(
    "query",
    ["from=2026-13-01", "from=yesterday", "to=2026-02-30", "from=2026-11-20&to=2026-11-19",
     "limit=0", "limit=1000", "limit=ten", "offset=-1", "tz=5000", "q=" + "x" * 201],
)  # fmt: skip
async def test_bad_query_is_400(lib: LiveNode, query: str) -> None:
    status, body, _ = await call(lib, "GET", f"/api/recordings?{query}", API_KEY)
    assert status == 400 and code(body) == "invalid_query"
    assert body["error"]["message"]


async def test_list_is_filtered_by_scope_grant_and_consent(lib: LiveNode) -> None:
    async def listed(token: str) -> list[str]:
        status, body, _ = await call(lib, "GET", "/api/recordings", token)
        assert status == 200, body
        return ids(body)

    assert await listed(mint("or-1", Role.TRAINEE)) == [A]  # C's consent is pending
    assert await listed(mint("or-1", Role.EXPERT)) == [A]
    assert await listed(mint("or-1", Role.MODERATOR)) == [C, A]  # the room's moderator sees it
    assert await listed(mint("or-2", Role.MODERATOR)) == [B]  # not or-1's pending one
    assert await listed(mint("or-9", Role.TRAINEE)) == []
    room = {"room": tokens.LIBRARY_ROOM}
    assert await listed(mint(name="T", role=Role.TRAINEE, library=["or-2"], **room)) == [B]
    assert await listed(mint(role=Role.TRAINEE, library=["or-*"], **room)) == [D, B, A]
    assert await listed(mint(role=Role.TRAINEE, library=["or-1", "or-3"], **room)) == [D, A]
    assert await listed(mint(role=Role.MODERATOR, library=["or-?"], **room)) == [D, C, B, A]
    assert await listed(mint(role=Role.TRAINEE, library=["icu-*"], **room)) == []
    # A surgeon sees recordings only when given the optional grant.
    status, body, _ = await call(lib, "GET", "/api/recordings", mint("or-1", Role.SURGEON))
    assert status == 403 and code(body) == "forbidden"
    assert await listed(mint("or-1", Role.SURGEON, extra_grants={"view_recordings"})) == [A]
    status, body, _ = await call(lib, "GET", "/api/recordings", mint("or-1", Role.DEVICE))
    assert status == 403 and code(body) == "forbidden"


async def test_authentication_is_required(lib: LiveNode) -> None:
    status, body, _ = await call(lib, "GET", "/api/recordings")
    assert status == 401 and code(body) == "unauthorized"
    status, body, _ = await call(lib, "GET", f"/api/recordings/{A}", "not-a-token")
    assert status == 401 and code(body) == "token_invalid"
    expired = mint("or-1", Role.TRAINEE, ttl_s=10, now=time.time() - 100)
    status, body, _ = await call(lib, "GET", "/api/recordings", expired)
    assert status == 401 and code(body) == "token_expired"


# -- one recording and its files ----------------------------------------------------------------


async def test_manifest_with_links(lib: LiveNode) -> None:
    token = mint("or-1", Role.TRAINEE, ttl_s=600)
    status, body, _ = await call(lib, "GET", f"/api/recordings/{A}", token)
    assert status == 200
    assert body["id"] == A and body["room"] == "or-1" and body["version"] == 1
    assert body["tracks"][0]["segments"][0]["file"] == VIDEO
    assert set(body["links"]) == {VIDEO, "events.jsonl", THUMBNAIL}
    assert body["can_edit"] is False and body["viewer"]["role"] == "trainee"
    # A link never outlives the token that fetched it.
    exp = int(parse_qs(urlsplit(body["links"][VIDEO]).query)["exp"][0])
    assert exp == body["links_expire"] and exp <= time.time() + 601
    status, body, _ = await call(lib, "GET", f"/api/recordings/{A}", API_KEY)
    assert int(parse_qs(urlsplit(body["links"][VIDEO]).query)["exp"][0]) > time.time() + 3600
    assert body["can_edit"] is True


async def test_direct_access_is_checked(lib: LiveNode) -> None:
    trainee = mint("or-1", Role.TRAINEE)
    for recording, token, expected in [
        (B, trainee, (403, "forbidden")),  # another room's
        (C, trainee, (403, "forbidden")),  # pending consent
        (C, mint("or-1", Role.MODERATOR), (200, None)),
        (C, mint("or-2", Role.MODERATOR), (403, "forbidden")),
        (A, mint(tokens.LIBRARY_ROOM, Role.TRAINEE, library=["or-2*"]), (403, "forbidden")),
        (A, mint(tokens.LIBRARY_ROOM, Role.TRAINEE, library=["or-1*"]), (200, None)),
        ("or-1-20990101T000000Z-ffff", trainee, (404, "not_found")),
        ("%2e%2e", trainee, (400, "invalid_recording")),
        ("a..b", trainee, (400, "invalid_recording")),
        ("-dash", trainee, (400, "invalid_recording")),
    ]:
        status, body, _ = await call(lib, "GET", f"/api/recordings/{recording}", token)
        assert (status, code(body) if status != 200 else None) == expected, recording


async def test_library_token_cannot_join_a_room(lib: LiveNode) -> None:
    token = mint(tokens.LIBRARY_ROOM, Role.TRAINEE, library=["or-*"])
    client = RoomClient(lib.url, token)
    lib.clients.append(client)
    with pytest.raises(ProtocolError) as refused:
        await client.connect(room="or-1")
    assert refused.value.code == "token_invalid"
    assert "library token" in str(refused.value)


def link(node: LiveNode, recording: str, name: str, exp: int | None = None) -> str:
    exp = int(time.time()) + 600 if exp is None else exp
    sig = link_signature(node.node.secret, recording, name, exp)
    return f"/recordings/{recording}/files/{name}?exp={exp}&sig={sig}"


async def test_range_requests_serve_the_exact_bytes(lib: LiveNode, recordings: Path) -> None:
    _, body, _ = await call(lib, "GET", f"/api/recordings/{A}", API_KEY)
    url = body["links"][VIDEO]
    data = (recordings / A / VIDEO).read_bytes()
    status, whole, headers = await call(lib, "GET", url)
    assert status == 200 and whole == data
    assert headers["Content-Type"] == "video/webm"
    assert headers["Cache-Control"] == "private, max-age=3600"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Accept-Ranges"] == "bytes"
    status, part, headers = await call(lib, "GET", url, headers={"Range": "bytes=1000-4999"})
    assert status == 206 and part == data[1000:5000]
    assert headers["Content-Range"] == f"bytes 1000-4999/{len(data)}"
    status, tail, _ = await call(lib, "GET", url, headers={"Range": "bytes=-100"})
    assert status == 206 and tail == data[-100:]
    status, _, _ = await call(lib, "GET", url, headers={"Range": f"bytes={len(data) + 5}-"})
    assert status == 416
    status, events, headers = await call(lib, "GET", body["links"]["events.jsonl"])
    assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
    assert events == (recordings / A / "events.jsonl").read_bytes()


async def test_links_are_checked(lib: LiveNode) -> None:
    good = link(lib, A, VIDEO)
    assert (await call(lib, "GET", good))[0] == 200
    path, query = good.split("?")
    params = parse_qs(query)
    exp, sig = params["exp"][0], params["sig"][0]
    forged = [
        f"{path}",  # no signature
        f"{path}?exp={exp}",
        f"{path}?exp={exp}&sig={'0' * 64}",
        f"{path}?exp={int(exp) + 1}&sig={sig}",  # a longer life
        f"{path}?exp=abc&sig={sig}",
        f"/recordings/{A}/files/events.jsonl?exp={exp}&sig={sig}",  # another file
        f"/recordings/{B}/files/{VIDEO}?exp={exp}&sig={sig}",  # another recording
    ]
    for url in forged:
        status, body, _ = await call(lib, "GET", url)
        assert status == 403 and code(body) == "link_invalid", url
    status, body, _ = await call(lib, "GET", link(lib, A, VIDEO, exp=int(time.time()) - 5))
    assert status == 403 and code(body) == "link_expired"
    # Signed with another secret (another deployment): refused.
    other = link_signature("another-secret-0123456789abcdef", A, VIDEO, int(exp))
    status, body, _ = await call(lib, "GET", f"{path}?exp={exp}&sig={other}")
    assert status == 403 and code(body) == "link_invalid"


REFUSED_NAMES = [
    "..", "%2e%2e", "..%2fmanifest.json", "%2e%2e%2f%2e%2e%2foutside.txt", "%2Fetc%2Fpasswd",
    "%2fetc%2fpasswd", ".hidden", "a%00b", "%5c..%5coutside.txt", f"..%2f..%2f{B}%2f{VIDEO}",
]  # fmt: skip
UNLISTED_NAMES = ["manifest.json", f"{VIDEO}.json", "manifest.json.tmp", "nothing.webm"]


@pytest.mark.parametrize(
    ("name", "status", "error"),
    [(n, 400, "invalid_file") for n in REFUSED_NAMES]
    + [(n, 404, "not_found") for n in UNLISTED_NAMES],
)
async def test_path_traversal_is_refused(lib: LiveNode, name: str, status: int, error: str) -> None:
    # Signed for exactly that name: the refusal is the path's, not the signature's.
    exp = int(time.time()) + 600
    sig = link_signature(lib.node.secret, A, unquote(name), exp)
    got, body, _ = await call(lib, "GET", f"/recordings/{A}/files/{name}?exp={exp}&sig={sig}")
    assert (got, code(body)) == (status, error)
    assert "SECRET OUTSIDE" not in str(body)


async def test_raw_dot_segments_never_leave_the_recording(lib: LiveNode) -> None:
    raws = [
        f"/recordings/{A}/files/../../outside.txt",
        f"/recordings/{A}/../../outside.txt",
        "/recordings/../outside.txt",
        f"/recordings/{A}/files/../manifest.json",
    ]
    for raw in raws:
        async with (
            aiohttp.ClientSession() as session,
            session.get(URL(lib.url + raw, encoded=True)) as response,
        ):
            body = await response.read()
        assert b"SECRET OUTSIDE" not in body and b'"tracks"' not in body, raw


# -- editing ----------------------------------------------------------------------------------


async def test_patch_metadata_and_consent(lib: LiveNode, recordings: Path) -> None:
    moderator = mint("or-1", Role.MODERATOR, identity="mod-1")
    trainee = mint("or-1", Role.TRAINEE)
    change = {"procedure": "Cholecystectomy (teaching case)", "hospital": "Maduo County Hospital",
              "tags": ["cholecystectomy", "  calot ", "calot"]}  # fmt: skip
    status, body, _ = await call(lib, "PATCH", f"/api/recordings/{A}", trainee, json=change)
    assert status == 403 and code(body) == "forbidden"
    other_moderator = mint("or-2", Role.MODERATOR)
    status, body, _ = await call(lib, "PATCH", f"/api/recordings/{A}", other_moderator, json={})
    assert status == 403 and code(body) == "forbidden"
    status, body, _ = await call(lib, "PATCH", f"/api/recordings/{A}", moderator, json=change)
    assert status == 200, body
    assert body["procedure"] == change["procedure"] and body["tags"] == ["cholecystectomy", "calot"]
    saved = Manifest.load(recordings / A)
    assert saved.hospital == "Maduo County Hospital" and saved.tags == ["cholecystectomy", "calot"]
    assert saved.tracks[0].segments[0].file == VIDEO  # media untouched
    assert saved.consent.state == "written"
    # Consent withdrawn: the trainee no longer sees it, the moderator does.
    withdraw = {"consent": {"state": "withdrawn", "note": "patient asked on day 2"}}
    status, body, _ = await call(lib, "PATCH", f"/api/recordings/{A}", moderator, json=withdraw)
    assert status == 200 and body["consent"]["state"] == "withdrawn"
    assert body["consent"]["by"] == "mod-1" and body["consent"]["updated_ms"] > DAY_A
    assert (await call(lib, "GET", f"/api/recordings/{A}", trainee))[0] == 403
    _, listed, _ = await call(lib, "GET", "/api/recordings", trainee)
    assert ids(listed) == []
    # An API key may edit any recording.
    status, body, _ = await call(lib, "PATCH", f"/api/recordings/{C}", API_KEY,
                                 json={"consent": {"state": "written"}})  # fmt: skip
    assert status == 200 and body["consent"]["by"] == "api-key"
    _, listed, _ = await call(lib, "GET", "/api/recordings", trainee)
    assert ids(listed) == [C]


async def test_patch_of_a_running_recording_goes_to_its_recorder(
    lib: LiveNode, recordings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Running:
        """What RecordingService.recording(room) returns while a room records."""

        id = A

        def __init__(self) -> None:
            self.manifest = Manifest.load(recordings / A)
            self.saves = 0

        def save_soon(self) -> None:
            self.saves += 1

    running = Running()
    service = lib.node.recordings
    monkeypatch.setattr(service, "recording", lambda room: running if room == "or-1" else None)
    status, body, _ = await call(lib, "PATCH", f"/api/recordings/{A}", API_KEY,
                                 json={"tags": ["live"]})  # fmt: skip
    assert status == 200 and body["tags"] == ["live"]
    # The recorder owns the file while it records: it got the change, and saves it itself.
    assert running.manifest.tags == ["live"] and running.saves == 1
    assert Manifest.load(recordings / A).tags == ["cholecystectomy", "teaching"]


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"tags": [f"t{i}" for i in range(17)]}, "tags"),
        ({"tags": ["x" * 41]}, "tags.0"),
        ({"tags": [""]}, "tags.0"),
        ({"tags": "teaching"}, "tags"),
        ({"consent": {"state": "maybe"}}, "consent.state"),
        ({"consent": {"state": "written", "note": "n" * 501}}, "consent.note"),
        ({"consent": {"state": "written", "by": "someone"}}, "consent.by"),
        ({"procedure": 42}, "procedure"),
        ({"procedure": "p" * 201}, "procedure"),
        ({"hospital": "bad\x07bell"}, "hospital"),
        ({"tracks": []}, "tracks"),
        ({"started_ms": 0}, "started_ms"),
        ({}, "at least one"),
        ({"procedure": None}, "may not be null"),
    ],
)
async def test_patch_validation(lib: LiveNode, payload: dict[str, Any], words: str) -> None:
    status, body, _ = await call(lib, "PATCH", f"/api/recordings/{A}", API_KEY, json=payload)
    assert status == 400 and code(body) == "invalid_payload"
    assert words in body["error"]["message"]


async def test_patch_needs_a_json_object(lib: LiveNode) -> None:
    for data in (b"not json", b"[1, 2]", b'"text"'):
        status, body, _ = await call(lib, "PATCH", f"/api/recordings/{A}", API_KEY, data=data,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        assert status == 400 and code(body) == "invalid_payload"
    status, body, _ = await call(lib, "PATCH", "/api/recordings/nope-1", API_KEY, json={})
    assert status == 404 and code(body) == "not_found"


async def test_patch_with_deeply_nested_json_is_refused_not_a_500(lib: LiveNode) -> None:
    for data in (b'{"tags": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"[" * 50_000):
        json_type = {"Content-Type": "application/json"}
        status, body, headers = await call(
            lib, "PATCH", f"/api/recordings/{A}", API_KEY, data=data, headers=json_type
        )
        assert status == 400 and code(body) == "invalid_payload"
        assert "32 levels" in body["error"]["message"]
        assert headers["Cache-Control"] == "no-store"


# -- thumbnails ---------------------------------------------------------------------------------


async def thumbnail(node: LiveNode, recording: str) -> np.ndarray:
    _, body, _ = await call(node, "GET", f"/api/recordings/{recording}", API_KEY)
    status, data, headers = await call(node, "GET", body["links"][THUMBNAIL])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


async def test_thumbnail_is_a_jpeg_of_the_video(lib: LiveNode, recordings: Path) -> None:
    assert not (recordings / A / THUMBNAIL).exists()
    image = await thumbnail(lib, A)
    assert image.shape == (180, 320, 3)
    assert (recordings / A / THUMBNAIL).is_file()
    # It is the laparoscope picture at about 10 % of the video: its timestamp code says so.
    stamp = read_timestamp(image)
    assert stamp is not None and 3 <= stamp[1] <= 9, stamp  # frame 6 of 60
    # Two at once: one is built, both are served.
    first, second = await asyncio.gather(thumbnail(lib, B), thumbnail(lib, B))
    assert first.shape == second.shape == (180, 320, 3)


async def test_thumbnail_without_video_is_a_placeholder(lib: LiveNode) -> None:
    image = await thumbnail(lib, D)
    assert image.shape[1] == 320 and image.shape[0] > 0
    assert read_timestamp(image) is None


async def test_thumbnail_served_when_it_cannot_be_saved(
    lib: LiveNode, recordings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from orbridge.signaling.web import recordings as recordings_api

    def disk_full(directory: Path, manifest: Manifest) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recordings_api, "ensure_thumbnail", disk_full)
    assert (await thumbnail(lib, A)).shape == (180, 320, 3)
    assert not (recordings / A / THUMBNAIL).exists()


def test_live_thumbnail_is_refreshed(library: Path, tmp_path: Path) -> None:
    directory = tmp_path / A
    shutil.copytree(library / A, directory)
    manifest = Manifest.load(directory)
    path = ensure_thumbnail(directory, manifest)
    old = time.time() - 120
    os.utime(path, (old, old))
    ensure_thumbnail(directory, manifest)  # complete: kept as it is
    assert path.stat().st_mtime == pytest.approx(old)
    manifest.state = "recording"
    ensure_thumbnail(directory, manifest, now=old + 30)  # recording, but only 30 s old
    assert path.stat().st_mtime == pytest.approx(old)
    ensure_thumbnail(directory, manifest)
    assert path.stat().st_mtime > old + 100
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_unreadable_video_gets_a_placeholder(library: Path, tmp_path: Path) -> None:
    directory = tmp_path / A
    shutil.copytree(library / A, directory)
    (directory / VIDEO).write_bytes(b"\x1aE\xdf\xa3 not really a webm")
    path = ensure_thumbnail(directory, Manifest.load(directory))
    image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] == 320


# -- pages ------------------------------------------------------------------------------------


async def test_pages(lib: LiveNode) -> None:
    status, body, headers = await call(lib, "GET", "/recordings")
    assert status == 200 and b'src="/static/js/library.js"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, body, _ = await call(lib, "GET", f"/recordings/{A}")
    assert status == 200 and b'src="/static/js/replay.js"' in body
    assert f'data-recording-id="{A}"'.encode() in body
    status, body, _ = await call(lib, "GET", "/recordings/-bad")
    assert status == 400 and b"Not a recording" in body
    assert SECRET.encode() not in body


async def test_opening_a_recording_is_audited(
    lib: LiveNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="orbridge.audit")
    token = mint("or-1", Role.TRAINEE, "Student Chen", "trainee-7")
    status, _, _ = await call(lib, "GET", f"/api/recordings/{A}", token)
    assert status == 200
    [record] = [r for r in caplog.records if r.name == "orbridge.audit"]
    assert A in record.getMessage() and "trainee-7 (trainee)" in record.getMessage()
    assert "127.0.0.1" in record.getMessage()
