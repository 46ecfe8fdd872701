from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orbridge.signaling.settings import (
    SettingsError,
    claim_node_id,
    load_or_create_node_id,
    load_settings,
)


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "orbridge.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nlog_format = "json"\napi_keys = ["k1"]\n')
    s = load_settings(config_file=config, environ={})
    assert (s.port, s.host, s.log_format, s.api_keys) == (9001, "0.0.0.0", "json", ["k1"])
    assert s.presence_ttl == 10.0  # default
    s = load_settings(
        config_file=config, environ={"ORBRIDGE_PORT": "9002", "ORBRIDGE_API_KEYS": "a, b"}
    )
    assert s.port == 9002 and s.api_keys == ["a", "b"] and s.host == "0.0.0.0"
    s = load_settings(flags={"port": 9003, "host": None}, config_file=config,
                      environ={"ORBRIDGE_PORT": "9002"})  # fmt: skip
    assert s.port == 9003 and s.host == "0.0.0.0"
    env = {"ORBRIDGE_CONFIG": str(config), "ORBRIDGE_REDIS_URL": "redis://127.0.0.1:1/0"}
    s = load_settings(environ=env)
    assert s.port == 9001 and s.redis_url == "redis://127.0.0.1:1/0"
    assert s.base_url == "http://127.0.0.1:9001"


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"port": 70000}, "port"),
        ({"presence_ttl": 30}, "presence_ttl"),
        ({"presence_ttl": 5, "heartbeat_interval": 5}, "heartbeat_interval"),
        ({"secret": "short"}, "secret"),
        ({"log_format": "xml"}, "log_format"),
        ({"nonsense": 1}, "nonsense"),
        ({"track_stall_timeout": 0}, "track_stall_timeout"),
        ({"track_stall_timeout": 31}, "track_stall_timeout"),
    ],
)
def test_bad_settings_are_explained(values: dict[str, object], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        load_settings(flags=values, environ={})


def test_track_stall_timeout() -> None:
    assert load_settings(environ={}).track_stall_timeout == 1.5
    assert load_settings(flags={"track_stall_timeout": 0.8}, environ={}).track_stall_timeout == 0.8
    env = {"ORBRIDGE_TRACK_STALL_TIMEOUT": "30"}
    assert load_settings(environ=env).track_stall_timeout == 30.0


def test_unreadable_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 3")
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(config_file=bad, environ={})
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(config_file=tmp_path / "missing.toml", environ={})


def test_generated_secret_is_private_and_stable(tmp_path: Path) -> None:
    s = load_settings(flags={"data_dir": str(tmp_path / "data")}, environ={})
    first = s.resolved_secret()
    path = tmp_path / "data" / "secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first) >= 32
    assert (
        load_settings(flags={"data_dir": str(tmp_path / "data")}, environ={}).resolved_secret()
        == first
    )


def test_configured_secret_wins(tmp_path: Path) -> None:
    s = load_settings(flags={"data_dir": str(tmp_path)}, environ={"ORBRIDGE_SECRET": "x" * 40})
    assert s.resolved_secret() == "x" * 40
    assert not (tmp_path / "secret").exists()


def test_candidate_addresses() -> None:
    assert load_settings(environ={}).candidate_addresses() == ["127.0.0.1"]
    assert load_settings(flags={"host": "localhost"}, environ={}).candidate_addresses() == [
        "127.0.0.1"
    ]
    assert load_settings(flags={"host": "0.0.0.0"}, environ={}).candidate_addresses() is None
    env = {"ORBRIDGE_ICE_ADDRESSES": "10.0.0.5, 127.0.0.1"}
    assert load_settings(flags={"host": "0.0.0.0"}, environ=env).candidate_addresses() == [
        "10.0.0.5",
        "127.0.0.1",
    ]
    with pytest.raises(SettingsError, match="ice_addresses"):
        load_settings(flags={"ice_addresses": ["not-an-ip"]}, environ={})
    with pytest.raises(SettingsError, match="announced_address"):
        load_settings(flags={"announced_address": "example.org"}, environ={})
    with pytest.raises(SettingsError, match="video_codec"):
        load_settings(flags={"video_codec": "AV1"}, environ={})


def test_settings_refuse_a_malformed_redis_url_at_start() -> None:
    with pytest.raises(SettingsError, match="redis_url"):
        load_settings(flags={"redis_url": "redis+sentinel://127.0.0.1:26379/orbridge"})
    ok = load_settings(flags={"redis_url": "redis+sentinel://127.0.0.1:26379/0/orbridge"})
    assert ok.redis_url == "redis+sentinel://127.0.0.1:26379/0/orbridge"


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_secret_file_setting(tmp_path: Path) -> None:
    """--secret-file / ORBRIDGE_SECRET_FILE: the file's one line (trailing newline dropped),
    0600, at least 32 characters; one source of the secret wins over the other by layer."""
    path = private_file(tmp_path / "secret.txt", "f" * 40 + "\n")
    assert load_settings(flags={"secret_file": str(path)}, environ={}).resolved_secret() == "f" * 40
    env = {"ORBRIDGE_SECRET_FILE": str(path)}
    assert load_settings(environ=env).resolved_secret() == "f" * 40
    # a higher layer's secret (or file) replaces a lower layer's file (or secret)
    s = load_settings(flags={"secret_file": str(path)}, environ={"ORBRIDGE_SECRET": "e" * 40})
    assert s.resolved_secret() == "f" * 40
    s = load_settings(flags={"secret": "g" * 40}, environ=env)
    assert s.resolved_secret() == "g" * 40
    with pytest.raises(SettingsError, match="not both"):
        load_settings(environ={**env, "ORBRIDGE_SECRET": "e" * 40})
    short = private_file(tmp_path / "short", "x" * 31 + "\n")
    with pytest.raises(SettingsError, match="at least 32 characters"):
        load_settings(flags={"secret_file": str(short)}, environ={}).resolved_secret()
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(flags={"secret_file": str(tmp_path / "nope")}, environ={}).resolved_secret()
    fix = f": chmod 600 {re.escape(str(path))}$"
    for mode in (0o640, 0o604, 0o620, 0o602):  # read or write, group or others
        path.chmod(mode)
        with pytest.raises(SettingsError, match=f"mode {mode:04o}.*{fix}"):
            load_settings(flags={"secret_file": str(path)}, environ={}).resolved_secret()


def test_client_secret(tmp_path: Path) -> None:
    """The secret `orbridge publish/vitals/loadtest` mint with: flag, file, env, env file."""
    from orbridge.signaling.settings import client_secret

    path = private_file(tmp_path / "secret.txt", "f" * 40 + "\n")
    assert client_secret("a" * 40, str(path), {}) == "a" * 40
    assert client_secret(None, str(path), {"ORBRIDGE_SECRET": "e" * 40}) == "f" * 40
    assert client_secret(None, None, {"ORBRIDGE_SECRET": "e" * 40}) == "e" * 40
    assert client_secret(None, None, {"ORBRIDGE_SECRET_FILE": str(path)}) == "f" * 40
    assert client_secret(None, None, {}) is None
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        client_secret(None, str(path), {})


def test_generated_secret_others_can_read_is_refused(tmp_path: Path) -> None:
    s = load_settings(flags={"data_dir": str(tmp_path / "data")}, environ={})
    s.resolved_secret()
    path = tmp_path / "data" / "secret"
    path.chmod(0o644)
    with pytest.raises(SettingsError, match=f"group/others .*: chmod 600 {re.escape(str(path))}$"):
        s.resolved_secret()


def test_data_dir_and_its_missing_parents_are_created_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        load_settings(flags={"data_dir": str(tmp_path / "a" / "b")}, environ={}).resolved_secret()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b" / "secret").stat().st_mode) == 0o600


def test_node_id_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    data = tmp_path / "a" / "data"
    old = os.umask(0o022)
    try:
        first = claim_node_id(None, data)
    finally:
        os.umask(old)
    first.close()
    assert first.source == "data_dir" and first.created and first.warning is None
    assert re.fullmatch(r"orbridge-[A-Za-z0-9.-]+-[0-9a-f]{8}", first.node_id)
    path = data / "node_id"
    assert path.read_text() == first.node_id + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    second = claim_node_id(None, data)  # the next start
    second.close()
    assert (second.node_id, second.source, second.created) == (first.node_id, "data_dir", False)
    assert load_or_create_node_id(data) == first.node_id


def test_configured_node_id_wins(tmp_path: Path) -> None:
    s = load_settings(flags={"data_dir": str(tmp_path), "node_id": "node-a"}, environ={})
    identity = claim_node_id(s.node_id, s.data_dir)
    assert (identity.node_id, identity.source) == ("node-a", "setting")
    assert not (tmp_path / "node_id").exists()
    s = load_settings(flags={"data_dir": str(tmp_path)}, environ={"ORBRIDGE_NODE_ID": " node-b "})
    assert s.node_id == "node-b"
    assert load_settings(flags={"data_dir": str(tmp_path)}, environ={}).node_id is None
    with pytest.raises(SettingsError, match="node_id"):
        load_settings(flags={"node_id": "two words"}, environ={})


def test_racing_processes_read_the_winners_node_id(tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = (
        "import sys, time; from pathlib import Path\n"
        "from orbridge.signaling.settings import load_or_create_node_id\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "print(load_or_create_node_id(Path(sys.argv[1])))\n"
    )
    start = str(time.time() + 1.0)  # every process past its imports, then all at once
    command = [sys.executable, "-c", script, str(data), start]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=30) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    ids = {out.strip() for out, _ in outputs}
    assert ids == {(data / "node_id").read_text().strip()}


def test_a_second_process_on_the_data_dir_runs_under_an_id_of_its_own(tmp_path: Path) -> None:
    first = claim_node_id(None, tmp_path)
    try:
        second = claim_node_id(None, tmp_path)  # the first one's lock is held
        assert second.source == "this_run" and second.node_id != first.node_id
        assert second.warning is not None and first.node_id in second.warning
        second.close()
    finally:
        first.close()
    again = claim_node_id(None, tmp_path)  # the first one stopped: its id is free again
    again.close()
    assert again.node_id == first.node_id


def test_a_data_dir_that_cannot_be_made_runs_under_an_id_for_this_run(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # a file where the directory should be (root or not)
    identity = claim_node_id(None, tmp_path / "file" / "data")
    assert identity.source == "this_run" and identity.node_id.startswith("orbridge-")
    assert "cannot keep the node id" in (identity.warning or "")


def test_a_node_id_file_without_a_node_id_is_refused(tmp_path: Path) -> None:
    (tmp_path / "node_id").write_text("not a node id\n")
    with pytest.raises(SettingsError, match="does not hold a node id"):
        claim_node_id(None, tmp_path)
