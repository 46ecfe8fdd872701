"""SFU capacity: orbridge's forwarding against aiortc's MediaRelay baseline, in one run.

For each (mode, N): an orbridge server pinned to core 0 (`--mode forward`: orbridge as it
ships; `--mode relay`: the same server with aiortc's MediaRelay, decoding once and encoding
per subscriber, see benchmarks/baseline.py), a publisher streaming a pre-encoded 1280x720 VP8
30 fps clip (~2.5 Mbps, no encoding at run time) and `orbridge loadtest` with N light
subscribers, both pinned to core 1. Server CPU is read from /proc over a window in which all
N subscribers receive. Prints one JSON object.

    .venv/bin/python -m benchmarks.sfu --forward 25,50,100 --relay 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import cpu_seconds, up
from tests.support import ROOT, free_port, wait_until

SECRET = "sfu-benchmark-secret-0123456789abcdef"


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=2) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


def pinned(core: int, *cmd: str) -> list[str]:
    return ["taskset", "-c", str(core), *cmd]


def make_clip(path: Path, seconds: float, width: int, height: int, fps: int, bitrate: int) -> None:
    from orbridge.media.sim.clip import (
        write_clip,  # the synthetic laparoscopy picture, encoded once
    )

    write_clip(path, seconds=seconds, width=width, height=height, fps=fps, bitrate=bitrate,
               gop_seconds=2.0)  # fmt: skip


def serve(mode: str, port: int) -> None:
    """Run one server (a child process of the benchmark)."""
    from aiohttp import web

    from orbridge.media.router import MediaRouter
    from orbridge.signaling.app import create_app
    from orbridge.signaling.settings import Settings

    router: type[MediaRouter] = MediaRouter
    lean = mode != "forward-aiortc"
    if mode == "relay":
        from benchmarks.baseline import RelayRouter

        router = RelayRouter
    settings = Settings(
        port=port, secret=SECRET, log_level="WARNING", subscriber_queue=60, lean_sender=lean
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(create_app(settings, router), host="127.0.0.1", port=port, print=None)


def one(mode: str, n: int, clip: Path, window: float) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    room = f"bench-{mode}-{n}"
    python = sys.executable
    server = subprocess.Popen(
        pinned(0, python, "-m", "benchmarks.sfu", "--serve", mode, "--port", str(port)),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    procs = [server]
    try:
        if not wait_until(lambda: up(url), 20):
            raise RuntimeError(f"server did not start: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        publisher = subprocess.Popen(
            pinned(1, python, "-m", "orbridge.signaling.cli",
                "publish", "--url", url, "--room", room,
                   "--secret", SECRET, "--file", str(clip), "--source", "laparoscope"),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(publisher)
        if not wait_until(lambda: metric(url, 'orbridge_media{what="tracks"}') >= 1, 20):
            raise RuntimeError("the publisher did not publish")
        duration = window + 10 + n * 0.06
        load = subprocess.Popen(
            pinned(1, python, "-m", "orbridge.signaling.cli",
                "loadtest", "--url", url, "--room", room,
                   "--secret", SECRET, "--subscribers", str(n), "--duration", str(duration - 4),
                   "--ramp", "0.05"),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        procs.append(load)
        subs = 'orbridge_media{what="subscriptions"}'
        if not wait_until(lambda: metric(url, subs) >= n, 30 + n * 0.2, interval=0.5):
            raise RuntimeError(f"only {metric(url, subs)} of {n} subscribed")
        time.sleep(3)  # connections settle, keyframes flow
        c0, t0 = cpu_seconds(server.pid), time.monotonic()
        time.sleep(window)
        cpu = (cpu_seconds(server.pid) - c0) / (time.monotonic() - t0)
        out, _ = load.communicate(timeout=duration + 60)
        report = json.loads(out.strip().splitlines()[-1])
        return {
            "mode": mode, "subscribers": n, "server_cpu": round(cpu, 3),
            "cpu_per_subscriber": round(cpu / n, 5),
            "fps_min": report["fps"]["min"], "fps_mean": report["fps"]["mean"],
            "receiving": report["receiving"],
            "join_to_first_frame_p95_ms": report["join_to_first_frame_ms"]["p95"],
        }  # fmt: skip
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forward", default="25,50,100", help="subscriber counts for orbridge")
    parser.add_argument("--relay", default="1,2,4", help="subscriber counts for the baseline")
    parser.add_argument(
        "--aiortc-send", default="", help="subscriber counts for forwarding with aiortc's send loop"
    )
    parser.add_argument("--window", type=float, default=8.0, help="seconds of CPU measurement")
    parser.add_argument("--bitrate", type=int, default=2_500_000)
    parser.add_argument(
        "--serve", choices=["forward", "forward-aiortc", "relay"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        serve(opts.serve, opts.port)
        return
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores: the server on one, the load on the other")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "laparoscope-720p.webm"
        make_clip(clip, seconds=20, width=1280, height=720, fps=30, bitrate=opts.bitrate)
        runs = []
        plan = (
            ("relay", opts.relay),
            ("forward-aiortc", opts.aiortc_send),
            ("forward", opts.forward),
        )
        for mode, counts in plan:
            for n in [int(x) for x in counts.split(",") if x]:
                try:
                    runs.append(one(mode, n, clip, opts.window))
                except Exception as exc:  # report and go on: one failed point is not the run
                    runs.append({"mode": mode, "subscribers": n, "error": str(exc)})
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(json.dumps(summarize(runs, opts.bitrate)))


def summarize(runs: list[dict[str, Any]], bitrate: int) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]

    def per_sub(mode: str) -> float | None:
        points = [r["cpu_per_subscriber"] for r in good if r["mode"] == mode]
        return min(points) if points else None  # best (largest-N) amortized cost

    fwd, relay, plain = per_sub("forward"), per_sub("relay"), per_sub("forward-aiortc")
    keeping_up = [r["subscribers"] for r in good if r["mode"] == "forward" and r["fps_min"] >= 29]
    largest = [r for r in good if r["mode"] == "forward"]
    top = max(largest, key=lambda r: r["subscribers"]) if largest else None
    return {
        "video": {"size": "1280x720", "fps": 30, "codec": "VP8", "bitrate": bitrate},
        "runs": runs,
        "cpu_per_subscriber": {"forward": fwd, "forward-aiortc": plain, "relay": relay},
        "ratio_relay_to_forward": round(relay / fwd, 1) if fwd and relay else None,
        "subscribers_per_core_at_largest_n": (
            round(top["subscribers"] / top["server_cpu"], 1) if top and top["server_cpu"] else None
        ),
        "largest_n_all_at_29fps": max(keeping_up, default=None),
    }


if __name__ == "__main__":
    main()
