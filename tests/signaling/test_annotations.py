"""Annotations over the protocol: validation, grants, relay, overlay, undo/clear, late joiners,
rate limits, nodes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from orbridge.rooms.annotations.model import MAX_OVERLAY, Overlay, color_for, make_annotation
from orbridge.rooms.roles import Grant, Role
from orbridge.signaling.cli.client import ProtocolError
from tests.conftest import LiveNode, StartNode

TRACK = "TR_0123456789ab"


def arrow(**extra: Any) -> dict[str, Any]:
    return {"type": "arrow", "track_id": TRACK, "points": [[0.2, 0.3], [0.5, 0.55]],
            "frame": {"rtp_timestamp": 123456789, "media_time": 4.2}, **extra}  # fmt: skip


async def test_an_expert_draws_and_the_room_sees_it(node: LiveNode) -> None:
    surgeon = await node.client("or-1", Role.SURGEON, identity="dr-ma")
    trainee = await node.client("or-1", Role.TRAINEE, identity="student")
    expert = await node.client("or-1", Role.EXPERT, identity="dr-wang", name="Dr Wang")
    device = await node.client("or-1", Role.DEVICE, identity="monitor")
    sent = int(time.time() * 1000)
    ack = await expert.request("annotate", arrow(sent_ms=sent, client_id="c-1"))
    assert ack["id"].startswith("AN_") and ack["color"] == color_for("dr-wang")
    for client in (surgeon, trainee, expert):
        got = await client.next_event("annotation")
        assert got["id"] == ack["id"] and got["type"] == "arrow"
        assert got["author"] == "dr-wang" and got["author_name"] == "Dr Wang"
        assert got["points"] == [[0.2, 0.3], [0.5, 0.55]] and got["track_id"] == TRACK
        # source_ts: the same frame on the recording's clock; None, as no such track is forwarded
        assert got["frame"] == {"rtp_timestamp": 123456789, "media_time": 4.2, "source_ts": None}
        assert got["sent_ms"] == sent and got["server_ms"] >= sent and got["client_id"] == "c-1"
    await asyncio.sleep(0.2)
    assert device.pending("annotation") == []  # a vitals gateway has no business with drawings


@pytest.mark.parametrize("role", [Role.TRAINEE, Role.SURGEON, Role.DEVICE])
async def test_only_annotators_may_draw(node: LiveNode, role: Role) -> None:
    watcher = await node.client("or-1", Role.EXPERT, identity="watcher")
    client = await node.client("or-1", role)
    with pytest.raises(ProtocolError) as err:
        await client.request("annotate", arrow())
    assert err.value.code == "forbidden" and "annotate" in err.value.message
    await asyncio.sleep(0.2)
    assert watcher.pending("annotation") == []


BAD = [
    {"type": "scribble"},
    {"points": [[0.2, 0.3]]},  # an arrow needs two points
    {"points": [[0.2, 1.3], [0.5, 0.5]]},  # outside the picture
    {"points": [[0.2], [0.5, 0.5]]},
    {"track_id": "../../etc"},
    {"text": "not for arrows"},
    {"width": 0.5},
    {"frame": {"rtp_timestamp": -1}},
    {"frame": {"rtp_timestamp": 2**32}},
    {"client_id": "x" * 65},
    {"type": "text", "points": [[0.1, 0.1]]},  # no text
    {"type": "text", "points": [[0.1, 0.1]], "text": "x" * 201},
    {"type": "stroke", "points": [[0.1, 0.1]] * 2001},
    {"extra": True},
]


@pytest.mark.parametrize("change", BAD)
async def test_bad_annotations_are_refused(node: LiveNode, change: dict[str, Any]) -> None:
    expert = await node.client("or-1", Role.EXPERT)
    with pytest.raises(ProtocolError) as err:
        await expert.request("annotate", {**arrow(), **change})
    assert err.value.code in ("invalid_payload", "payload_too_large")
    assert (await expert.request("snapshot"))["overlay"] == []


async def test_overlay_for_late_joiners_undo_and_clear(node: LiveNode) -> None:
    wang = await node.client("or-1", Role.EXPERT, identity="dr-wang")
    li = await node.client("or-1", Role.EXPERT, identity="dr-li")
    a1 = (await wang.request("annotate", arrow()))["id"]
    text = {"type": "text", "track_id": TRACK, "points": [[0.1, 0.1]], "text": "Calot's triangle"}
    a2 = (await wang.request("annotate", text))["id"]
    await wang.request("annotate", {"type": "pointer", "track_id": TRACK, "points": [[0.4, 0.4]]})
    b1 = (await li.request("annotate", {**arrow(), "type": "circle"}))["id"]

    late = await node.client("or-1", Role.TRAINEE, identity="late")
    assert late.snapshot is not None
    overlay = late.snapshot["overlay"]
    assert [a["id"] for a in overlay] == [a1, a2, b1]  # pointers are not kept
    assert overlay[1]["text"] == "Calot's triangle"

    assert await wang.request("annotation_undo") == {"ids": [a2]}
    removed = await late.next_event("annotation_removed")
    assert removed == {"ids": [a2], "by": "dr-wang", "reason": "undo"}
    assert await wang.request("annotation_clear", {"scope": "own"}) == {"ids": [a1]}
    assert (await late.next_event("annotation_removed"))["ids"] == [a1]
    with pytest.raises(ProtocolError) as err:
        await wang.request("annotation_undo")
    assert err.value.code == "not_found"
    with pytest.raises(ProtocolError) as err:
        await wang.request("annotation_clear", {"scope": "all"})
    assert err.value.code == "forbidden"
    assert [a["id"] for a in (await late.request("snapshot"))["overlay"]] == [b1]

    mod = await node.client("or-1", Role.MODERATOR, identity="mod")
    assert Grant.CLEAR_ANNOTATIONS.value in mod.snapshot["self"]["grants"]  # type: ignore[index]
    assert await mod.request("annotation_clear", {"scope": "all"}) == {"ids": [b1]}
    assert (await late.request("snapshot"))["overlay"] == []


async def test_annotation_rate_limit(start_node: StartNode) -> None:
    node = await start_node(event_rate=1000, event_burst=1000)  # only the annotation limit
    expert = await node.client("or-1", Role.EXPERT)
    pointer = {"type": "pointer", "track_id": TRACK, "points": [[0.5, 0.5]]}
    codes = []
    for _ in range(80):
        try:
            await expert.request("annotate", pointer)
            codes.append("ok")
        except ProtocolError as exc:
            codes.append(exc.code)
    assert codes[:60] == ["ok"] * 60 and "rate_limited" in codes


def test_overlay_is_bounded() -> None:
    overlay = Overlay()
    evicted: list[str] = []
    first = None
    for i in range(MAX_OVERLAY + 5):
        a = make_annotation("r", "dr-wang", "W", "arrow", TRACK, [[0.1, 0.1], [0.2, 0.2]])
        first = first or a.id
        evicted += overlay.add(a)
        assert len(overlay.items) <= MAX_OVERLAY, i
    assert len(evicted) == 5 and evicted[0] == first


async def test_annotations_cross_nodes(start_node: StartNode, redis_url: str,
                                       redis_prefix: str) -> None:  # fmt: skip
    a = await start_node(redis_url=redis_url, redis_prefix=redis_prefix)
    b = await start_node(redis_url=redis_url, redis_prefix=redis_prefix)
    surgeon_on_b = await b.client("or-1", Role.SURGEON)
    expert_on_a = await a.client("or-1", Role.EXPERT, identity="dr-wang")
    ack = await expert_on_a.request("annotate", arrow())
    assert (await surgeon_on_b.next_event("annotation"))["id"] == ack["id"]
    late_on_b = await b.client("or-1", Role.TRAINEE)
    assert late_on_b.snapshot is not None
    assert [x["id"] for x in late_on_b.snapshot["overlay"]] == [ack["id"]]
    await expert_on_a.request("annotation_undo")
    assert (await surgeon_on_b.next_event("annotation_removed"))["ids"] == [ack["id"]]
