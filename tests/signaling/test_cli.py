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
