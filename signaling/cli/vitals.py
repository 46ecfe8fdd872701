"""``orbridge vitals``: stream a synthetic patient monitor into a room.

Two ways, as real monitors do:

* Socket.IO (default): a protocol client (docs/protocol.md) with a join token (given, or
  minted here with the server's secret for the role ``device``) joins and sends one
  ``publish_vitals`` per ``--batch-ms`` slice (40 ms: 20 ECG samples at 500 Hz, 5 pleth
  samples), numerics about once a second and NIBP every ``--nibp-interval`` seconds.
* ``--hl7 host:port``: like a monitor gateway, HL7 v2 ORU^R01 messages over MLLP to the
  server's listener: waveforms gathered into ``--hl7-interval`` chunks (250 ms), the numerics
  riding along with the chunk they fall in. The listener maps the device id (``--source``)
  to a room, so no token is needed.

Batches are paced by the wall clock (a batch leaves when its last sample has "happened") and
carry their own sample times, so a slow network shows as latency, not as a stretched ECG.

Output: one JSON summary line on stdout at the end. Exit status: 0 after ``--duration`` or
Ctrl-C/SIGTERM; 1 when the server refuses (join, a batch, an HL7 NAK), removes us, shuts
down or is unreachable; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported when vitals run, not when `orbridge serve` builds its parser
    from orbridge.signaling.cli.patient_sim import SimBatch, SyntheticPatient

__all__ = ["SCENARIO_NAMES", "add_vitals_parser", "batch_payload", "run_vitals"]

SCENARIO_NAMES = ("normal", "desaturation", "bradycardia", "hypotension")  # patient_sim.SCENARIOS

IN_FLIGHT = 4  # publish_vitals awaiting their ack: keeps 25 batches/s flowing up to ~160 ms RTT
MAX_LAG_S = 2.0  # further behind the clock than this (a suspended laptop): resynchronise


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _batch_ms(text: str) -> float:
    value = float(text)
    # The server allows 50 events/s per connection: stay well under it.
    if not 25 <= value <= 1000:
        raise argparse.ArgumentTypeError("between 25 and 1000 ms")
    return value


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: use HOST:PORT, e.g. 127.0.0.1:2575")
    return host.strip("[]"), int(port)


def add_vitals_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``vitals`` subcommand to the ``orbridge`` parser."""
    p = subparsers.add_parser(
        "vitals",
        help="stream a synthetic patient monitor (ECG, pleth, numerics) into a room",
        description="Send a synthetic patient's vitals over Socket.IO, or as HL7 over MLLP.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--synthetic", action="store_true", help="a modelled patient (ECG II, pleth, numerics)"
    )
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server URL (Socket.IO)")
    p.add_argument("--token", help="join token with publish_vitals (else one is minted)")
    p.add_argument("--room", help="room to join (required without --token)")
    p.add_argument("--secret", help="server secret to mint a device token (prefer ORBRIDGE_SECRET)")
    p.add_argument(
        "--secret-file",
        dest="secret_file",
        metavar="PATH",
        help="read the server secret from this file, mode 0600 (or ORBRIDGE_SECRET_FILE)",
    )
    p.add_argument("--identity", help="participant identity when minting (default: generated)")
    p.add_argument("--name", default="Synthetic monitor", help="display name when minting")
    p.add_argument(
        "--source",
        help="device id the vitals carry (default: the identity; HL7: synthetic-monitor)",
    )
    p.add_argument("--scenario", choices=SCENARIO_NAMES, default="normal", help="default normal")
    p.add_argument(
        "--once", action="store_true", help="play the scenario's event once (default: repeat)"
    )
    p.add_argument(
        "--rate", type=int, choices=[125, 250, 500, 1000], default=500,
        help="ECG sample rate in Hz (default 500; pleth is 125 Hz)",
    )  # fmt: skip
    p.add_argument("--batch-ms", dest="batch_ms", type=_batch_ms, default=40.0,
                   help="ms of signal per Socket.IO batch (default 40)")  # fmt: skip
    p.add_argument("--nibp-interval", dest="nibp_interval", type=_positive, default=30.0,
                   help="seconds between NIBP readings (default 30)")  # fmt: skip
    p.add_argument("--mains", type=int, choices=[50, 60], default=50,
                   help="mains hum frequency (default 50 Hz)")  # fmt: skip
    p.add_argument("--seed", type=int, help="random seed (same seed: same patient)")
    p.add_argument("--duration", type=_non_negative, default=0.0,
                   help="seconds to stream (default 0: until Ctrl-C or SIGTERM)")  # fmt: skip
    p.add_argument("--hl7", type=_host_port, metavar="HOST:PORT",
                   help="send HL7 v2 ORU^R01 over MLLP to this listener instead")  # fmt: skip
    p.add_argument("--hl7-interval", dest="hl7_interval", type=_batch_ms, default=250.0,
                   help="ms of waveform per ORU message (default 250)")  # fmt: skip
    p.add_argument("--hl7-style", dest="hl7_style", choices=["mdc", "loinc"], default="mdc",
                   help="OBX-3 coding of numerics: IEEE 11073 MDC (default) or LOINC")  # fmt: skip
    return p


def _fail(message: str) -> None:
    print(f"orbridge vitals: {message}", file=sys.stderr, flush=True)


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, separators=(",", ":")), flush=True)


def _token(args: argparse.Namespace) -> str | None:
    from orbridge.rooms.roles import Role
    from orbridge.rooms.tokens import cli_token
    from orbridge.signaling.settings import SettingsError, client_secret

    try:
        secret = None if args.token else client_secret(args.secret, args.secret_file)
        return cli_token(args.token, secret, args.room, Role.DEVICE, args.name, args.identity)
    except (ValueError, SettingsError) as exc:
        _fail(str(exc))
        return None


def batch_payload(batch: SimBatch, source: str) -> dict[str, Any]:
    """A `publish_vitals` payload (docs/protocol.md) for one simulator batch."""
    return {
        "source": source,
        "numerics": [{"kind": n.kind, "value": n.value, "time_ms": n.time_ms}
                     for n in batch.numerics],
        "waveforms": [{"kind": w.kind, "start_ms": w.start_ms, "rate_hz": w.rate_hz,
                       "seq": w.seq, "samples": list(w.samples)} for w in batch.waveforms],
    }  # fmt: skip


class _Stats:
    def __init__(self) -> None:
        self.batches = 0  # sent
        self.acked = 0
        self.numerics = 0
        self.samples: dict[str, int] = {}
        self.last: dict[str, float] = {}
        self.alarms: list[dict[str, Any]] = []

    def count(self, batch: SimBatch) -> None:
        self.batches += 1
        self.numerics += len(batch.numerics)
        for w in batch.waveforms:
            self.samples[w.kind] = self.samples.get(w.kind, 0) + len(w.samples)
        for n in batch.numerics:
            self.last[n.kind] = n.value


async def _paced(patient: SyntheticPatient, batch_ms: float, duration: float,
                 send: Callable[[SimBatch], Awaitable[None]],
                 done: asyncio.Future[tuple[int, str]]) -> None:  # fmt: skip
    """Generate batches in step with the wall clock and hand each to `send` when it is due."""
    loop = asyncio.get_running_loop()
    batches = patient.batches(batch_ms)
    t0 = loop.time()
    while not done.done():
        batch = next(batches)
        delay = t0 + batch.t_s - loop.time()
        if delay > 0:
            await asyncio.wait([done], timeout=delay)
            if done.done():
                return
        elif delay < -MAX_LAG_S:
            t0 = loop.time() - batch.t_s  # do not burst seconds of backlog at the server
        await send(batch)
        if duration and batch.t_s >= duration - 1e-9:
            if not done.done():
                done.set_result((0, "duration reached"))
            return


async def _run_socketio(args: argparse.Namespace, patient: SyntheticPatient, stats: _Stats,
                        done: asyncio.Future[tuple[int, str]],
                        session: dict[str, Any]) -> None:  # fmt: skip
    from orbridge.signaling.cli.client import ProtocolError, RoomClient

    def finish(code: int, reason: str) -> None:
        if not done.done():
            done.set_result((code, reason))

    token = _token(args)
    if token is None:
        finish(2, "no token")
        return
    client = RoomClient(args.url, token)
    session["client"] = client

    async def on_removed(data: Any = None) -> None:
        data = data if isinstance(data, dict) else {}
        finish(1, f"removed from the room ({data.get('reason', 'removed')})")

    async def on_shutdown(data: Any = None) -> None:
        finish(1, "the server is shutting down (server_shutdown)")

    async def on_alarm(data: Any = None) -> None:  # only a device with subscribe_vitals hears it
        if isinstance(data, dict):
            stats.alarms.append(data)

    client.on("removed", on_removed)
    client.on("server_shutdown", on_shutdown)
    client.on("alarm_raised", on_alarm)
    try:
        await client.connect(room=args.room)
        snapshot = await client.join(attributes={"client": "orbridge-vitals"})
    except ProtocolError as exc:
        finish(1, f"cannot join: {exc}")
        return
    except (TimeoutError, OSError) as exc:
        finish(1, f"cannot reach {args.url}: {exc}")
        return
    session["room"], session["identity"] = snapshot["room"], snapshot["self"]["identity"]
    source = args.source or session["identity"]
    patient.source = source[:64]

    async def watch_disconnect() -> None:
        await client.disconnected.wait()
        finish(1, "disconnected from the server")

    session["tasks"].append(asyncio.ensure_future(watch_disconnect()))
    window = asyncio.Semaphore(IN_FLIGHT)
    pending: set[asyncio.Task[None]] = set()

    async def publish(payload: dict[str, Any]) -> None:
        try:
            await client.request("publish_vitals", payload)
            stats.acked += 1
        except ProtocolError as exc:
            finish(1, f"the server refused vitals: {exc}")
        except TimeoutError:
            finish(1, "no acknowledgement from the server")
        finally:
            window.release()

    async def send(batch: SimBatch) -> None:
        await window.acquire()
        stats.count(batch)
        task = asyncio.ensure_future(publish(batch_payload(batch, source)))
        pending.add(task)
        task.add_done_callback(pending.discard)

    await _paced(patient, args.batch_ms, args.duration, send, done)
    if pending:  # the last acks, so the summary counts what the server took
        await asyncio.wait(pending, timeout=client.request_timeout)


async def _run_hl7(args: argparse.Namespace, patient: SyntheticPatient, stats: _Stats,
                   done: asyncio.Future[tuple[int, str]],
                   session: dict[str, Any]) -> None:  # fmt: skip
    from orbridge.signaling.cli.hl7_sender import MllpClient, build_oru
    from orbridge.signaling.ingest.ack import ack_fields

    def finish(code: int, reason: str) -> None:
        if not done.done():
            done.set_result((code, reason))

    host, port = args.hl7
    device = (args.source or "synthetic-monitor")[:64]
    patient.source = device
    prefix = os.urandom(3).hex()  # MSH-10 unique across runs: the listener drops resent ids
    session["room"] = args.room
    # One connection kept open, as a monitor does; reconnected once if the listener dropped it.
    client = MllpClient(host, port, timeout=10.0)

    async def deliver(message: str) -> str:
        try:
            return await client.send(message)
        except (ConnectionError, OSError):
            await client.close()
            return await client.send(message)

    async def send(batch: SimBatch) -> None:
        """One ORU^R01 per batch: its waveform chunks and the numerics that fell in it."""
        message = build_oru(device, batch.numerics, batch.waveforms,
                            f"{prefix}{stats.batches:010d}", args.hl7_style)  # fmt: skip
        stats.count(batch)
        try:
            ack = await deliver(message)
        except (OSError, TimeoutError) as exc:
            finish(1, f"cannot deliver HL7 to {host}:{port}: {exc or type(exc).__name__}")
            return
        fields = ack_fields(ack)
        if fields["code"] not in ("AA", "CA"):
            why = fields["text"] or fields["error_code"] or "no MSA"
            finish(1, f"the listener refused the ORU ({fields['code'] or '?'}): {why}")
            return
        stats.acked += 1

    try:
        await _paced(patient, args.hl7_interval, args.duration, send, done)
    finally:
        await client.close()


async def run_vitals(args: argparse.Namespace) -> int:
    """Run ``orbridge vitals`` with parsed arguments; returns the exit status."""
    if args.hl7 is None and not args.token and not args.room:
        _fail("give --room (with ORBRIDGE_SECRET or --secret-file) or --token, or --hl7 HOST:PORT")
        return 2
    from orbridge.signaling.cli.patient_sim import SyntheticPatient

    try:
        patient = SyntheticPatient(
            args.rate, args.scenario, args.seed, mains_hz=args.mains,
            nibp_interval_s=args.nibp_interval, repeat=not args.once,
        )  # fmt: skip
    except ValueError as exc:
        _fail(str(exc))
        return 2
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, str]] = loop.create_future()
    stats = _Stats()
    session: dict[str, Any] = {"room": None, "identity": None, "client": None, "tasks": []}
    signals: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, lambda: done.done() or done.set_result((0, "interrupted")))
            signals.append(sig)
    runner = _run_hl7 if args.hl7 is not None else _run_socketio
    started = time.monotonic()
    work = asyncio.ensure_future(runner(args, patient, stats, done, session))
    try:
        await asyncio.wait([work, done], return_when=asyncio.FIRST_COMPLETED)
        if work.done() and work.exception() is not None and not done.done():
            done.set_result((1, f"internal error: {work.exception()!r}"))
        if not done.done():
            done.set_result((1, "stopped"))
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(work, timeout=15)  # drains the last acks
        code, reason = done.result()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if not work.done():
            work.cancel()
        for task in session["tasks"]:
            task.cancel()
        if session["client"] is not None:
            await session["client"].close()
    if code == 2:
        return 2
    if code != 0:
        _fail(reason)
    _emit(
        {
            "event": "summary",
            "mode": "hl7" if args.hl7 is not None else "socketio",
            "room": session["room"],
            "identity": session["identity"],
            "source": patient.source,
            "scenario": args.scenario,
            "exit": code,
            "reason": reason,
            "seconds": round(time.monotonic() - started, 3),
            "simulated_s": round(patient.t_s, 3),
            "batches": stats.batches,
            "acked": stats.acked,
            "numerics": stats.numerics,
            "samples": stats.samples,
            "last": stats.last,
            "alarms": len(stats.alarms),
        }
    )
    return code
