"""What the benchmarks share: a server pinned to core 0, its CPU time, percentiles."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support import ROOT, free_port, wait_until

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))], 2)


def up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=0.5) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def pinned_server(
    secret: str, core: int = 0, args: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`orbridge serve` (with `args`) on a free loopback port, pinned to `core`; stopped
    afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        ["taskset", "-c", str(core), sys.executable, "-m", "orbridge.signaling.cli", "serve",
         "--port", str(port), "--secret", secret, "--log-level", "WARNING", *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if not wait_until(lambda: up(url), 20):
            raise SystemExit("the server did not start")
        yield server, url
    finally:
        server.terminate()
        server.wait(15)
