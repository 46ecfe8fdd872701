"""The audit trail: a hash chain that `orbridge audit verify` checks (an edited, deleted or
reordered line is named), resumed after a torn last line, shared by several processes, kept
through a failing or hung disk (a gap entry says how much was lost), and the events a live node
writes into it, with the client's address (X-Forwarded-For only from a trusted proxy)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.audit import (
    GENESIS,
    AuditLog,
    append_now,
    client_address,
    parse_line,
    verify,
)
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from orbridge.signaling.cli.main import main
from orbridge.signaling.ingest.peers import parse_networks
from orbridge.signaling.settings import SettingsError, load_settings
from tests.conftest import LiveNode, StartNode, mint
from tests.recording.sample import make_sample_recording
from tests.support import ROOT, SECRET

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


async def written(log: AuditLog, *events: tuple[str, dict[str, Any]]) -> None:
    for event, fields in events:
        log.append(event, **fields)
    assert await log.flush(5)


def cli(*args: str) -> tuple[int, str]:
    """`orbridge audit ...` as a real process."""
    done = subprocess.run([sys.executable, "-m", "orbridge.signaling.cli", "audit", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def some_trail(path: Path, count: int = 6) -> None:
    for i in range(count):
        append_now(path, "node-a", "join", identity=f"user-{i}", room="or-1", address="10.0.0.1")


# -- the format and the chain ------------------------------------------------------------------


async def test_entries_form_a_chain_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "audit.jsonl"
    log = AuditLog(path, "node-a")
    log.start()
    try:
        await written(log, ("join", {"identity": "dr-wang", "role": "expert", "room": "or-1",
                                     "address": "10.1.2.3", "note": "Zoë\n\"x\""}),
                      ("left", {"identity": "dr-wang", "reason": "left"}))  # fmt: skip
    finally:
        await log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = lines(path)
    assert all(line.isascii() and line.endswith(b"\n") for line in raw)
    first, second = entries(path)
    assert list(first) == ["seq", "ts", "node", "event", "identity", "role", "room", "address",
                           "note", "prev", "hash"]  # fmt: skip
    assert first["seq"] == 1 and first["prev"] == GENESIS and first["note"] == 'Zoë\n"x"'
    assert first["node"] == "node-a" and first["event"] == "join" and TS.match(first["ts"])
    # hash: SHA-256 of the line's bytes without the hash member; prev: the previous hash
    body = raw[0][: raw[0].index(b',"hash":"')] + b"}"
    assert first["hash"] == hashlib.sha256(body).hexdigest()
    assert json.loads(body) == {k: v for k, v in first.items() if k != "hash"}
    assert second["seq"] == 2 and second["prev"] == first["hash"]
    result = verify(path)
    assert result.ok and result.entries == 2 and result.last_hash == second["hash"]
    assert result.summary() == f"ok: 2 entries, last hash {second['hash']}"


def test_reserved_field_names_are_a_bug(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", "n")
    for name in ("seq", "ts", "node", "event", "prev", "hash"):
        with pytest.raises(ValueError, match="may not be named"):
            log.append("join", **{name: 1})


def _edit(raw: list[bytes]) -> list[bytes]:
    raw[2] = raw[2].replace(b"user-2", b"user-9")
    return raw


def _edit_and_rehash(raw: list[bytes]) -> list[bytes]:
    """The edit with the line's own hash recomputed: the next line's prev catches it."""
    body = raw[2][: raw[2].index(b',"hash":"')].replace(b"user-2", b"user-9") + b"}"
    raw[2] = body[:-1] + b',"hash":"' + hashlib.sha256(body).hexdigest().encode() + b'"}\n'
    return raw


@pytest.mark.parametrize(
    ("damage", "line", "seq", "reason"),
    [
        (_edit, 3, 3, "its hash does not match its content: the entry was changed"),
        (_edit_and_rehash, 4, 4, "prev is not the hash of the entry before it"),
        (lambda raw: raw[:2] + raw[3:], 3, 4, "seq 4 follows seq 2: 1 entry missing or moved"),
        (lambda raw: [*raw[:2], raw[3], raw[2], *raw[4:]], 3, 4, "seq 4 follows seq 2"),
        (lambda raw: raw[1:], 1, 2, "seq 2 is the first entry: 1 entry missing or moved"),
        (lambda raw: [*raw[:3], raw[2], *raw[3:]], 4, 3, "an entry repeated or out of order"),
        (lambda raw: [*raw[:4], b"garbage\n", *raw[4:]], 5, None, "not an audit entry"),
    ],
    ids=["edited", "edited-rehashed", "deleted", "reordered", "head-deleted", "duplicated",
         "inserted"],
)  # fmt: skip
def test_verify_names_the_first_broken_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Any, line: int,
    seq: int | None, reason: str,
) -> None:  # fmt: skip
    path = tmp_path / "audit.jsonl"
    some_trail(path)
    assert main(["audit", "verify", "--file", str(path)]) == 0
    assert capsys.readouterr().out.startswith("ok: 6 entries, last hash ")
    path.write_bytes(b"".join(damage(lines(path))))
    result = verify(path)
    assert not result.ok and (result.line, result.seq) == (line, seq)
    assert reason in result.reason
    assert main(["audit", "verify", "--file", str(path)]) == 1
    shown = "?" if seq is None else seq
    out = capsys.readouterr().out
    assert out.startswith(f"broken at line {line} (seq {shown}): ") and reason in out


def test_the_writer_never_blesses_an_edit(tmp_path: Path) -> None:
    """Appending after an edited line in the middle keeps the break visible."""
    path = tmp_path / "audit.jsonl"
    some_trail(path)
    path.write_bytes(b"".join(_edit(lines(path))))
    some_trail(path, 2)
    assert verify(path).line == 3 and len(entries(path)) == 8


# -- crashes, processes, disks ---------------------------------------------------------------


async def test_a_torn_last_line_starts_a_new_segment(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    some_trail(path, 3)
    last = entries(path)[-1]
    torn = b'{"seq":4,"ts":"2026-11-18T11:06:40.123Z","node":"node-a","event":"jo'
    path.write_bytes(path.read_bytes() + torn)  # a kill -9 in the middle of a write
    before = path.read_bytes()
    result = verify(path)  # a torn tail alone: ok, said so
    assert result.ok and result.entries == 3 and "torn last line" in result.notes[0]

    log = AuditLog(path, "node-a")  # the next start
    log.start()
    try:
        await written(log, ("node_started", {"pid": 1}))
    finally:
        await log.close()
    after = path.read_bytes()
    assert after.startswith(before)  # append-only: the torn bytes stay where they were
    raw = lines(path)
    assert raw[3] == torn + b"\n"
    resumed, started = (json.loads(line) for line in raw[4:])
    assert resumed["event"] == "chain_resumed" and resumed["seq"] == 4
    assert resumed["prev"] == last["hash"] and resumed["after_seq"] == 3
    assert resumed["skipped"] == {"reason": "torn", "lines": 1, "bytes": len(torn) + 1,
                                  "sha256": hashlib.sha256(torn + b"\n").hexdigest()}  # fmt: skip
    assert started["seq"] == 5 and started["prev"] == resumed["hash"]
    result = verify(path)
    assert result.ok and result.entries == 5 and result.last_hash == started["hash"]
    assert "line 4: not entries" in result.notes[0]
    code, out = cli("verify", "--file", str(path))
    assert code == 0 and out.startswith(f"ok: 5 entries, last hash {started['hash']}\nnote: ")

    # the skipped bytes are pinned by the resume entry: changing them is caught
    path.write_bytes(after.replace(torn, torn.replace(b"jo", b"JO")))
    assert verify(path).line == 4


def test_a_whole_last_entry_without_its_newline_just_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    some_trail(path, 2)
    path.write_bytes(path.read_bytes()[:-1])
    assert verify(path).entries == 2
    some_trail(path, 1)
    assert [e["event"] for e in entries(path)] == ["join"] * 3
    assert verify(path).entries == 3


_WRITER = """
import sys
from orbridge.signaling.audit import append_now
path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    append_now(path, name, "export", n=i, pad="x" * (i % 7) * 40)
"""


async def test_concurrent_appends_from_two_processes_keep_one_chain(tmp_path: Path) -> None:
    """Two CLI-like processes and a server's writer thread, all at once, on one file."""
    path = tmp_path / "audit.jsonl"
    count = 150
    log = AuditLog(path, "server")
    log.start()
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", _WRITER, str(path),
                                                  f"cli-{i}", str(count), cwd=ROOT)
             for i in range(2)]  # fmt: skip
    try:
        for i in range(count):
            log.append("join", n=i)
            if i % 10 == 0:
                await asyncio.sleep(0.005)
        for proc in procs:
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert await log.flush(10)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await log.close()
    result = verify(path)
    assert result.ok, result.summary()
    assert result.entries == 3 * count
    found = entries(path)
    assert [e["seq"] for e in found] == list(range(1, 3 * count + 1))
    for node in ("server", "cli-0", "cli-1"):
        assert [e["n"] for e in found if e["node"] == node] == list(range(count))


def sound(line: bytes) -> bool:
    try:
        parse_line(line)
    except ValueError:
        return False
    return True


async def until(predicate: Any, within: float) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - a counter of another thread
            await asyncio.sleep(0.02)


class FailingDisk:
    """AuditFile._write that fails with the given errno while ``failing``; ``half`` first
    writes half of what it is given (a short write, then the error: a torn line)."""

    def __init__(self) -> None:
        self.error: int | None = None
        self.half = False

    def __call__(self, fd: int, data: bytes | bytearray) -> int:
        if self.half:
            self.half = False
            return os.write(fd, data[: len(data) // 2])
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        return os.write(fd, data)


async def test_a_failing_disk_degrades_and_the_gap_is_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orbridge.audit")
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "node-a", retry_interval=0.05)
    disk = FailingDisk()
    assert log.file is not None
    log.file._write = disk  # type: ignore[method-assign]
    log.start()
    try:
        await written(log, ("join", {"n": 0}))
        disk.half, disk.error = True, errno.ENOSPC  # a short write, then the disk is full
        for i in range(1, 4):
            await written(log, ("join", {"n": i}))
        disk.error = errno.EIO
        await written(log, ("join", {"n": 4}))
        assert log.stats.dropped == 4 and log.stats.failing == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2, errors  # once per cause, however many entries
        assert "ENOSPC" in errors[0] and "EIO" in errors[1] and "keeps serving" in errors[0]
        disk.error = None  # the disk is back: the gap is written even before a new entry
        await until(lambda: log.stats.gaps == 1, within=5)
        await written(log, ("join", {"n": 5}))
    finally:
        await log.close()
    assert log.stats.failing == 0 and log.stats.gaps == 1
    found = [parse_line(line)[0] for line in lines(path) if sound(line)]
    events = [(e["event"], e.get("n")) for e in found]
    assert events == [("join", 0), ("chain_resumed", None), ("gap", None), ("join", 5)]
    gap = found[2]
    assert gap["dropped"] == 4 and gap["causes"] == {"EIO": 1, "ENOSPC": 3}
    assert TS.match(gap["first_ts"]) and gap["first_ts"] <= gap["last_ts"]
    assert found[1]["skipped"]["reason"] == "torn"  # the short write's half line
    assert verify(path).ok and verify(path).entries == 4
    assert any("writing again; 4 entries were lost" in r.getMessage() for r in caplog.records)


async def test_a_hung_disk_never_blocks_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "node-a", queue_size=4)
    release = threading.Event()
    assert log.file is not None
    real = log.file._write

    def hung(fd: int, data: bytes | bytearray) -> int:
        release.wait(30)
        return real(fd, data)

    log.file._write = hung  # type: ignore[method-assign]
    log.start()
    try:
        started = time.monotonic()
        for i in range(200):
            log.append("recording_file_opened", n=i)
        assert time.monotonic() - started < 0.5  # nothing waited for the disk
        assert log.stats.dropped >= 190
        release.set()
        assert await log.flush(10)
        log.append("join", n="after")
        assert await log.flush(10)
    finally:
        release.set()
        await log.close()
    found = entries(path)
    gaps = [e for e in found if e["event"] == "gap"]  # one, or two if the writer was late
    assert sum(g["dropped"] for g in gaps) == log.stats.dropped
    assert all(set(g["causes"]) == {"queue_full"} for g in gaps)
    assert len(found) - len(gaps) + log.stats.dropped == 201  # every entry written or counted
    assert found[-1]["n"] == "after" and verify(path).ok


# -- the client's address ----------------------------------------------------------------------


def test_client_address_honours_forwarded_for_only_from_trusted_proxies() -> None:
    proxies = parse_networks(["10.0.0.0/8", "fd00::/8"])
    assert client_address("203.0.113.7", ["198.51.100.1"], proxies) == "203.0.113.7"
    assert client_address("10.0.0.2", ["198.51.100.1"], []) == "10.0.0.2"  # none trusted
    assert client_address("10.0.0.2", [], proxies) == "10.0.0.2"
    # the right-most address that is not a trusted proxy (what the client says is not believed)
    assert client_address("10.0.0.2", ["1.1.1.1, 198.51.100.1, 10.0.0.9"],
                          proxies) == "198.51.100.1"  # fmt: skip
    assert client_address("10.0.0.2", ["1.1.1.1", "198.51.100.1"], proxies) == "198.51.100.1"
    assert client_address("::ffff:10.0.0.2", ["198.51.100.1:5555"], proxies) == "198.51.100.1"
    assert client_address("fd00::1", ["[2001:db8::7]:443"], proxies) == "2001:db8::7"
    assert client_address("10.0.0.2", ["10.0.0.7, 10.0.0.8"], proxies) == "10.0.0.7"
    assert client_address("10.0.0.2", ["198.51.100.1, unknown"], proxies) == "10.0.0.2"
    assert client_address(None, ["198.51.100.1"], proxies) is None


def test_trusted_proxies_setting() -> None:
    assert load_settings(environ={}).trusted_proxies == []
    flags = {"trusted_proxies": ["10.0.0.0/8,fd00::/8", "192.168.1.1"]}
    assert load_settings(flags=flags, environ={}).trusted_proxies == [
        "10.0.0.0/8", "fd00::/8", "192.168.1.1/32"]  # fmt: skip
    env = {"ORBRIDGE_TRUSTED_PROXIES": "172.16.0.0/12"}
    assert load_settings(environ=env).trusted_proxies == ["172.16.0.0/12"]
    with pytest.raises(SettingsError, match=r"trusted_proxies.*not a network"):
        load_settings(flags={"trusted_proxies": ["10.1.2.3/8"]}, environ={})
    assert load_settings(flags={"data_dir": "/srv/o"}, environ={}).audit_path == Path(
        "/srv/o/audit.jsonl"
    )
    from orbridge.signaling.cli.main import build_parser

    args = build_parser().parse_args(["serve", "--trusted-proxy", "10.0.0.0/8"])
    assert args.trusted_proxies == ["10.0.0.0/8"]


# -- a live node -----------------------------------------------------------------------------

RECORDING = "or-1-20261118T110640Z-0a0a"


async def _events(live: LiveNode) -> list[dict[str, Any]]:
    assert await live.node.audit.flush(10)
    return entries(live.node.settings.audit_path)


def _one(found: list[dict[str, Any]], event: str, **match: Any) -> dict[str, Any]:
    hits = [e for e in found if e["event"] == event
            and all(e.get(k) == v for k, v in match.items())]  # fmt: skip
    assert len(hits) == 1, (event, match, [e["event"] for e in found])
    return hits[0]


async def test_a_live_node_audits_joins_refusals_removals_and_file_opens(
    start_node: StartNode, tmp_path: Path
) -> None:
    make_sample_recording(tmp_path / "recordings", RECORDING, room="or-1", seconds=0.5)
    live = await start_node()
    surgeon = await live.client("or-1", Role.SURGEON, identity="surgeon-1", name="Dr Ma")
    mod = await live.client("or-1", Role.MODERATOR, identity="mod-li", name="Li")
    expert = await live.client("or-1", Role.EXPERT, identity="dr-wang", name="Dr Wang")

    forged = tokens.mint("another-secret-0123456789-abcdefghij", room="or-1", role=Role.EXPERT,
                         name="Mallory", identity="mallory")  # fmt: skip
    expired = mint("or-1", Role.EXPERT, "Dr Old", "dr-old", ttl_s=60, now=time.time() - 3600)
    for token, code in ((forged, "token_invalid"), (expired, "token_expired")):
        with pytest.raises(ProtocolError) as refused:
            await RoomClient(live.url, token).connect()
        assert refused.value.code == code

    await mod.request("remove_participant", {"identity": "dr-wang", "ban_s": 600,
                                             "reason": "wrong room"})  # fmt: skip
    await asyncio.wait_for(expert.disconnected.wait(), 5)
    with pytest.raises(ProtocolError) as banned:
        await live.client("or-1", Role.EXPERT, identity="dr-wang")
    assert banned.value.code == "banned"
    refreshed = await surgeon.request("refresh_token")

    trainee = mint("or-1", Role.TRAINEE, "Student Chen", "trainee-7")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {trainee}"}) as http:
        async with http.get(f"{live.url}/api/recordings/{RECORDING}") as response:
            assert response.status == 200
            links = (await response.json())["links"]
        video = next(name for name in links if name.endswith(".webm"))
        async with http.get(live.url + links[video], headers={"Range": "bytes=0-99"}) as got:
            assert got.status == 206 and len(await got.read()) == 100

    found = await _events(live)
    assert found[0]["event"] == "node_started"
    join = _one(found, "join", identity="surgeon-1")
    assert join["role"] == "surgeon" and join["room"] == "or-1" and join["name"] == "Dr Ma"
    assert join["address"] == "127.0.0.1" and join["token_id"]
    assert join["node"] == live.node.info.node_id
    bad = _one(found, "join_refused", code="token_invalid")
    assert bad["identity"] is None and bad["address"] == "127.0.0.1"  # a forgery names no one
    old = _one(found, "join_refused", code="token_expired")
    assert (old["identity"], old["role"], old["room"]) == ("dr-old", "expert", "or-1")
    removal = _one(found, "participant_removed")
    assert (removal["identity"], removal["role"], removal["room"]) == ("dr-wang", "expert", "or-1")
    assert (removal["by"], removal["by_role"], removal["ban_s"]) == ("mod-li", "moderator", 600)
    assert removal["banned_until"] > time.time() * 1000 and removal["reason"] == "wrong room"
    assert removal["address"] == "127.0.0.1"
    assert _one(found, "join_refused", code="banned")["identity"] == "dr-wang"
    assert _one(found, "left", identity="dr-wang")["reason"] == "removed"
    refresh = _one(found, "token_refreshed", identity="surgeon-1")
    assert refresh["previous_token_id"] == join["token_id"] != refresh["token_id"]
    assert refresh["expires_at"] == refreshed["expires_at"]
    opened = _one(found, "recording_opened", recording=RECORDING)
    assert (opened["identity"], opened["role"], opened["room"]) == ("trainee-7", "trainee", "or-1")
    file = _one(found, "recording_file_opened", file=video)
    assert file["recording"] == RECORDING and file["range"] == "bytes=0-99"
    assert file["token_id"] == opened["token_id"] == tokens.verify(SECRET, trainee).jti
    assert file["address"] == "127.0.0.1"
    # the link names its holder and is signed with it
    assert parse_qs(urlsplit(links[video]).query)["tid"] == [file["token_id"]]

    code, out = cli("verify", "--data-dir", str(live.node.settings.data_dir))
    assert code == 0, out
    assert out.startswith(f"ok: {len(found)} entries, last hash {found[-1]['hash']}")
    code, out = cli("tail", "-n", "2", "--data-dir", str(live.node.settings.data_dir))
    assert code == 0 and [json.loads(line)["seq"] for line in out.splitlines()] == [
        len(found) - 1, len(found)]  # fmt: skip

    # one edited line (who was removed) and verify names it
    path = live.node.settings.audit_path
    number = next(i for i, e in enumerate(found, 1) if e["event"] == "participant_removed")
    raw = lines(path)
    raw[number - 1] = raw[number - 1].replace(b'"dr-wang"', b'"dr-zhou"')
    path.write_bytes(b"".join(raw))
    code, out = cli("verify", "--data-dir", str(live.node.settings.data_dir))
    assert code == 1
    assert out.startswith(f"broken at line {number} (seq {number}): its hash does not match")


async def test_recording_start_stop_and_edits_are_audited(node: LiveNode) -> None:
    mod = await node.client("or-1", Role.MODERATOR, identity="mod-li")
    started = await mod.request("start_recording", {"consent": "pending",
                                                    "procedure": "Cholecystectomy"})  # fmt: skip
    await mod.request("stop_recording")
    async with aiohttp.ClientSession() as http:
        token = mint("or-1", Role.MODERATOR, "Li", "mod-li")
        async with http.patch(
            f"{node.url}/api/recordings/{started['id']}",
            json={"consent": {"state": "written"}, "tags": ["teaching"]},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200
    await mod.request("end_consultation")
    found = await _events(node)
    start = _one(found, "recording_started", recording=started["id"])
    assert (start["by"], start["by_role"], start["consent"]) == ("mod-li", "moderator", "pending")
    assert start["procedure"] == "Cholecystectomy" and start["room"] == "or-1"
    stop = _one(found, "recording_stopped", recording=started["id"])
    assert (stop["by"], stop["reason"]) == ("mod-li", "stopped")
    edit = _one(found, "recording_edited", recording=started["id"])
    assert edit["fields"] == ["consent", "tags"] and edit["by"] == "mod-li"
    assert (edit["previous_consent"], edit["consent"]) == ("pending", "written")
    assert edit["address"] == "127.0.0.1"
    assert _one(found, "consultation_ended")["by"] == "mod-li"
    assert verify(node.node.settings.audit_path).ok


async def _join_address(live: LiveNode, identity: str, forwarded: str) -> str:
    client = RoomClient(live.url, mint("or-1", Role.EXPERT, "E", identity))
    live.clients.append(client)
    await client.connect(headers={"X-Forwarded-For": forwarded})
    await client.join()
    return str(_one(await _events(live), "join", identity=identity)["address"])


async def test_forwarded_for_is_honoured_only_from_a_trusted_proxy(
    start_node: StartNode, tmp_path: Path
) -> None:
    make_sample_recording(tmp_path / "proxied" / "recordings", RECORDING, seconds=0.3)
    direct = await start_node(data_dir=tmp_path / "direct")
    assert await _join_address(direct, "spoofer", "203.0.113.7") == "127.0.0.1"
    proxied = await start_node(data_dir=tmp_path / "proxied", trusted_proxies=["127.0.0.0/8"])
    # a client's own claim (left) is not believed: the right-most untrusted hop is the client
    assert await _join_address(proxied, "behind-1", "198.51.100.9, 203.0.113.7") == "203.0.113.7"
    assert await _join_address(proxied, "behind-2", "203.0.113.8, 127.0.0.5") == "203.0.113.8"
    async with aiohttp.ClientSession() as http:
        token = mint("or-1", Role.MODERATOR, "Li", "mod-li")
        headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "192.0.2.44"}
        url = f"{proxied.url}/api/recordings/{RECORDING}"
        async with http.get(url, headers=headers) as response:
            assert response.status == 200
        with pytest.raises(ProtocolError):
            await RoomClient(proxied.url, "not-a-token").connect(
                headers={"X-Forwarded-For": "192.0.2.45"}
            )
    found = await _events(proxied)
    assert _one(found, "join_refused", code="token_invalid")["address"] == "192.0.2.45"
    assert _one(found, "recording_opened", recording=RECORDING)["address"] == "192.0.2.44"


# -- the command line ------------------------------------------------------------------------


def test_an_export_is_recorded_before_it_runs_or_it_does_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, missing = tmp_path / "data", "or-9-20261122T080000Z-ffff"
    some_trail(data / "audit.jsonl", 2)  # a server's trail: the export continues its chain
    args = ["recordings", "export", missing, "--secret", SECRET, "--recordings-dir",
            str(tmp_path / "recordings"), "--output", str(tmp_path / "case.mp4")]  # fmt: skip
    assert main([*args, "--data-dir", str(data), "--deidentify"]) == 2  # no such recording
    assert "no recording" in capsys.readouterr().err
    export = entries(data / "audit.jsonl")[-1]
    assert export["event"] == "recording_exported" and export["seq"] == 3
    assert export["recording"] == missing and export["output"] == str(tmp_path / "case.mp4")
    assert export["node"].startswith("cli@") and export["pid"] == os.getpid() and export["user"]
    assert (export["burn_in"], export["deidentify"], export["regions"]) == (False, True, "none")
    assert verify(data / "audit.jsonl").entries == 3

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    assert main([*args, "--data-dir", str(blocked)]) == 1
    err = capsys.readouterr().err
    assert "cannot write the audit trail" in err and "not exporting" in err
    assert not (tmp_path / "case.mp4").exists()
