"""What the server writes is private (issue #11, 10): files 0600, directories 0700, whatever
the process umask (022 here, the usual one, which would give 0644 and 0755)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from orbridge.recording.eventlog import EventLog
from orbridge.recording.export.exporter import export_recording
from orbridge.recording.files import make_private_dir, private_opener, replace_private
from orbridge.recording.library.thumbnails import ensure_thumbnail
from orbridge.recording.live.writer import SegmentWriter
from orbridge.recording.manifest import Manifest
from orbridge.rooms.roles import Role
from tests.conftest import StartNode
from tests.e2e.test_live_recording import publish_or
from tests.e2e.test_sfu import until


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes_under(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of ``root`` and everything below it."""
    found = {".": mode(root)}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = mode(path)
    return found


def assert_private(root: Path) -> None:
    found = modes_under(root)
    loose = {
        name: f"{bits:04o}"
        for name, bits in found.items()
        if bits != (0o700 if (root / name).is_dir() else 0o600)
    }
    assert loose == {}, found


async def test_a_recording_and_its_exports_are_private_under_umask_022(
    start_node: StartNode, tmp_path: Path
) -> None:
    """A real room recording (segments, sidecars, manifest, event log), its thumbnail and an
    export: every file 0600 and every directory 0700, the data directory and its missing
    parents too."""
    data_dir = tmp_path / "srv" / "orbridge"
    out = tmp_path / "out"
    with umask(0o022):
        out.mkdir()
        node = await start_node(data_dir=data_dir)
        moderator = await node.client("or-1", Role.MODERATOR, identity="mod-li")
        started = await moderator.request("start_recording", {"consent": "written"})
        surgeon_room, surgeon = await publish_or(node)
        directory = node.node.recordings.store.directory(started["id"])
        await until(lambda: any(directory.glob("laparoscope-*.webm.json")), within=15)
        await moderator.request("mark_chapter", {"title": "Calot's triangle"})
        assert (await moderator.request("stop_recording", {}))["errors"] == []
        await surgeon.close()
        await surgeon_room.close()
        manifest = Manifest.load(directory)
        assert manifest.tracks and manifest.tracks[0].segments[0].packets > 0
        ensure_thumbnail(directory, manifest)
        result = export_recording(node.node.settings.recordings_path, started["id"],
                                  out / "case.mp4")  # fmt: skip

    names = set(modes_under(directory))
    assert {"manifest.json", "events.jsonl", "thumbnail.jpg"} <= names
    assert any(n.endswith(".webm") for n in names) and any(n.endswith(".webm.json") for n in names)
    assert mode(tmp_path / "srv") == 0o700  # a missing parent of the data directory
    assert_private(data_dir)
    assert mode(result.output) == 0o600 and mode(result.report_path) == 0o600


async def test_segment_writer_and_event_log_files_are_private(
    tmp_path: Path, vp8_packets: list[av.Packet]
) -> None:
    """The writer opens the segment itself (for the GIL, see writer.py): 0600 there too, with
    its sidecar, and the directories it makes on the way."""
    root = tmp_path / "recordings"
    with umask(0o022):
        writer = SegmentWriter(root / "a" / "b" / "cam-001.webm", "VP8")
        for index, packet in enumerate(vp8_packets[:30]):
            writer.write(packet, 1_000_000 + index * 33)
        info = await writer.close()
        log = EventLog(root / "c" / "events.jsonl")
        log.append({"t": 1, "type": "chapter", "title": "x"})
        await log.close()
    assert info.error is None and info.packets > 0
    assert_private(root)


def test_make_private_dir(tmp_path: Path) -> None:
    with umask(0o022):
        make_private_dir(tmp_path / "a" / "b" / "c")
        assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
        (tmp_path / "open").mkdir(mode=0o755)
        make_private_dir(tmp_path / "open")  # an existing directory is left as it is
        assert mode(tmp_path / "open") == 0o755
        with pytest.raises(FileExistsError):
            make_private_dir(tmp_path / "a" / "b", exist_ok=False)
        (tmp_path / "file").write_text("x")
        with pytest.raises(FileExistsError):
            make_private_dir(tmp_path / "file")


def test_a_rewritten_file_left_world_readable_is_tightened(tmp_path: Path) -> None:
    """A sidecar's or manifest's tmp file left 0644 by an older version does not pass its mode
    on; a file opened through the opener loses group and other bits."""
    target = tmp_path / "manifest.json"
    stale = tmp_path / "manifest.json.tmp"
    stale.write_text("old")
    stale.chmod(0o644)
    replace_private(target, '{"new": true}')
    assert target.read_text() == '{"new": true}' and mode(target) == 0o600
    log = tmp_path / "events.jsonl"
    log.write_text("")
    log.chmod(0o664)
    with open(log, "a", opener=private_opener) as handle:
        handle.write("{}\n")
    assert mode(log) == 0o600
