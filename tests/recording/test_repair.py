"""Crash repair (issue #11 item 5): a recording a crash left in `recording` is repaired by its
own node when it starts again, and by any node once its node is dead (not alive in presence,
not holding its lock in the recordings directory, files quiet); never while its node is alive.
The e2e halves (kill -9 of real servers, a shared Redis) are tests/e2e/test_server_kill.py and
tests/e2e/test_recording_repair.py."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from orbridge.recording.files import lock_held, make_private_dir
from orbridge.recording.live import service as service_module
from orbridge.recording.live.service import (
    NODES_DIR,
    REPAIR_BATCH,
    RecordingService,
    StartRequest,
)
from orbridge.recording.manifest import (
    Manifest,
    ParticipantEntry,
    Segment,
    TrackEntry,
    new_recording_id,
)
from orbridge.rooms.errors import PresenceUnavailable

_counter = 0
BY = {"identity": "dr-li", "name": "Dr Li", "role": "moderator"}


def crashed(root: Path, node: str, age_s: float = 60.0, track: bool = False) -> str:
    """A recording `node` left in `recording`, its files last written `age_s` ago (with a
    track whose one segment file is missing, if asked)."""
    global _counter
    _counter += 1
    started = int(time.time() * 1000) - 120_000 + _counter
    manifest = Manifest(id=new_recording_id(f"or-{_counter}", started), room=f"or-{_counter}",
                        started_ms=started, node=node)  # fmt: skip
    manifest.participants.append(ParticipantEntry("dr-ma", "Dr Ma", "surgeon", started))
    if track:
        segment = Segment("laparoscope-dr-ma-001.webm", "t1", "VP8", 90000, started, 0)
        manifest.tracks.append(TrackEntry("laparoscope-dr-ma", "dr-ma", "laparoscope", "video",
                                          "VP8", segments=[segment]))  # fmt: skip
    directory = root / manifest.id
    make_private_dir(directory)
    manifest.save(directory)
    then = time.time() - age_s
    for path in (directory / "manifest.json", directory):
        os.utime(path, (then, then))
    return manifest.id


def state(root: Path, recording_id: str) -> str:
    return Manifest.load(root / recording_id).state


class Live:
    """Presence's live node ids, as a test sets them."""

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)
        self.down = False
        self.calls = 0

    async def __call__(self) -> set[str]:
        self.calls += 1
        if self.down:
            raise PresenceUnavailable()
        return set(self.ids)


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Callable[..., RecordingService]]:
    made: list[RecordingService] = []

    def make(node: str, live: Live | None = None, **kw: float) -> RecordingService:
        made.append(RecordingService(tmp_path / "recordings", node, live_nodes=live, **kw))
        return made[-1]

    yield make
    for service in made:
        await service.close()


async def test_start_repairs_its_own_and_dead_nodes_recordings_never_a_live_ones(
    tmp_path: Path, services: Callable[..., RecordingService]
) -> None:
    root = tmp_path / "recordings"
    own, legacy = crashed(root, "node-a"), crashed(root, "")
    dead, alive = crashed(root, "node-x"), crashed(root, "node-b")
    fresh = crashed(root, "node-y", age_s=1.0)  # its node may still be writing it
    service = services("node-a", Live("node-a", "node-b"))
    assert sorted(await service.repair()) == sorted([own, legacy, dead])
    assert [state(root, r) for r in (own, legacy, dead)] == ["interrupted"] * 3
    assert state(root, alive) == state(root, fresh) == "recording"
    manifest = Manifest.load(root / own)
    assert manifest.stopped_ms == manifest.started_ms  # no media: the timeline ends at start
    assert all(p.left_ms == manifest.stopped_ms for p in manifest.participants)
    assert service.counts["repaired"] == 3
    assert stat_mode(root / own / "manifest.json") == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_without_presence_only_its_own_are_repaired(
    tmp_path: Path, services: Callable[..., RecordingService]
) -> None:
    root = tmp_path / "recordings"
    own, other = crashed(root, "node-a"), crashed(root, "node-x")
    service = services("node-a")  # no live_nodes: nobody can say node-x is dead
    assert await service.repair() == [own]
    assert await service.repair_dead() == []
    assert state(root, other) == "recording"


async def test_a_node_holding_its_lock_is_alive_even_where_presence_cannot_see_it(
    tmp_path: Path, services: Callable[..., RecordingService]
) -> None:
    # In-process presence knows only its own node: another process (or another app in this
    # one) recording into the same directory is seen through its lock in .nodes.
    root = tmp_path / "recordings"
    make_private_dir(root)
    node_b = services("node-b", Live("node-b"), repair_interval=0)
    assert await node_b.repair() == []  # node-b starts: it holds its lock from now on
    theirs = [crashed(root, "node-b"), crashed(root, "node-b")]  # e.g. a hung disk: quiet
    node_c = services("node-c", Live("node-c"))
    assert await node_c.repair() == []
    assert await node_c.repair_dead() == []
    assert [state(root, r) for r in theirs] == ["recording"] * 2
    await node_b.close()  # node-b stops (a kill -9 drops its lock the same way)
    assert sorted(await node_c.repair_dead()) == sorted(theirs)


async def test_a_node_takes_its_lock_before_its_first_recording_appears(
    tmp_path: Path, services: Callable[..., RecordingService]
) -> None:
    root = tmp_path / "recordings"
    node_a = services("node-a", Live("node-a"))
    assert await node_a.repair() == []  # no recordings directory yet: nothing held
    recording = await node_a.start("or-1", StartRequest(by=dict(BY), consent="written"))
    [lock] = (root / NODES_DIR).iterdir()
    assert lock_held(lock) and stat_mode(lock) == 0o600 and stat_mode(lock.parent) == 0o700
    for path in (root / recording.id, root / recording.id / "manifest.json"):
        os.utime(path, (time.time() - 60, time.time() - 60))  # as if its disk hung
    node_c = services("node-c", Live("node-c"))  # presence does not show node-a
    assert await node_c.repair_dead() == []
    await node_a.stop("or-1", "dr-li")
    assert state(root, recording.id) == "complete"
    await node_a.close()
    assert not lock_held(lock)


async def test_two_processes_with_one_node_id_leave_each_others_recordings(
    tmp_path: Path, services: Callable[..., RecordingService], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "recordings"
    make_private_dir(root)
    first = services("node-a", Live("node-a"))
    assert await first.repair() == []  # it holds node-a's lock
    theirs = crashed(root, "node-a")  # the first one's, say, still being written
    second = services("node-a", Live("node-a"))
    with caplog.at_level(logging.ERROR, "orbridge.recording"):
        assert await second.repair() == []
    assert state(root, theirs) == "recording"
    assert "another running process records as node node-a" in caplog.text


async def test_periodic_passes_repair_a_node_once_it_is_dead_and_never_their_own(
    tmp_path: Path, services: Callable[..., RecordingService]
) -> None:
    root = tmp_path / "recordings"
    live = Live("node-a", "node-b")
    theirs = crashed(root, "node-b")
    service = services("node-a", live, repair_interval=0.05)
    assert await service.repair() == []
    mine = crashed(root, "node-a")  # appears while node-a runs: one it is starting, say
    service.start_repairs()
    await until(lambda: live.calls >= 5, 5)
    assert state(root, theirs) == "recording"  # node-b is alive
    live.ids.discard("node-b")  # node-b died
    await until(lambda: state(root, theirs) == "interrupted", 5)
    calls = live.calls
    await until(lambda: live.calls >= calls + 3, 5)
    assert state(root, mine) == "recording"


async def test_a_presence_outage_repairs_nothing_of_others(
    tmp_path: Path, services: Callable[..., RecordingService], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "recordings"
    own, other = crashed(root, "node-a"), crashed(root, "node-x")
    live = Live("node-a")
    live.down = True
    service = services("node-a", live)
    with caplog.at_level(logging.WARNING, "orbridge.recording"):
        assert await service.repair() == [own]  # its own need no presence
        assert await service.repair_dead() == []
        assert await service.repair_dead() == []
    assert caplog.text.count("presence unavailable") == 1  # once per outage
    assert state(root, other) == "recording"
    live.down = False
    assert await service.repair_dead() == [other]


async def test_a_pass_repairs_a_bounded_number(
    tmp_path: Path, services: Callable[..., RecordingService]
) -> None:
    root = tmp_path / "recordings"
    dead = [crashed(root, "node-x") for _ in range(REPAIR_BATCH + 2)]
    service = services("node-a", Live("node-a"))
    first = await service.repair_dead()
    assert len(first) == REPAIR_BATCH
    second = await service.repair_dead()
    assert sorted(first + second) == sorted(dead)
    assert await service.repair_dead() == []


async def test_two_nodes_repairing_at_once_repair_a_recording_once(
    tmp_path: Path, services: Callable[..., RecordingService], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "recordings"
    dead = crashed(root, "node-x", track=True)
    node_b, node_c = services("node-b", Live("node-b", "node-c")), services("node-c", Live())
    measured = service_module._measured

    def slow(*args: object) -> object:
        time.sleep(0.3)  # both passes reach the recording while one repairs it
        return measured(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(service_module, "_measured", slow)
    results = await asyncio.gather(node_b.repair_dead(), node_c.repair_dead())
    assert sum(len(r) for r in results) == 1
    assert state(root, dead) == "interrupted"
    assert not (root / dead / ".repair.lock").exists()


async def test_an_unreadable_manifest_is_skipped_and_logged_once(
    tmp_path: Path, services: Callable[..., RecordingService], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "recordings"
    broken = crashed(root, "node-x")
    (root / broken / "manifest.json").write_text("{")
    dead = crashed(root, "node-x")
    service = services("node-a", Live("node-a"))
    with caplog.at_level(logging.WARNING, "orbridge.recording"):
        assert await service.repair_dead() == [dead]
        assert await service.repair_dead() == []
    assert caplog.text.count(f"skipping {broken}") == 1


async def test_a_recording_that_cannot_be_repaired_is_logged_once_and_the_rest_go_on(
    tmp_path: Path,
    services: Callable[..., RecordingService],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "recordings"
    stuck, dead = crashed(root, "node-x"), crashed(root, "node-x")
    save = Manifest.save

    def failing_save(self: Manifest, directory: str | Path) -> None:
        if self.id == stuck:
            raise PermissionError(13, "Permission denied")
        save(self, directory)

    monkeypatch.setattr(Manifest, "save", failing_save)
    service = services("node-a", Live("node-a"))
    with caplog.at_level(logging.ERROR, "orbridge.recording"):
        assert await service.repair_dead() == [dead]
        assert await service.repair_dead() == []
    assert caplog.text.count(f"recording {stuck} could not be repaired") == 1
    assert state(root, stuck) == "recording"
    assert not (root / stuck / ".repair.lock").exists()


async def until(predicate: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)
