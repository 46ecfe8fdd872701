from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from orbridge.signaling.settings import SettingsError, load_settings


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
