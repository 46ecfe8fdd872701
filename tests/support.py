"""Test support: real Redis servers, real orbridge nodes (in-process and as processes)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789-abcdefghij"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def _http_ok(url: str) -> bool:
    """Serving: /healthz answers, healthy (200) or degraded (503: e.g. started without Redis)."""
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 503
    except OSError:
        return False


class RedisProcess:
    """A real redis-server on a fixed loopback port that a test can stop and start again
    (an outage), or freeze with SIGSTOP (a hung server)."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed and ORBRIDGE_TEST_REDIS_URL is not set: "
                "run scripts/test.sh (it installs redis-server) or point the tests at a Redis"
            )
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        # Its own directory: a replica's full sync writes an RDB file even with --save "".
        self.dir = tempfile.mkdtemp(prefix="orbridge-redis-")

    def start(self, replica_of: str | None = None) -> RedisProcess:
        """Start it, as a replica of ``"host port"`` if given."""
        replication = ["--replicaof", replica_of] if replica_of else []
        os.makedirs(self.dir, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, *replication],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not wait_until(lambda: _tcp_open(self.port), 10):
            self.stop()
            raise RuntimeError("redis-server did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot terminate
                self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def freeze(self, frozen: bool = True) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SentinelGroup:
    """A Redis master, one replica and one redis-sentinel watching them (quorum 1), all real
    processes on free loopback ports, with a failover a second after the master dies."""

    SERVICE = "orbridge"

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-sentinel")
        if binary is None:
            raise RuntimeError("redis-sentinel is not installed: run scripts/test.sh")
        self.binary = binary
        self.master = RedisProcess()
        self.replica = RedisProcess()
        self.port = free_port()
        self.conf = workdir / "sentinel.conf"
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/0/{self.SERVICE}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelGroup:
        self.master.start()
        self.replica.start(f"127.0.0.1 {self.master.port}")
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
            f"sentinel failover-timeout {self.SERVICE} 5000\n"
            f"sentinel parallel-syncs {self.SERVICE} 1\n"
        )
        self.proc = subprocess.Popen(
            [self.binary, str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_until(lambda: _tcp_open(self.port), 10):
            self.stop()
            raise RuntimeError("redis-sentinel did not start")
        return self

    def master_port(self) -> int | None:
        """The port the sentinel names as the master now (None if it cannot say)."""
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as client:
                address = client.sentinel_get_master_addr_by_name(self.SERVICE)
        except (redis.RedisError, OSError):
            return None
        return int(address[1]) if address else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        self.replica.stop()
        self.master.stop()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Our own redis-server on a free loopback port, or ORBRIDGE_TEST_REDIS_URL.

    A missing Redis is a failure, never a skip: presence must be tested on the real thing.
    """
    configured = os.environ.get("ORBRIDGE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    with RedisProcess() as server:
        yield server.url


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    """`orbridge serve` as a real process, for clustering, kill -9 and SIGTERM tests."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, secret: str | None = SECRET
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(env or {})
        self._data_dir: str | None = None
        if "--data-dir" not in args and "ORBRIDGE_DATA_DIR" not in env:
            # never the user's own data directory (its audit trail, its recordings)
            self._data_dir = tempfile.mkdtemp(prefix="orbridge-node-data-")
            env["ORBRIDGE_DATA_DIR"] = self._data_dir
        cmd = [
            sys.executable, "-m", "orbridge.signaling.cli", "serve",
            "--port", str(self.port), *(["--secret", secret] if secret else []), *args,
        ]  # fmt: skip
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"orbridge-node-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        if not wait_until(lambda: _http_ok(self.url + "/healthz"), 20):
            self.stop()
            raise RuntimeError(f"orbridge serve did not start: {self.log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
