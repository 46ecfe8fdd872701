"""HL7 v2 ORU^R01 over MLLP: patient monitors and gateways push vitals into a room.

The way in that bedside monitors and their gateways already speak (IHE PCD-01, "Communicate PCD
Data"): an ORU^R01 message per MLLP frame (``<VT> message <FS><CR>``), one ACK back per message.
This module is the transport and the routing: framing, device -> room bindings and the
listener. The message itself is read in oru.py (on the HL7 codec in hl7.py) and answered in
ack.py; the sending side is signaling/cli/hl7_sender.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hl7.mllp

from orbridge.rooms.errors import DomainError
from orbridge.rooms.vitals.model import VitalsBatch
from orbridge.signaling.ingest.ack import build_ack
from orbridge.signaling.ingest.hl7_codec import (
    E_APPLICATION,
    E_UNKNOWN_KEY,
    AckCode,
    Hl7Error,
    _decode,
)
from orbridge.signaling.ingest.oru import ParsedOru, parse_oru
from orbridge.signaling.ingest.peers import (
    DEFAULT_ALLOW,
    Address,
    LogLimiter,
    Network,
    address_allowed,
    parse_networks,
    peer_address,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MLLP_PORT",
    "FrameError",
    "MllpListener",
    "parse_binding",
    "parse_bindings",
    "read_frame",
]

log = logging.getLogger("orbridge.mllp")

Ingest = Callable[[VitalsBatch], Awaitable[Any]]

VT, FS, CR = b"\x0b", b"\x1c", b"\r"  # MLLP: <VT> message <FS><CR>
MLLP_PORT = 2575  # IANA "hl7"
MAX_MESSAGE_BYTES = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# MLLP framing


class FrameError(Exception):
    """The stream broke MLLP in a way that ends the connection (reason in `kind`)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # oversized | timeout | idle | truncated | garbage


async def read_frame(
    reader: asyncio.StreamReader, idle_timeout: float | None, read_timeout: float | None
) -> tuple[bytes, int] | None:
    """The next MLLP frame's content and how many garbage bytes came before it; None when the
    peer closed between frames. The reader's `limit` bounds the frame (LimitOverrunError)."""
    try:
        async with asyncio.timeout(idle_timeout):
            head = await reader.readuntil(VT)
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as exc:
        raise FrameError("garbage") from exc
    except TimeoutError as exc:
        raise FrameError("idle") from exc
    try:
        async with asyncio.timeout(read_timeout):
            # The end is FS; the CR after it is left to be skipped before the next VT, which
            # also tolerates senders that omit it.
            body = await reader.readuntil(FS)
    except asyncio.IncompleteReadError as exc:
        raise FrameError("truncated") from exc
    except asyncio.LimitOverrunError as exc:
        raise FrameError("oversized") from exc
    except TimeoutError as exc:
        raise FrameError("timeout") from exc
    garbage = len(head) - 1 - (1 if head.startswith(CR) else 0)
    body = body[:-1]
    restart = body.rfind(VT)  # a frame begun again without being ended: the last start counts
    if restart >= 0:
        garbage += restart + 1
        body = body[restart + 1 :]
    return body, garbage


# ---------------------------------------------------------------------------------------------
# Server


def parse_binding(text: str) -> tuple[str, str]:
    """``DEVICE=ROOM`` (the CLI's ``--mllp-bind``) as a pair."""
    device, sep, room = text.partition("=")
    if not sep or not device.strip() or not room.strip():
        raise ValueError(f"expected DEVICE=ROOM, got {text!r}")
    return device.strip(), room.strip()


def parse_bindings(items: Sequence[str] | None) -> dict[str, str]:
    return dict(parse_binding(item) for item in items or ())


@dataclass(eq=False, slots=True)
class _Connection:
    """One admitted connection, as the limits see it."""

    task: asyncio.Task[Any]
    address: Address
    last_valid: float  # loop time of the last ORU^R01 (or of the connect): idleness ranks by it
    busy: bool = False  # a message is being ingested or its ACK written: never evicted then


class MllpListener:
    """An MLLP server taking ORU^R01 from monitors and gateways and giving each accepted message
    to `ingest` as a VitalsBatch for the room its device is bound to.

    Every message gets an ACK: AA when ingested; AE (or AR for a message type other than
    ORU^R01 or text that is not HL7) with the reason in MSA-3 and ERR otherwise. A connection is
    closed (nothing else is touched) for a frame above `max_message_bytes`, a frame not ended
    within `read_timeout` seconds of its start, or `idle_timeout` seconds without an ORU^R01
    (answered AA or AE: empty frames, frames answered AR, bytes outside frames and unfinished
    frames do not count, so nothing but real traffic holds a slot). Bytes outside frames are
    skipped.

    Who gets in: a peer outside `allow` (networks) is closed at once, unread. A peer at
    `max_per_peer` connections, or arriving when `max_connections` are open, gets in by
    closing its own connection idle longest (a monitor reconnecting after a network blip
    replaces the socket the server still thinks is open); when all of that peer's connections
    are busy with a message, or it has none and the listener is full, the new one is closed.
    A connection is only ever closed for one from the same address. Those refusals are logged
    at most once per address per minute.

    Waveforms without an ORBRIDGE_SEQ companion are numbered here: per (device, kind), one
    after the last accepted batch, starting at 0 for each listener.
    A resent message (same device, control id and bytes: its ACK was lost) is acknowledged
    again but not ingested twice."""

    def __init__(
        self,
        ingest: Ingest,
        *,
        host: str = "127.0.0.1",
        port: int = MLLP_PORT,
        bindings: Mapping[str, str] | None = None,
        default_room: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        read_timeout: float = 30.0,
        idle_timeout: float | None = 180.0,
        max_connections: int = 64,
        max_per_peer: int = 8,
        allow: Iterable[str | Network] = DEFAULT_ALLOW,
        ingest_timeout: float = 10.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._ingest = ingest
        self.host = host
        self.port = port  # the bound port after start() (useful with port=0)
        # Device ids match case-insensitively: EUI-64s come in either case.
        self.bindings = {k.strip().casefold(): v for k, v in (bindings or {}).items()}
        self.default_room = default_room
        self.max_message_bytes = max_message_bytes
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.allow: list[Network] = parse_networks(allow)
        self.ingest_timeout = ingest_timeout
        self._clock = clock or (lambda: int(time.time() * 1000))
        self._server: asyncio.Server | None = None
        # Every handler task until it has closed its socket (evicted ones too): close() cancels
        # them, and hl7's protocol keeps no reference of its own.
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: dict[asyncio.Task[Any], _Connection] = {}  # what the limits count
        self._quiet = LogLimiter(60.0)  # refusals: one line per (reason, address) a minute
        self._seqs: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._recent: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._closing = False
        # counters for metrics
        self.connections_total = 0
        self.connections_refused = 0  # over a limit with nothing of its own to replace
        self.connections_denied = 0  # outside the allow-list
        self.connections_evicted = 0  # closed for a newer connection from the same address
        self.messages_accepted = 0
        self.messages_rejected = 0  # answered AE or AR
        self.messages_duplicate = 0  # resent, acknowledged, not ingested again
        self.frames_oversized = 0
        self.frames_timed_out = 0  # begun and not ended in time
        self.connections_idle_closed = 0
        self.garbage_bytes = 0

    @property
    def connections_active(self) -> int:
        return len(self._connections)

    def stats(self) -> dict[str, int]:
        names = ("connections_total", "connections_active", "connections_refused",
                 "connections_denied", "connections_evicted", "messages_accepted",
                 "messages_rejected", "messages_duplicate",
                 "frames_oversized", "frames_timed_out", "connections_idle_closed",
                 "garbage_bytes")  # fmt: skip
        return {name: getattr(self, name) for name in names}

    def room_for(self, device_id: str) -> str | None:
        return self.bindings.get(device_id.strip().casefold(), self.default_room)

    async def start(self) -> None:
        self._closing = False
        self._server = await hl7.mllp.start_hl7_server(
            self._serve, self.host, self.port, limit=self.max_message_bytes
        )
        sockets = self._server.sockets or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("MLLP listening on %s:%d (%d device bindings, default room %s; peers from %s)",
                 self.host, self.port, len(self.bindings), self.default_room or "none",
                 ", ".join(map(str, self.allow)))  # fmt: skip
        if not _is_loopback(self.host) and all(n.is_loopback for n in self.allow):
            log.warning("MLLP listens on %s but admits only loopback peers: set mllp_allow to "
                        "the monitors' networks", self.host)  # fmt: skip

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MllpListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: hl7.mllp.HL7StreamReader,
                     writer: hl7.mllp.HL7StreamWriter) -> None:  # fmt: skip
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        address = peer_address(peer)
        if address is None or not address_allowed(address, self.allow):
            self.connections_denied += 1
            self._log_quietly(
                logging.WARNING,
                "denied",
                "unknown address" if address is None else address,
                "not in mllp_allow: closed unread",
            )
            writer.transport.abort()  # nothing read, nothing written
            return
        if self._closing or not self._admit(address):
            self.connections_refused += 1
            writer.transport.close()  # a plain FIN: "come back later", not a reset
            return
        loop = asyncio.get_running_loop()
        conn = _Connection(task, address, loop.time())
        self._tasks.add(task)
        self._connections[task] = conn
        self.connections_total += 1
        try:
            while True:
                try:
                    # One deadline for the connection, moved only by an ORU^R01 below: an empty
                    # frame, noise or a frame trickled in cannot keep the slot.
                    async with asyncio.timeout_at(
                        None if self.idle_timeout is None else conn.last_valid + self.idle_timeout
                    ):
                        frame = await read_frame(reader, None, self.read_timeout)
                except TimeoutError as exc:  # read_frame turns its own timeouts into FrameError
                    raise FrameError("idle") from exc
                if frame is None:
                    break
                body, garbage = frame
                self.garbage_bytes += garbage
                conn.busy = True  # set before the first await: _admit never evicts it now
                ack, valid = await self._handle(body, peer)
                if valid:
                    conn.last_valid = loop.time()
                writer.writeblock(ack)
                async with asyncio.timeout(self.read_timeout):
                    await writer.drain()  # a peer that never reads its ACKs is let go
                conn.busy = False
        except FrameError as exc:
            if exc.kind == "oversized":
                self.frames_oversized += 1
            elif exc.kind == "timeout":
                self.frames_timed_out += 1
            elif exc.kind == "idle":
                self.connections_idle_closed += 1
            why = f"no ORU^R01 in {self.idle_timeout:g} s" if exc.kind == "idle" else exc.kind
            log.info("MLLP %s: closing the connection (%s)", peer, why)
        except (ConnectionError, TimeoutError) as exc:
            log.info("MLLP %s: connection lost (%s)", peer, exc.__class__.__name__)
        except Exception:  # one broken connection must never take the listener down
            log.exception("MLLP %s: unexpected error", peer)
        finally:
            # Evicted (cancelled) or not, the slot is free before this socket has finished closing.
            self._connections.pop(task, None)
            try:
                writer.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
            finally:
                self._tasks.discard(task)

    def _admit(self, address: Address) -> bool:
        """Make room for a new connection from `address` if the limits call for it: close that
        address's connection idle longest. False when there is nothing of its own to close."""
        mine = [c for c in self._connections.values() if c.address == address]
        while len(mine) >= self.max_per_peer or len(self._connections) >= self.max_connections:
            idle = [c for c in mine if not c.busy]
            if not idle:
                why = "all its connections are busy" if mine else "the listener is full"
                counts = (f"{len(mine)} of {self.max_per_peer} from this address, "
                          f"{len(self._connections)} of {self.max_connections} in all")  # fmt: skip
                self._log_quietly(logging.WARNING, "refused", address,
                                  f"new connection closed: {why} ({counts})")  # fmt: skip
                return False
            victim = min(idle, key=lambda c: c.last_valid)  # ties: min keeps the first (oldest)
            mine.remove(victim)
            del self._connections[victim.task]  # its slot is the newcomer's from now on
            victim.task.cancel()  # it is waiting for a frame: the cancel lands there
            self.connections_evicted += 1
            self._log_quietly(logging.INFO, "evicted", address,
                              "closed its connection idle longest for a new one")  # fmt: skip
        return True

    def _log_quietly(self, level: int, reason: str, address: object, text: str) -> None:
        # Keyed by address, not connection: a peer looping on connect costs one line a minute.
        held_back = self._quiet.ready((reason, str(address)))
        if held_back is not None:
            more = f" (and {held_back} more like it in the last minute)" if held_back else ""
            log.log(level, "MLLP %s: %s%s", address, text, more)

    async def _handle(self, body: bytes, peer: Any) -> tuple[bytes, bool]:
        """The ACK for one frame, and whether the frame was an ORU^R01 (answered AA or AE):
        what counts as activity for the idle timeout."""
        received_ms = self._clock()
        text, codec = _decode(body)
        ack_code: AckCode = "AA"
        reason: str | None = None
        hl7_code: int | None = None
        location = ""
        device = "?"
        try:
            parsed = parse_oru(text, received_ms, next_seq=self._next_seq)
            device = parsed.device_id
            room = self.room_for(device)
            if room is None:
                raise Hl7Error(f"device {device} is not bound to a room", hl7_code=E_UNKNOWN_KEY,
                               location="OBX^1^18")  # fmt: skip
            key = (device.casefold(), parsed.control_id, hashlib.sha256(body).digest())
            if key in self._recent:
                self.messages_duplicate += 1
            else:
                batch = VitalsBatch(room, received_ms, parsed.numerics, parsed.waveforms,
                                    via="hl7")  # fmt: skip
                async with asyncio.timeout(self.ingest_timeout):
                    await self._ingest(batch)
                self._remember(key, parsed)
        except Hl7Error as exc:
            ack_code, reason, hl7_code, location = exc.ack, exc.message, exc.hl7_code, exc.location
        except DomainError as exc:
            ack_code, reason, hl7_code = "AE", exc.message, E_APPLICATION
        except TimeoutError:
            ack_code, reason, hl7_code = "AE", "vitals not delivered in time", E_APPLICATION
        except Exception:
            log.exception("MLLP %s: ingest failed", peer)
            ack_code, reason, hl7_code = "AE", "internal error", E_APPLICATION
        if ack_code == "AA":
            self.messages_accepted += 1
        else:
            self.messages_rejected += 1
            log.info("MLLP %s device %s: %s %s", peer, device, ack_code, reason)
        ack = build_ack(text, ack_code, reason, hl7_code=hl7_code, location=location)
        return ack.encode(codec, "replace"), ack_code != "AR"

    def _next_seq(self, device: str, kind: str) -> int:
        return self._seqs.get((device.casefold(), kind), 0)

    def _remember(self, key: tuple[str, str, bytes], parsed: ParsedOru) -> None:
        self._recent[key] = None
        if len(self._recent) > 512:
            self._recent.popitem(last=False)
        for w in parsed.waveforms:
            seq_key = (parsed.device_id.casefold(), w.kind)
            self._seqs[seq_key] = w.seq + 1
            self._seqs.move_to_end(seq_key)
        while len(self._seqs) > 4096:  # bounded even when a default room admits any device
            self._seqs.popitem(last=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: cannot tell, say nothing
