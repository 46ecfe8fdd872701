"""What every HTTP answer carries, bounded JSON bodies and long-polling POSTs, display-name
rules, and library error logs without tracebacks (#11.9)."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from orbridge.rooms import tokens
from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError
from orbridge.signaling.json_body import nesting_depth, parse_json
from orbridge.signaling.logs import ClientNoise
from tests.conftest import LiveNode
from tests.support import SECRET


async def test_answers_carry_no_version_no_sniffing_and_api_data_is_not_cached(
    node: LiveNode,
) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/api/rooms", "/", "/static/js/protocol.js", "/nope"):
            async with session.get(node.url + path) as r:
                assert r.headers["Server"] == "orbridge", path
                assert "aiohttp" not in r.headers["Server"].lower()
                assert r.headers["X-Content-Type-Options"] == "nosniff", path
                if r.headers.get("Content-Type", "").startswith("application/json"):
                    assert r.headers["Cache-Control"] == "no-store", path


async def test_a_long_polling_post_over_1_mib_gets_413(node: LiveNode) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(node.url + "/socket.io/?EIO=4&transport=polling") as r:
            sid = (await r.text()).split('"sid":"')[1].split('"')[0]
        url = f"{node.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
        async with session.post(url, data=b"4" + b"x" * (1024 * 1024 + 1)) as r:
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "payload_too_large"

        async def chunks():  # no Content-Length: chunked
            yield b"40"

        async with session.post(url, data=chunks()) as r:
            assert r.status == 411
        async with session.post(url, data=b"40") as r:  # a normal POST still works
            assert r.status == 200


def test_json_bodies_are_bounded_in_depth_before_parsing() -> None:
    assert nesting_depth('{"a": [1, {"b": "[[[[[["}]}') == 3  # brackets in strings do not count
    assert nesting_depth('"\\"[[["') == 0
    assert parse_json(b'{"a": [[1]]}') == {"a": [[1]]}
    for raw, words in ((b"[" * 33 + b"]" * 33, "32 levels"), (b"\xff", "UTF-8"),
                       (b'{"a": }', "line 1 column 7")):  # fmt: skip
        with pytest.raises(DomainError) as err:
            parse_json(raw)
        assert err.value.code == "invalid_payload" and words in err.value.message


@pytest.mark.parametrize(
    "name",
    ["Prof. Li (moderator)", "李教授\uff08专家\uff09", "Li 【主持人】", "Dr [Host] Ma",
     "a\u202eb", "nul\x00", "zero\u200bwidth", "   "],
)  # fmt: skip
async def test_a_participant_cannot_rename_itself_misleadingly(node: LiveNode, name: str) -> None:
    trainee = await node.client("or-1", Role.TRAINEE, identity="student-a")
    with pytest.raises(ProtocolError) as err:
        await trainee.request("update", {"name": name})
    assert err.value.code == "invalid_payload"
    snapshot = await trainee.request("snapshot")
    assert snapshot["self"]["name"] == "Tester"


async def test_ordinary_names_are_kept_tidy(node: LiveNode) -> None:
    trainee = await node.client("or-1", Role.TRAINEE, identity="student-a")
    for name, shown in (
        ("  王   医生 ", "王 医生"),
        ("Dr. O'Neil (Cardiology)", "Dr. O'Neil (Cardiology)"),
    ):
        answer = await trainee.request("update", {"name": name})
        assert answer["participant"]["name"] == shown


def test_a_token_name_with_invisible_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="invisible"):
        tokens.mint("s" * 32, room="or-1", role=Role.EXPERT, name="Dr\u202eWang")


def test_client_frame_errors_are_logged_once_per_kind_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.engineio.noise")
    logger.addFilter(ClientNoise(interval=60))
    with caplog.at_level(logging.ERROR, logger="test.engineio.noise"):
        for _ in range(249):
            try:
                raise ValueError("bad packet")
            except ValueError:
                logger.exception("post request handler error")
    records = [r for r in caplog.records if r.name == "test.engineio.noise"]
    assert len(records) == 1
    assert records[0].exc_info is None and "ValueError" in records[0].getMessage()


async def test_a_socketio_event_nested_too_deep_is_answered_invalid_payload(
    node: LiveNode,
) -> None:
    token = tokens.mint(SECRET, room="or-1", role=Role.EXPERT, name="X", identity="dr-x")
    url = f"{node.url}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        assert (await asyncio.wait_for(ws.receive(), 5)).data.startswith("0{")
        await ws.send_str("40" + json.dumps({"token": token}))
        assert (await asyncio.wait_for(ws.receive(), 5)).data.startswith("40{")
        await ws.send_str('421["update",' + "[" * 30000 + "]" * 30000 + "]")
        answer = (await asyncio.wait_for(ws.receive(), 5)).data
        assert answer.startswith("431[")
        error = json.loads(answer[3:])[0]["error"]
        assert error == {"code": "invalid_payload",
                         "message": "the payload nests deeper than 32 levels"}  # fmt: skip
        await ws.send_str('422["join",{}]')  # the connection goes on
        assert json.loads((await asyncio.wait_for(ws.receive(), 5)).data[3:])[0]["ok"] is True
