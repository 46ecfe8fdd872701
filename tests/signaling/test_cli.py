"""The `orbridge` command as a newcomer uses it."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from orbridge.rooms import tokens
from orbridge.signaling.cli.client import RoomClient
from tests.support import ROOT, SECRET, ServerProcess


def orbridge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orbridge.signaling.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_token_prints_token_and_join_url(tmp_path: Path) -> None:
    out = orbridge(
        "token", "--room", "or-7", "--role", "expert", "--name", "Dr Wang", "--identity", "wang",
        "--ttl", "15m", "--json", "--data-dir", str(tmp_path),
        env={"ORBRIDGE_PUBLIC_URL": "https://orbridge.example.org"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    secret = (tmp_path / "secret").read_text().strip()
    claims = tokens.verify(secret, printed["token"])
    assert (claims.room, claims.identity, claims.name, claims.role.value) == (
        "or-7", "wang", "Dr Wang", "expert",
    )  # fmt: skip
    assert printed["url"] == f"https://orbridge.example.org/room/or-7#token={printed['token']}"


def test_token_with_secret_and_optional_grant() -> None:
    out = orbridge(
        "token", "--room", "r", "--role", "expert", "--name", "E", "--grant", "publish_video",
        "--secret", SECRET,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    token = out.stdout.split("token: ")[1].split()[0]
    assert "publish_video" in tokens.verify(SECRET, token).grants


def test_token_refuses_bad_input() -> None:
    out = orbridge(
        "token", "--room", "r", "--role", "trainee", "--name", "T", "--grant", "annotate",
        "--secret", SECRET,
    )  # fmt: skip
    assert out.returncode == 2 and "cannot be given annotate" in out.stderr
    out = orbridge("token", "--room", "bad room", "--role", "expert", "--name", "E",
                   "--secret", SECRET)  # fmt: skip
    assert out.returncode == 2 and "room" in out.stderr
    out = orbridge("token", "--room", "r", "--role", "expert", "--name", "E", "--ttl", "forever",
                   "--secret", SECRET)  # fmt: skip
    assert out.returncode == 2 and "TTL" in out.stderr
    out = orbridge("token", "--room", "r", "--role", "expert", "--name", "E", "--secret", "short")
    assert out.returncode == 2 and "secret" in out.stderr


def test_serve_refuses_bad_settings() -> None:
    out = orbridge("serve", "--presence-ttl", "60", "--secret", SECRET)
    assert out.returncode == 2 and "presence_ttl" in out.stderr
    out = orbridge("serve", "--track-stall-timeout", "0", "--secret", SECRET)  # serve passes it
    assert out.returncode == 2 and "track_stall_timeout" in out.stderr


async def test_generated_secret_survives_restarts(tmp_path: Path) -> None:
    """No secret configured: serve makes one (0600) and `orbridge token` signs with it."""
    node = ServerProcess("--data-dir", str(tmp_path), secret=None)
    try:
        assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
        out = orbridge("token", "--room", "or-1", "--role", "surgeon", "--name", "Dr Ma",
                       "--json", "--data-dir", str(tmp_path))  # fmt: skip
        token = json.loads(out.stdout)["token"]
        for attempt in range(2):
            client = RoomClient(node.url, token)
            await client.connect()
            snapshot = await client.join()
            assert snapshot["self"]["name"] == "Dr Ma"
            await client.close()
            if attempt == 0:  # restart the server: the same token still works
                assert node.terminate() == 0
                node.stop()
                node = ServerProcess("--data-dir", str(tmp_path), secret=None)
    finally:
        node.stop()
    assert "presence: memory" in node.log()


async def test_serve_demo_runs_a_synthetic_operation(tmp_path: Path) -> None:
    """`orbridge serve --demo`: join links printed; the synthetic OR and patient are live."""
    node = ServerProcess("--demo", "--data-dir", str(tmp_path), secret=None)
    try:

        def metrics() -> str:
            with urllib.request.urlopen(node.url + "/metrics", timeout=2) as response:
                return response.read().decode()

        for _ in range(100):  # 20 s at most
            text = await asyncio.to_thread(metrics)
            tracks = 'orbridge_media{what="tracks"} 2.0' in text
            name = 'orbridge_vitals_ingested_total{via="socketio",what="numerics"} '
            vitals = any(x.startswith(name) and float(x.split()[-1]) > 0 for x in text.splitlines())
            if tracks and vitals:
                break
            await asyncio.sleep(0.2)
        assert tracks and vitals, text[-2000:]
        # the printed expert link joins the demo room
        link = next(line.split()[-1] for line in node.log().splitlines() if "expert (" in line)
        token = link.split("#token=")[1]
        client = RoomClient(node.url, token)
        await client.connect(room="demo")
        snapshot = await client.join()
        assert {t["source"] for t in snapshot["tracks"]} == {"laparoscope", "microphone"}
        assert snapshot["vitals"]["numerics"]
        await client.close()
    finally:
        assert node.terminate() == 0
        node.stop()
    left = await asyncio.to_thread(
        subprocess.run, ["pgrep", "-f", f"--url {node.url}"], capture_output=True, text=True
    )
    assert left.stdout.strip() == "", "the demo's children outlived the server"


VISIBLE = "is visible to every user of this machine (ps, /proc/<pid>/cmdline)"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o620], ids=lambda m: f"{m:04o}")
def test_serve_refuses_a_secret_file_others_can_read(tmp_path: Path, mode: int) -> None:
    """The generated secret (or a --secret-file) with group/other bits: no start, one line that
    says how to fix it, no traceback."""
    data = tmp_path / "data"
    data.mkdir()
    secret = data / "secret"
    secret.write_text("s" * 64 + "\n")
    secret.chmod(mode)
    out = orbridge("serve", "--port", "0", "--data-dir", str(data))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"orbridge: bad settings: secret file {secret} is readable or writable by "
        f"group/others (mode {mode:04o}); fix it with: chmod 600 {secret}"
    ]
    given = tmp_path / "given-secret"
    given.write_text(SECRET + "\n")
    given.chmod(mode)
    out = orbridge("serve", "--port", "0", "--data-dir", str(data), "--secret-file", str(given))
    assert out.returncode == 2 and f"chmod 600 {given}" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


async def test_secret_file_for_serve_and_token(tmp_path: Path) -> None:
    """--secret-file: serve signs with the file's secret, `orbridge token --secret-file` mints
    tokens it accepts; nothing warns, nothing is generated in the data directory."""
    path = tmp_path / "orbridge.secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    data = tmp_path / "data"
    node = ServerProcess("--data-dir", str(data), "--secret-file", str(path), secret=None)
    try:
        out = orbridge("token", "--room", "or-1", "--role", "surgeon", "--name", "Dr Ma",
                       "--json", "--secret-file", str(path))  # fmt: skip
        assert out.returncode == 0 and out.stderr == "", out.stderr
        token = json.loads(out.stdout)["token"]
        assert tokens.verify(SECRET, token).name == "Dr Ma"
        client = RoomClient(node.url, token)
        await client.connect()
        assert (await client.join())["self"]["name"] == "Dr Ma"
        await client.close()
        env = {"ORBRIDGE_SECRET_FILE": str(path)}
        out = orbridge("token", "--room", "or-1", "--role", "expert", "--name", "E", env=env)
        assert out.returncode == 0 and out.stderr == "", out.stderr
    finally:
        node.stop()
    assert VISIBLE not in node.log()
    assert not (data / "secret").exists()


def test_secrets_given_as_flags_are_warned_about(tmp_path: Path) -> None:
    """--secret, --api-key, --turn-credential: one warning line each at start (serve logs it),
    naming where the value belongs instead; the command still runs."""
    node = ServerProcess("--api-key", "k" * 40, "--api-key", "j" * 40, "--turn-credential", "tc",
                         "--data-dir", str(tmp_path))  # fmt: skip
    try:
        log = node.log()
    finally:
        node.stop()
    lines = [line for line in log.splitlines() if VISIBLE in line]
    assert len(lines) == 3 and all("WARNING" in line for line in lines), log
    assert "--secret " in lines[0] and "use ORBRIDGE_SECRET or --secret-file instead" in lines[0]
    assert "--api-key " in lines[1] and "ORBRIDGE_API_KEYS" in lines[1]
    assert "--turn-credential " in lines[2] and "ORBRIDGE_TURN_CREDENTIAL" in lines[2]
    assert "k" * 40 not in log and "tc" not in log.split()

    out = orbridge("token", "--room", "r", "--role", "expert", "--name", "E", "--secret", SECRET)
    assert out.returncode == 0
    assert out.stderr.splitlines() == [
        f"orbridge token: warning: --secret {VISIBLE}: use ORBRIDGE_SECRET or --secret-file instead"
    ]
    # the clients that mint their own token warn too (vitals here: no server to reach)
    out = orbridge("vitals", "--synthetic", "--url", "http://127.0.0.1:9", "--room", "r",
                   "--secret", SECRET, "--duration", "0.1")  # fmt: skip
    assert out.stderr.splitlines()[0] == (
        f"orbridge vitals: warning: --secret {VISIBLE}: use ORBRIDGE_SECRET or --secret-file "
        "instead"
    )


def test_every_subcommand_with_a_secret_flag_warns() -> None:
    from orbridge.signaling.cli.main import build_parser, secret_flag_warnings

    parser = build_parser()
    commands = [
        ["serve"], ["token", "--room", "r", "--role", "expert", "--name", "E"],
        ["publish", "--url", "http://h", "--synthetic"], ["vitals", "--synthetic"],
        ["loadtest", "--room", "r"], ["recordings", "list"], ["recordings", "export", "id"],
    ]  # fmt: skip
    for command in commands:
        given = secret_flag_warnings(parser.parse_args([*command, "--secret", SECRET]))
        assert [w.split()[0] for w in given] == ["--secret"], command
        assert secret_flag_warnings(parser.parse_args([*command, "--secret-file", "f"])) == []
        assert secret_flag_warnings(parser.parse_args(command)) == []
