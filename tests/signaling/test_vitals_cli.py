"""`orbridge vitals`: the synthetic monitor against an in-process server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from orbridge.rooms.roles import Role
from orbridge.signaling.cli.main import build_parser
from orbridge.signaling.cli.vitals import batch_payload, run_vitals
from tests.conftest import LiveNode
from tests.support import SECRET


async def collect(client: Any, count: int) -> list[dict[str, Any]]:
    """`count` vitals events (the last may arrive just after the last ack), then no more."""
    events = [await client.next_event("vitals") for _ in range(count)]
    await asyncio.sleep(0.2)
    return events + client.pending("vitals")


def summary(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


async def test_synthetic_vitals_reach_an_expert(
    node: LiveNode, capsys: pytest.CaptureFixture[str]
) -> None:
    expert = await node.client("or-1", Role.EXPERT, identity="dr-wang")
    args = build_parser().parse_args([
        "vitals", "--synthetic", "--url", node.url, "--room", "or-1", "--secret", SECRET,
        "--identity", "monitor-1", "--scenario", "normal", "--seed", "4", "--duration", "2",
    ])  # fmt: skip
    assert await run_vitals(args) == 0
    out = summary(capsys)
    assert out["exit"] == 0 and out["mode"] == "socketio" and out["identity"] == "monitor-1"
    assert out["batches"] == out["acked"] == 50  # 2 s of 40 ms batches, each acknowledged
    assert out["samples"] == {"ecg_ii": 1000, "pleth": 250}
    events = await collect(expert, 50)
    assert len(events) == 50
    ecg = [w for e in events for w in e["waveforms"] if w["kind"] == "ecg_ii"]
    assert sorted(w["seq"] for w in ecg) == list(range(50))
    assert all(len(w["samples"]) == 20 and w["source"] == "monitor-1" for w in ecg)
    kinds = {n["kind"] for e in events for n in e["numerics"]}
    assert {"hr", "spo2", "nibp_sys", "rr", "etco2", "temp"} <= kinds
    assert max(max(w["samples"]) for w in ecg) > 0.6  # R waves went through


async def test_a_token_without_publish_vitals_is_refused(
    node: LiveNode, capsys: pytest.CaptureFixture[str]
) -> None:
    token = node.token("or-1", Role.TRAINEE)
    args = build_parser().parse_args(
        ["vitals", "--synthetic", "--url", node.url, "--token", token, "--duration", "2"]
    )
    assert await run_vitals(args) == 1
    out = summary(capsys)
    assert out["exit"] == 1 and "forbidden" in out["reason"] and out["acked"] == 0


async def test_a_wrong_secret_cannot_join(
    node: LiveNode, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args([
        "vitals", "--synthetic", "--url", node.url, "--room", "or-1",
        "--secret", "not-the-secret-0123456789-abcdefgh", "--duration", "1",
    ])  # fmt: skip
    assert await run_vitals(args) == 1
    assert "cannot join" in summary(capsys)["reason"]


async def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["vitals", "--synthetic"])
    assert await run_vitals(args) == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["vitals", "--synthetic", "--rate", "300"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["vitals", "--synthetic", "--hl7", "nohost"])


def test_payload_is_what_publish_vitals_takes() -> None:
    from orbridge.signaling.cli.patient_sim import SyntheticPatient
    from orbridge.signaling.sio.schemas import PublishVitals

    patient = SyntheticPatient(500, seed=1, start_ms=1_795_000_000_000)
    batches = patient.batches(40)
    batch = next(b for b in batches if b.numerics)  # the one ending at t = 1 s
    payload = batch_payload(batch, "monitor-1")
    message = PublishVitals.model_validate(payload)
    assert message.numerics and len(message.waveforms) == 2


@pytest.mark.parametrize("style", ["mdc", "loinc"])
async def test_hl7_over_mllp_reaches_an_expert(
    node: LiveNode, capsys: pytest.CaptureFixture[str], style: str
) -> None:
    from orbridge.signaling.ingest.mllp import MllpListener

    expert = await node.client("or-1", Role.EXPERT, identity="dr-wang")
    listener = MllpListener(node.node.vitals.ingest, host="127.0.0.1", port=0,
                            bindings={"monitor-7": "or-1"})  # fmt: skip
    await listener.start()
    try:
        args = build_parser().parse_args([
            "vitals", "--synthetic", "--hl7", f"127.0.0.1:{listener.port}", "--source",
            "monitor-7", "--hl7-style", style, "--duration", "1.5", "--seed", "2",
        ])  # fmt: skip
        assert await run_vitals(args) == 0
    finally:
        await listener.close()
    out = summary(capsys)
    assert out["mode"] == "hl7" and out["exit"] == 0
    assert out["acked"] == 6  # 1.5 s in 250 ms ORU messages, each answered AA
    assert listener.stats()["connections_total"] == 1  # one connection, as a monitor keeps
    events = await collect(expert, 6)
    assert len(events) == 6 and {e["via"] for e in events} == {"hl7"}
    ecg = [w for e in events for w in e["waveforms"] if w["kind"] == "ecg_ii"]
    assert [w["seq"] for w in ecg] == list(range(6))
    assert {len(w["samples"]) for w in ecg} == {125} and ecg[0]["source"] == "monitor-7"
    assert {"hr", "spo2", "rr"} <= {n["kind"] for e in events for n in e["numerics"]}  # NIBP: 2 s


async def test_hl7_refused_by_the_listener_exits_1(
    node: LiveNode, capsys: pytest.CaptureFixture[str]
) -> None:
    from orbridge.signaling.ingest.mllp import MllpListener

    listener = MllpListener(node.node.vitals.ingest, host="127.0.0.1", port=0)  # no binding
    await listener.start()
    try:
        args = build_parser().parse_args([
            "vitals", "--synthetic", "--hl7", f"127.0.0.1:{listener.port}", "--duration", "1",
        ])  # fmt: skip
        assert await run_vitals(args) == 1
    finally:
        await listener.close()
    out = summary(capsys)
    assert "refused the ORU (AE)" in out["reason"] and out["acked"] == 0


async def test_hl7_with_nobody_listening_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support import free_port

    args = build_parser().parse_args(
        ["vitals", "--synthetic", "--hl7", f"127.0.0.1:{free_port()}", "--duration", "1"]
    )
    assert await run_vitals(args) == 1
    assert "cannot deliver HL7" in summary(capsys)["reason"]
