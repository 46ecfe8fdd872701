"""One settings object, fed by (lowest first) defaults, a TOML file, ORBRIDGE_* environment
variables and command-line flags."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shlex
import socket
import stat
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orbridge.recording.files import hold_lock, make_private_dir
from orbridge.rooms.redis_connect import parse_redis_url
from orbridge.signaling.ingest.peers import DEFAULT_ALLOW, parse_networks

ENV_PREFIX = "ORBRIDGE_"
MIN_SECRET_LENGTH = 32


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "orbridge"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None  # the base URL printed in join links; default http://host:port
    redis_url: str | None = None
    redis_prefix: str = "orbridge:"
    secret: str | None = Field(None, repr=False)
    secret_file: Path | None = None  # the secret in a file (0600): not on a command line
    data_dir: Path = Field(default_factory=default_data_dir)
    api_keys: list[str] = Field(default_factory=list, repr=False)
    # This node's name in presence and in its recordings' manifests. Default: generated once and
    # kept in <data_dir>/node_id (claim_node_id), so a restarted node knows its own recordings.
    node_id: str | None = None
    presence_ttl: float = Field(10.0, gt=0, le=15.0)  # seconds
    heartbeat_interval: float = Field(3.0, gt=0)  # seconds
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_event_bytes: int = Field(64 * 1024, ge=1024)  # largest Socket.IO event payload accepted
    event_rate: float = Field(50.0, gt=0)  # events per second per connection, sustained
    event_burst: int = Field(100, ge=1)
    cors_allowed_origins: list[str] | str = Field(default_factory=list)
    shutdown_grace: float = Field(2.0, ge=0)
    # A room's consultation (overlay, vitals, alarms, limits) ends after it has been empty on
    # every node this long (seconds), or when a moderator sends end_consultation.
    room_empty_timeout: float = Field(300.0, gt=0, le=24 * 3600)
    # Engine.IO pings: a client that answers none for ping_interval + ping_timeout is gone.
    ping_interval: float = Field(4.0, ge=1, le=60)
    ping_timeout: float = Field(5.0, ge=1, le=60)
    # The longest a join token may live, whoever minted it (refresh_token re-mints within it).
    max_token_ttl: int = Field(24 * 3600, ge=60, le=7 * 24 * 3600)
    # media (WebRTC)
    video_codec: Literal["VP8", "H264"] = "VP8"
    ice_addresses: list[str] = Field(default_factory=list)  # default: the listen host if specific
    announced_address: str | None = None  # public address written into candidates (NAT)
    stun_urls: list[str] = Field(default_factory=list)
    turn_urls: list[str] = Field(default_factory=list)
    turn_username: str | None = None
    turn_credential: str | None = Field(None, repr=False)
    subscriber_queue: int = Field(30, ge=2, le=600)  # frames buffered per subscriber
    lean_sender: bool = True  # False: forward with aiortc's own RTP send loop (slower)
    keyframe_interval: float = Field(0.5, ge=0.05, le=10.0)  # seconds between PLIs per track
    # A track without a frame this long (seconds) while its publisher is connected is told
    # `track_stalled` to its room (a frozen picture), then `track_resumed`.
    track_stall_timeout: float = Field(1.5, gt=0, le=30.0)
    # vitals: HL7 v2 over MLLP from patient monitors and gateways
    mllp_port: int | None = Field(None, ge=0, le=65535)
    mllp_host: str | None = None  # default: the listen host
    mllp_bindings: dict[str, str] = Field(default_factory=dict)  # device id -> room
    mllp_default_room: str | None = None  # for devices without a binding (else AE)
    # Who may connect (CIDRs; everyone else is closed unread), how many connections one address
    # may hold (a newer one replaces the one idle longest), and how long a connection may go
    # without an ORU^R01 (seconds; empty frames and noise do not count).
    mllp_allow: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOW))
    mllp_max_per_peer: int = Field(8, ge=1, le=64)  # the listener holds 64 in all
    mllp_idle_timeout: float = Field(180.0, gt=0, le=24 * 3600)
    # Reverse proxies (CIDRs) whose X-Forwarded-For is believed for the audit trail's client
    # address (docs/security.md, "Audit trail"); none by default: the socket's peer is named.
    trusted_proxies: list[str] = Field(default_factory=list)
    # recording (docs/recording.md)
    recordings_dir: Path | None = None  # default: <data_dir>/recordings
    record_rooms: list[str] = Field(default_factory=list)  # room policy: globs recorded on join
    record_consent: Literal["written", "verbal", "pending", "not_required"] = "pending"
    # ^ consent state of policy recordings (a moderator sets it later if pending)
    # Regions an endoscopy tower burns patient data into, [x, y, width, height] as fractions
    # of the picture: `orbridge recordings export --deidentify` masks them.
    deidentify_regions: list[tuple[float, float, float, float]] = Field(default_factory=list)
    recording_grant_ttl: int = Field(4 * 3600, ge=60, le=24 * 3600)  # media link lifetime (s)
    # Seconds between passes that repair the recordings of nodes that died (0: at start only).
    recording_repair_interval: float = Field(30.0, ge=0, le=3600)

    @field_validator("secret")
    @classmethod
    def _secret_long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_SECRET_LENGTH:
            raise ValueError(f"the secret must have at least {MIN_SECRET_LENGTH} characters")
        return value

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str | None) -> str | None:
        value = value.strip() if value is not None else None
        if value is not None and any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("a node id is one word: no spaces or control characters")
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value:
            parse_redis_url(value)  # ValueError names what is wrong
        return value or None

    @model_validator(mode="after")
    def _one_secret(self) -> Settings:
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("give secret or secret_file, not both")
        return self

    @field_validator("heartbeat_interval")
    @classmethod
    def _heartbeat_below_ttl(cls, value: float, info: Any) -> float:
        ttl = info.data.get("presence_ttl")
        if ttl is not None and value >= ttl:
            raise ValueError("heartbeat_interval must be shorter than presence_ttl")
        return value

    @field_validator("mllp_bindings", mode="before")
    @classmethod
    def _bindings(cls, value: Any) -> Any:
        # "monitor-3=or-1,monitor-4=or-2" (environment) or ["monitor-3=or-1"] (flags)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            pairs = {}
            for item in value:
                device, sep, room = str(item).partition("=")
                if not sep or not device.strip() or not room.strip():
                    raise ValueError(f"binding {item!r} is not DEVICE=ROOM")
                pairs[device.strip()] = room.strip()
            return pairs
        return value

    @field_validator("mllp_allow", mode="before")
    @classmethod
    def _allow(cls, value: Any) -> Any:
        # "10.0.0.0/8,fd00::/8" (environment, a flag) or a list whose items may hold commas
        # (a repeated flag, TOML); stored in canonical form ("::1" -> "::1/128").
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return value  # pydantic says what is wrong with it
        items = [part for item in value for part in str(item).split(",") if part.strip()]
        if not items:
            raise ValueError("no network given: to admit every address say 0.0.0.0/0,::/0")
        return [str(network) for network in parse_networks(items)]

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        # like mllp_allow, but empty is the default (no proxy is trusted)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return value
        items = [part for item in value for part in str(item).split(",") if part.strip()]
        return [str(network) for network in parse_networks(items)]

    @field_validator("deidentify_regions")
    @classmethod
    def _regions(
        cls, value: list[tuple[float, float, float, float]]
    ) -> list[tuple[float, float, float, float]]:
        for x, y, w, h in value:
            if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x and 0 < h <= 1 - y):
                raise ValueError(f"region {[x, y, w, h]} is not inside the picture (fractions)")
        return value

    @field_validator("ice_addresses", "announced_address")
    @classmethod
    def _ip_literals(cls, value: list[str] | str | None) -> list[str] | str | None:
        for address in [value] if isinstance(value, str) else value or []:
            ipaddress.ip_address(address)  # raises ValueError with the offending text
        return value

    def candidate_addresses(self) -> list[str] | None:
        """Where WebRTC gathers host candidates: configured, else the listen address when it
        names one interface, else None (every interface, as aioice scans them)."""
        if self.ice_addresses:
            return list(self.ice_addresses)
        host = "127.0.0.1" if self.host == "localhost" else self.host
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        return None if address.is_unspecified else [str(address)]

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def audit_path(self) -> Path:
        """The audit trail (docs/security.md): ``<data_dir>/audit.jsonl``."""
        return self.data_dir / "audit.jsonl"

    @property
    def recordings_path(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    def resolved_secret(self) -> str:
        """The signing secret: configured, read from ``secret_file``, or generated once and
        kept in the data directory. SettingsError if a file is unsafe or unreadable."""
        if self.secret:
            return self.secret
        if self.secret_file is not None:
            return read_secret_file(self.secret_file)
        return load_or_create_secret(self.data_dir)


def _read_private_text(path: Path, what: str) -> str:
    """A file's text, refused (SettingsError) when group or others may read or write it.
    FileNotFoundError passes through."""
    try:
        fd = os.open(path, os.O_RDONLY)  # follows symlinks: mounted secrets are often links
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SettingsError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode  # of what was opened, not of a path again
        if mode & 0o077:
            raise SettingsError(
                f"{what} {path} is readable or writable by group/others (mode "
                f"{stat.S_IMODE(mode):04o}); fix it with: chmod 600 {shlex.quote(str(path))}"
            )
        try:
            return handle.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"cannot read {what} {path}: {exc}") from exc


def _check_length(value: str, path: Path, what: str) -> str:
    if len(value) < MIN_SECRET_LENGTH:
        raise SettingsError(
            f"{what} {path}: the secret must have at least {MIN_SECRET_LENGTH} characters"
        )
    return value


def read_secret_file(path: str | Path) -> str:
    """The secret in a file given with --secret-file/ORBRIDGE_SECRET_FILE: private to its
    owner (no group or other bits), one line (a trailing newline is dropped), at least
    MIN_SECRET_LENGTH characters. SettingsError says what is wrong and how to fix it."""
    path = Path(path)
    try:
        text = _read_private_text(path, "secret file")
    except FileNotFoundError as exc:
        raise SettingsError(f"secret file {path} does not exist") from exc
    return _check_length(text.rstrip("\r\n"), path, "secret file")


def client_secret(
    secret: str | None, secret_file: str | Path | None, environ: dict[str, str] | None = None
) -> str | None:
    """The secret a command-line client mints its token with: --secret, else --secret-file,
    else ORBRIDGE_SECRET, else ORBRIDGE_SECRET_FILE; None if none is given. SettingsError for
    a file that is unsafe, unreadable or too short."""
    environ = os.environ if environ is None else environ
    if secret:
        return secret
    if secret_file:
        return read_secret_file(secret_file)
    if environ.get(ENV_PREFIX + "SECRET"):
        return environ[ENV_PREFIX + "SECRET"]
    if environ.get(ENV_PREFIX + "SECRET_FILE"):
        return read_secret_file(environ[ENV_PREFIX + "SECRET_FILE"])
    return None


def load_or_create_secret(data_dir: Path) -> str:
    """The secret generated in ``<data_dir>/secret``: read (refused if group or others have
    access), else created 0600 (O_EXCL: one process wins a race), its directory 0700."""
    path = data_dir / "secret"
    try:
        return _check_length(_read_private_text(path, "secret file").strip(), path, "secret file")
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(48)
    try:
        make_private_dir(data_dir)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: wait for its one write
        deadline = time.monotonic() + 2.0
        while True:
            text = _read_private_text(path, "secret file").strip()
            if text or time.monotonic() > deadline:
                return _check_length(text, path, "secret file")
            time.sleep(0.01)
    except OSError as exc:
        raise SettingsError(f"cannot create the secret file {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


NODE_ID_FILE = "node_id"
_NODE_ID_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")


def new_node_id() -> str:
    """``orbridge-<hostname>-<8 hex>``: readable in logs, unique without coordination."""
    host = re.sub(r"[^A-Za-z0-9.-]+", "-", socket.gethostname()).strip(".-")[:63] or "host"
    return f"orbridge-{host}-{secrets.token_hex(4)}"


def _node_id_text(text: str, path: Path) -> str:
    value = text.strip()
    if not _NODE_ID_TEXT.match(value):
        raise SettingsError(
            f"node id file {path} does not hold a node id ({value[:40]!r}): delete it to have "
            "a new one generated, or give --node-id"
        )
    return value


def _read_node_id(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as exc:
        raise SettingsError(f"cannot read node id file {path}: {exc.strerror or exc}") from exc


def _written_node_id(path: Path) -> str:
    """The node id in a file another process may have just created: its one write (the id and
    a newline) is waited for, two seconds at most."""
    deadline = time.monotonic() + 2.0
    while True:
        text = _read_node_id(path)
        if text.endswith("\n") or time.monotonic() > deadline:
            return _node_id_text(text, path)
        time.sleep(0.01)


def _load_or_create_node_id(data_dir: Path) -> tuple[str, bool]:
    """(node id, created now). OSError when the file cannot be created."""
    path = data_dir / NODE_ID_FILE
    try:
        text = _read_node_id(path)
        return (_node_id_text(text, path) if text else _written_node_id(path)), False
    except (FileNotFoundError, NotADirectoryError):
        pass  # created below (a NotADirectoryError again, an OSError: no data directory)
    value = new_node_id()
    make_private_dir(data_dir)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: read the winner's
        return _written_node_id(path), False
    try:
        os.write(fd, (value + "\n").encode())  # one write: a reader sees all of it or nothing
        os.fsync(fd)
    finally:
        os.close(fd)
    return value, True


def load_or_create_node_id(data_dir: Path) -> str:
    """The node id generated once in ``<data_dir>/node_id``: read, else created 0600 (O_EXCL:
    of racing processes one writes it and every one reads the winner's), its directory 0700.
    SettingsError if it cannot be read, created, or holds no node id."""
    try:
        return _load_or_create_node_id(data_dir)[0]
    except OSError as exc:
        path = data_dir / NODE_ID_FILE
        raise SettingsError(f"cannot create node id file {path}: {exc.strerror or exc}") from exc


@dataclass
class NodeIdentity:
    """The node id a server runs as, and, for the data directory's one, the lock that says a
    running process has it. Close it when the server stops."""

    node_id: str
    source: Literal["setting", "data_dir", "this_run"]
    warning: str | None = None  # why the data directory's node id is not used (log it)
    created: bool = False  # generated at this start
    _lock: IO[bytes] | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def claim_node_id(node_id: str | None, data_dir: Path) -> NodeIdentity:
    """The node id to run as: the one configured, else the data directory's (generated on first
    use), held with an ``flock`` on its file for as long as the server runs.

    Two processes on one machine sharing a data directory would share its node id, and each
    would take the other's recordings for its own. The second one therefore runs under an id of
    its own for this run (and says so in ``warning``), as does a process that cannot write the
    data directory. SettingsError for a node id file that cannot be read or holds no id."""
    if node_id:
        return NodeIdentity(node_id, "setting")
    path = data_dir / NODE_ID_FILE
    try:
        value, created = _load_or_create_node_id(data_dir)
        lock = hold_lock(path)
    except OSError as exc:
        fallback = new_node_id()
        return NodeIdentity(fallback, "this_run", warning=(
            f"cannot keep the node id in {path} ({exc.strerror or exc}): running as {fallback} "
            "for this run only; give --node-id or a writable --data-dir"
        ))  # fmt: skip
    if lock is None:
        fallback = new_node_id()
        return NodeIdentity(fallback, "this_run", warning=(
            f"another running orbridge process uses the data directory {data_dir} and its node "
            f"id {value}: running as {fallback} for this run; give every process its own "
            "--data-dir or --node-id"
        ))  # fmt: skip
    return NodeIdentity(value, "data_dir", created=created, _lock=lock)


_LIST_FIELDS = {
    "api_keys",
    "cors_allowed_origins",
    "ice_addresses",
    "stun_urls",
    "turn_urls",
    "record_rooms",
    "mllp_allow",
    "trusted_proxies",
}


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        values[name] = (
            [v.strip() for v in raw.split(",") if v.strip()] if name in _LIST_FIELDS else raw
        )
    return values


class SettingsError(Exception):
    pass


_SECRET_SOURCES = {"secret", "secret_file"}


def load_settings(
    flags: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    merged: dict[str, Any] = {}
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as handle:
                merged.update(tomllib.load(handle))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {config_file}: {exc}") from exc
    for layer in (_from_env(environ), {k: v for k, v in (flags or {}).items() if v is not None}):
        if _SECRET_SOURCES & layer.keys():  # a secret (or its file) overrides the other too
            for name in _SECRET_SOURCES:
                merged.pop(name, None)
        merged.update(layer)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(problems) from exc
