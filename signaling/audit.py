"""The audit trail: an append-only, hash-chained JSON-lines file, ``<data_dir>/audit.jsonl``.

Who joined (and who was refused), who removed and banned whom, which recordings were started,
stopped, edited, opened and exported, whose token was refreshed: one line per event, kept
apart from the server's log (docs/security.md, "Audit trail").

An entry is one line of compact, ASCII-only JSON whose members come in this order::

    {"seq":N,"ts":"2026-11-18T11:06:40.123Z","node":"...","event":"...",<fields>,
     "prev":"<64 hex>","hash":"<64 hex>"}

* ``seq`` counts the entries of the file from 1; ``ts`` is when the event happened (UTC, ms);
  ``node`` is the writer (the server's ``node_id``, ``cli@<host>`` for the command line).
* ``hash`` is the SHA-256 (hex) of the entry's own line without the hash member: the bytes
  from the opening ``{`` up to, not including, ``,"hash":"``, followed by ``}``. That is the
  entry exactly as ``json.dumps(..., separators=(",", ":"), ensure_ascii=True)`` writes it
  without ``hash``; the check works on the bytes, so no re-serialization can disagree.
* ``prev`` is the previous entry's ``hash`` (64 zeros for the first entry).

Writers (the server's thread, ``orbridge recordings export``) append under an exclusive
``flock`` of the file, which is opened ``O_APPEND``: each reads the last entry (seq, hash),
then appends, so several processes keep one chain. A write a crash cut short leaves a torn
last line; the next writer starts a new segment of the chain with a ``chain_resumed`` entry
whose ``prev`` is the last good entry's hash and whose ``skipped`` member names the unreadable
bytes (lines, length, SHA-256) it steps over. :func:`verify` accepts exactly that.

The server never waits for the disk: :meth:`AuditLog.append` puts the entry in a bounded queue
and one thread writes batches, ``fsync`` at most every second. When the disk fails the server
keeps serving: one error per cause in the log, the lost entries counted, and a ``gap`` entry
with the count as soon as writing works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orbridge.recording.files import make_private_dir, private_opener
from orbridge.signaling.ingest.peers import Address, Network, address_allowed, parse_networks

log = logging.getLogger("orbridge.audit")

__all__ = [
    "FILE_NAME",
    "GENESIS",
    "AuditFile",
    "AuditLog",
    "BadEntry",
    "Verification",
    "client_address",
    "parse_line",
    "seal",
    "tail_lines",
    "verify",
]

FILE_NAME = "audit.jsonl"
GENESIS = "0" * 64
RESERVED = frozenset({"seq", "ts", "node", "event", "prev", "hash"})
DEFAULT_QUEUE = 4096
"""Entries waiting for the writer: minutes of a busy node. The bound caps memory when the disk
hangs; what does not fit is counted and reported in a ``gap`` entry."""

_HASH_KEY = b',"hash":"'
_SUFFIX = len(_HASH_KEY) + 64 + 2  # ,"hash":"<64 hex>"}
_HEX = frozenset(b"0123456789abcdef")
_CHUNK = 8 * 1024
_MAX_SCAN = 1024 * 1024  # unreadable bytes a writer steps over at the end of the file
_MAX_STRING = 2000  # longer field strings are cut (a hostile display name cannot bloat it)
_STOP = object()


def utc_ts(seconds: float | None = None) -> str:
    """``2026-11-18T11:06:40.123Z``"""
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
                      default=str)  # fmt: skip


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= _MAX_STRING else value[:_MAX_STRING] + "..."
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return value


def seal(seq: int, ts: str, node: str, event: str, fields: str, prev: str) -> tuple[bytes, str]:
    """One entry's line (with its newline) and its hash. ``fields`` is the JSON object of the
    event's own members (``"{}"`` for none), serialized as :func:`_dumps` does."""
    head = f'{{"seq":{seq},"ts":{_dumps(ts)},"node":{_dumps(node)},"event":{_dumps(event)}'
    inner = fields[1:-1]
    body = f'{head}{"," + inner if inner else ""},"prev":"{prev}"}}'.encode("ascii")
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + _HASH_KEY + digest.encode("ascii") + b'"}\n', digest


class BadEntry(ValueError):
    """A line that is not a sound entry; ``seq`` when it could still be read."""

    def __init__(self, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.seq = seq


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the member {key!r} appears twice")
        result[key] = value
    return result


def _seq_of(body: bytes) -> int | None:
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        data = json.loads(body)
        if isinstance(data, dict) and type(data.get("seq")) is int:
            return int(data["seq"])
    return None


def parse_line(raw: bytes) -> tuple[dict[str, Any], str]:
    """The entry of one line (its newline optional) and its hash; BadEntry says what is wrong
    (the hash is checked over the bytes, before anything else is believed)."""
    line = raw[:-1] if raw.endswith(b"\n") else raw
    digest = line[-66:-2]
    if (
        len(line) < _SUFFIX + 2
        or not line.startswith(b"{")
        or not line.endswith(b'"}')
        or line[-_SUFFIX : -_SUFFIX + len(_HASH_KEY)] != _HASH_KEY
        or not set(digest) <= _HEX
    ):
        raise BadEntry("not an audit entry (no hash member at its end)")
    body = line[:-_SUFFIX] + b"}"
    if hashlib.sha256(body).hexdigest() != digest.decode("ascii"):
        raise BadEntry("its hash does not match its content: the entry was changed",
                       _seq_of(body))  # fmt: skip
    try:
        entry = json.loads(body, object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadEntry(f"not an audit entry ({exc})") from None
    if not isinstance(entry, dict):
        raise BadEntry("not an audit entry (not a JSON object)")
    seq = entry.get("seq")
    if type(seq) is not int or seq < 1:
        raise BadEntry("not an audit entry (no seq)")
    for name in ("ts", "node", "event", "prev"):
        if not isinstance(entry.get(name), str):
            raise BadEntry(f"not an audit entry (no {name})", seq)
    prev = entry["prev"]
    if len(prev) != 64 or not set(prev.encode()) <= _HEX:
        raise BadEntry("not an audit entry (prev is not a SHA-256)", seq)
    if "hash" in entry:
        raise BadEntry("not an audit entry (a second hash member)", seq)
    return entry, digest.decode("ascii")


# -- the file: locked appends --------------------------------------------------------------


@dataclass
class Tail:
    """Where the chain stands at the end of the file."""

    seq: int = 0
    hash: str = GENESIS
    terminate: bool = False  # the last entry lacks its newline (the writer adds it)
    skipped: dict[str, Any] | None = None  # unreadable bytes after the last entry
    newline: bool = False  # the skipped bytes lack a final newline (the writer adds it)


def _read_at(fd: int, offset: int, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _split_lines(buf: bytes) -> list[bytes]:
    """Lines split at ``\\n`` only (as a binary file iterates), each with its newline."""
    lines = [line + b"\n" for line in buf.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _skipped(region: bytes, reason: str) -> tuple[dict[str, Any], bool]:
    newline = not region.endswith(b"\n")
    on_disk = region + (b"\n" if newline else b"")
    return {
        "reason": reason,
        "lines": on_disk.count(b"\n"),
        "bytes": len(on_disk),
        "sha256": hashlib.sha256(on_disk).hexdigest(),
    }, newline


def read_tail(fd: int) -> Tail:
    """The last sound entry of the file open at ``fd``, and what lies after it."""
    size = os.fstat(fd).st_size
    if size == 0:
        return Tail()
    window = _CHUNK
    while True:
        start = max(0, size - window)
        buf = _read_at(fd, start, size - start)
        if start > 0:
            cut = buf.find(b"\n")
            buf = buf[cut + 1 :] if cut >= 0 else b""
        pieces = _split_lines(buf)
        end = len(buf)
        for piece in reversed(pieces):
            end -= len(piece)
            try:
                entry, digest = parse_line(piece)
            except BadEntry:
                continue
            region = buf[end + len(piece) :]
            tail = Tail(seq=entry["seq"], hash=digest, terminate=not piece.endswith(b"\n"))
            if region:
                reason = "torn" if not region.endswith(b"\n") else "unreadable"
                tail.skipped, tail.newline = _skipped(region, reason)
            return tail
        if start == 0:  # no sound entry at all: the whole (small) file is stepped over
            skipped, newline = _skipped(buf, "unreadable")
            return Tail(skipped=skipped, newline=newline)
        if window >= _MAX_SCAN:  # cannot find the chain's end: a new chain, said so
            return Tail(skipped={"reason": "no entry in the last bytes", "lines": None,
                                 "bytes": None, "sha256": None},
                        newline=_read_at(fd, size - 1, 1) != b"\n")  # fmt: skip
        window *= 4


@dataclass(frozen=True)
class Record:
    event: str
    ts: str
    fields: str  # a JSON object


class WriteFailed(OSError):
    """An append that failed, with how much of it reached the file."""

    def __init__(self, cause: OSError, records_written: int, gap_written: bool) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.cause = cause
        self.records_written = records_written
        self.gap_written = gap_written


class AuditFile:
    """Appends entries to one audit file under an exclusive ``flock``: any number of threads
    and processes may append to the same file, each continuing the chain where it stands."""

    def __init__(self, path: str | Path, node: str) -> None:
        self.path = Path(path)
        self.node = node
        self.head: tuple[int, str] | None = None  # (seq, hash) of the last entry written
        self.resumed = 0  # chain_resumed entries this writer wrote
        self._fd: int | None = None
        self._dirty = False

    def _open(self) -> int:
        fd = self._fd
        if fd is not None:
            try:
                here, there = os.fstat(fd), os.stat(self.path)
                if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                    return fd
            except OSError:
                pass
            self.close()  # moved away or deleted: a new file (and chain) at the path
        make_private_dir(self.path.parent)
        self._fd = private_opener(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC)
        return self._fd

    def append(self, records: Sequence[Record], gap: dict[str, Any] | None = None) -> int:
        """Write ``records`` (after a ``gap`` entry if given); the new last seq. WriteFailed
        (an OSError) when the file cannot be written, saying what got through."""
        try:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise WriteFailed(exc, 0, False) from exc
        try:
            return self._append_locked(fd, records, gap)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _append_locked(self, fd: int, records: Sequence[Record],
                       gap: dict[str, Any] | None) -> int:  # fmt: skip
        try:
            tail = read_tail(fd)
        except OSError as exc:
            raise WriteFailed(exc, 0, False) from exc
        data = bytearray(b"\n" if tail.terminate or tail.newline else b"")
        seq, prev = tail.seq, tail.hash
        ends: list[tuple[int, str]] = []  # (end offset in data, what)
        now = utc_ts()
        lead: list[tuple[Record, str]] = []
        if tail.skipped is not None:
            fields = {"after_seq": tail.seq, "skipped": tail.skipped}
            lead.append((Record("chain_resumed", now, _dumps(fields)), "resume"))
        if gap is not None:
            lead.append((Record("gap", now, _dumps(gap)), "gap"))
        for record, what in [*lead, *((r, "record") for r in records)]:
            line, prev = seal(seq + 1, record.ts, self.node, record.event, record.fields, prev)
            seq += 1
            data += line
            ends.append((len(data), what))
        done = 0
        try:
            while done < len(data):
                done += self._write(fd, data[done:])
        except OSError as exc:
            written = [what for end, what in ends if end <= done]
            raise WriteFailed(exc, written.count("record"), "gap" in written) from exc
        finally:
            if done:
                self._dirty = True
        if tail.skipped is not None:
            self.resumed += 1
            log.warning("audit trail %s: %s bytes after entry %d are not entries (%s): the "
                        "chain resumes after them", self.path, tail.skipped["bytes"], tail.seq,
                        tail.skipped["reason"])  # fmt: skip
        self.head = (seq, prev)
        return seq

    @staticmethod
    def _write(fd: int, data: bytes | bytearray) -> int:
        return os.write(fd, data)  # (a test replaces it with a failing disk)

    @property
    def dirty(self) -> bool:
        """Written since the last fsync."""
        return self._dirty

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            self._dirty = False
            os.fsync(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                if self._dirty:
                    os.fsync(fd)
            self._dirty = False
            os.close(fd)


def check_fields(fields: dict[str, Any]) -> None:
    clash = RESERVED & fields.keys()
    if clash:
        raise ValueError(f"audit fields may not be named {sorted(clash)}")


def fields_json(fields: dict[str, Any]) -> str:
    """The event's own members as a JSON object. ValueError for a reserved name, or for a
    value JSON cannot hold (NaN); anything else unknown is written as its str()."""
    check_fields(fields)
    return _dumps(_clean(fields))


def append_now(path: str | Path, node: str, event: str, /, **fields: Any) -> int:
    """Append one entry now, from a process without an :class:`AuditLog` (the command line);
    its seq. OSError when it cannot be written."""
    writer = AuditFile(path, node)
    try:
        seq = writer.append([Record(event, utc_ts(), fields_json(fields))])
        writer.sync()
        return seq
    finally:
        writer.close()


# -- the server's writer: a queue and a thread ---------------------------------------------


@dataclass
class Lost:
    """Entries that did not reach the file, by cause, and when they happened."""

    count: int = 0
    causes: dict[str, int] = field(default_factory=dict)
    first_ts: str | None = None
    last_ts: str | None = None

    def add(self, cause: str, count: int, first_ts: str | None, last_ts: str | None) -> None:
        if count <= 0:
            return
        self.count += count
        self.causes[cause] = self.causes.get(cause, 0) + count
        if first_ts is not None and (self.first_ts is None or first_ts < self.first_ts):
            self.first_ts = first_ts
        if last_ts is not None and (self.last_ts is None or last_ts > self.last_ts):
            self.last_ts = last_ts

    def merge(self, other: Lost) -> None:
        for cause, count in other.causes.items():
            self.add(cause, count, other.first_ts, other.last_ts)

    def entry(self) -> dict[str, Any]:
        return {"dropped": self.count, "causes": dict(sorted(self.causes.items())),
                "first_ts": self.first_ts, "last_ts": self.last_ts}  # fmt: skip


@dataclass
class AuditStats:
    written: int = 0
    dropped: int = 0  # entries lost (each is reported in a gap entry once writing works)
    gaps: int = 0  # gap entries written
    failing: int = 0  # 1 while the file cannot be written

    def snapshot(self) -> dict[str, int]:
        return {"written": self.written, "dropped": self.dropped, "gaps": self.gaps,
                "failing": self.failing}  # fmt: skip


def _cause(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return type(exc).__name__


class AuditLog:
    """The server's audit trail. :meth:`append` never blocks and never fails the caller (but a
    reserved field name, a bug, is a ValueError).

    ``path`` None: a trail that records nothing (a namespace built without one)."""

    def __init__(
        self,
        path: str | Path | None,
        node: str,
        *,
        trusted_proxies: Iterable[str | Network] = (),
        queue_size: int = DEFAULT_QUEUE,
        fsync_interval: float = 1.0,
        retry_interval: float = 2.0,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.node = node
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.stats = AuditStats()
        self.file = AuditFile(self.path, node) if self.path is not None else None
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._fsync_interval = fsync_interval
        self._retry_interval = retry_interval
        self._lock = threading.Lock()
        self._lost = Lost()
        self._logged: set[str] = set()
        self._closing = False
        self._thread: threading.Thread | None = None

    @classmethod
    def disabled(cls) -> AuditLog:
        return cls(None, "")

    @property
    def enabled(self) -> bool:
        return self.file is not None

    def client_address(self, request: Any) -> str | None:
        """The audited address of an aiohttp request (see :func:`client_address`)."""
        if request is None:
            return None
        return client_address(request.remote, request.headers.getall("X-Forwarded-For", []),
                              self.trusted_proxies)  # fmt: skip

    # -- the event loop's side ------------------------------------------------------------

    def start(self) -> None:
        if self.file is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"audit:{self.path}", daemon=True)
        self._thread.start()

    def append(self, event: str, /, **fields: Any) -> None:
        """Queue one entry (``ts`` is now). Reserved field names are a bug: ValueError."""
        if self.file is None:
            return
        check_fields(fields)  # a bug: fails its test rather than being counted
        ts = utc_ts()
        try:
            text = fields_json(fields)
        except (TypeError, ValueError):
            self._lose("unserializable", 1, ts, ts)
            return
        if self._closing:  # after the node's last entry: nowhere to note it but the log
            self.stats.dropped += 1
            log.warning("audit trail %s is closed: %s not recorded", self.path, event)
            return
        try:
            self._queue.put_nowait(Record(event, ts, text))
        except queue.Full:
            self._lose("queue_full", 1, ts, ts)

    async def flush(self, grace: float = 10.0) -> bool:
        """Wait until every entry appended so far was written (or given up on)."""
        return await asyncio.to_thread(self.flush_sync, grace)

    def flush_sync(self, timeout: float = 10.0) -> bool:
        if self._thread is None:
            return False
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    async def close(self, grace: float = 5.0) -> None:
        await asyncio.to_thread(self.close_sync, grace)

    def close_sync(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            self._closing = True
            return
        if not self._closing:
            self._closing = True
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("audit trail %s: the writer did not finish within %.0f s (a hung disk?)",
                      self.path, timeout)  # fmt: skip

    # -- bookkeeping (both sides) -----------------------------------------------------------

    def _lose(self, cause: str, count: int, first_ts: str | None, last_ts: str | None) -> None:
        with self._lock:
            self._lost.add(cause, count, first_ts, last_ts)
            self.stats.dropped += count
            first = cause not in self._logged
            self._logged.add(cause)
        if first:
            log.error("audit trail %s: entries are being lost (%s); they are counted and a gap "
                      "entry will say how many once writing works again; the server keeps "
                      "serving", self.path, cause)  # fmt: skip

    def _take_lost(self) -> Lost | None:
        with self._lock:
            if self._lost.count == 0:
                return None
            lost, self._lost = self._lost, Lost()
            return lost

    def _give_back(self, lost: Lost) -> None:
        with self._lock:
            lost.merge(self._lost)
            self._lost = lost

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        assert self.file is not None
        last_sync = time.monotonic()
        last_try = 0.0
        stop = False
        while not stop:
            now = time.monotonic()
            waits = []
            if self.file.dirty:
                waits.append(last_sync + self._fsync_interval - now)
            if self._lost.count:
                waits.append(last_try + self._retry_interval - now)
            timeout = max(0.01, min(waits)) if waits else None
            try:
                batch = [self._queue.get(timeout=timeout)]
            except queue.Empty:
                batch = []
            with contextlib.suppress(queue.Empty):
                while len(batch) < 512:
                    batch.append(self._queue.get_nowait())
            stop = _STOP in batch
            records = [item for item in batch if isinstance(item, Record)]
            now = time.monotonic()
            if records or (self._lost.count and now - last_try >= self._retry_interval):
                last_try = now
                self._write(records)
            if self.file.dirty and (stop or time.monotonic() - last_sync >= self._fsync_interval):
                last_sync = time.monotonic()
                try:
                    self.file.sync()
                except OSError as exc:
                    self._lose(_cause(exc), 0, None, None)
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
        self.file.close()
        if self.file.head is not None:
            seq, digest = self.file.head
            log.info("audit trail %s closed at seq %d, hash %s", self.path, seq, digest)

    def _write(self, records: list[Record]) -> None:
        assert self.file is not None
        lost = self._take_lost()
        first_write = self.file.head is None
        try:
            self.file.append(records, lost.entry() if lost is not None else None)
        except WriteFailed as exc:
            if lost is not None and not exc.gap_written:
                self._give_back(lost)
            elif lost is not None:
                self.stats.gaps += 1
            self.stats.written += exc.records_written
            self.stats.failing = 1
            missed = records[exc.records_written :]
            if missed:
                self._lose(_cause(exc.cause), len(missed), missed[0].ts, missed[-1].ts)
            else:
                self._lose(_cause(exc.cause), 0, None, None)
            return
        except Exception as exc:  # a bug must not stop the trail: counted like a disk error
            log.exception("audit trail %s: writing failed", self.path)
            if lost is not None:
                self._give_back(lost)
            if records:
                self._lose(type(exc).__name__, len(records), records[0].ts, records[-1].ts)
            return
        self.stats.written += len(records)
        self.stats.failing = 0
        if lost is not None:
            self.stats.gaps += 1
            with self._lock:
                self._logged.clear()
            log.warning("audit trail %s: writing again; %d entries were lost (%s), recorded "
                        "in a gap entry", self.path, lost.count,
                        ", ".join(f"{c}: {n}" for c, n in sorted(lost.causes.items())))  # fmt: skip
        if first_write and self.file.head is not None:
            seq, digest = self.file.head
            log.info("audit trail %s: writing from seq %d, hash %s", self.path, seq, digest)


# -- who is on the other end ---------------------------------------------------------------


def _ip(text: str | None) -> Address | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded_for: Iterable[str],
                   trusted: Sequence[Network]) -> str | None:  # fmt: skip
    """The address an audit entry names: the socket peer, unless the peer is a trusted proxy;
    then the right-most ``X-Forwarded-For`` address that is not a trusted proxy (every proxy
    appends the address it received from). A hop that is not an address stops the walk at the
    proxy that wrote it. Without trusted proxies the header is never read."""
    address = _ip(peer)
    if address is None:
        return peer or None  # a Unix socket's path, or nothing known
    if not trusted or not address_allowed(address, trusted):
        return str(address)
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    current = address
    for hop in reversed(hops):
        forwarded = _ip(hop)
        if forwarded is None:
            return str(current)
        current = forwarded
        if not address_allowed(forwarded, trusted):
            return str(forwarded)
    return str(current)


# -- checking and reading -------------------------------------------------------------------


@dataclass
class Verification:
    ok: bool
    entries: int
    last_hash: str
    line: int | None = None
    seq: int | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.entries} entries, last hash {self.last_hash}"
        seq = self.seq if self.seq is not None else "?"
        return f"broken at line {self.line} (seq {seq}): {self.reason}"


def _covers(skipped: Any, region: bytes) -> bool:
    return (
        isinstance(skipped, dict)
        and skipped.get("bytes") == len(region)
        and skipped.get("sha256") == hashlib.sha256(region).hexdigest()
    )


def _lines(path: str | Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from handle


def verify(path: str | Path) -> Verification:
    """Check the whole chain; the first broken entry, or the count and the last hash.
    FileNotFoundError when there is no file."""
    prev, seq, entries = GENESIS, 0, 0
    pending: list[tuple[int, bytes, BadEntry]] = []
    notes: list[str] = []

    def broken(line: int, at: int | None, reason: str) -> Verification:
        return Verification(False, entries, prev, line, at, reason, notes)

    for number, raw in enumerate(_lines(path), 1):
        try:
            entry, digest = parse_line(raw)
        except BadEntry as exc:
            pending.append((number, raw, exc))
            continue
        resumed = entry["event"] == "chain_resumed" and "skipped" in entry
        if pending:
            first, _, problem = pending[0]
            if not resumed or not _covers(entry["skipped"], b"".join(r for _, r, _ in pending)):
                return broken(first, problem.seq, str(problem))
            where = f"line {first}" if first == number - 1 else f"lines {first}-{number - 1}"
            notes.append(f"{where}: not entries (an interrupted write); the chain resumes after "
                         f"them at line {number}")  # fmt: skip
            pending = []
        elif resumed:
            return broken(number, entry["seq"], "chain_resumed names skipped lines that are "
                          "not there")  # fmt: skip
        if entry["seq"] != seq + 1:
            if entry["seq"] > seq + 1:
                missing = entry["seq"] - seq - 1
                what = f"{missing} entr{'y' if missing == 1 else 'ies'} missing or moved"
                where = f"follows seq {seq}" if seq else "is the first entry"
                return broken(number, entry["seq"], f"seq {entry['seq']} {where}: {what}")
            return broken(number, entry["seq"], f"seq {entry['seq']} after seq {seq}: an entry "
                          "repeated or out of order")  # fmt: skip
        if entry["prev"] != prev:
            return broken(number, entry["seq"], "prev is not the hash of the entry before it: "
                          "that entry was replaced")  # fmt: skip
        prev, seq, entries = digest, entry["seq"], entries + 1
    if pending:
        first, raw, problem = pending[0]
        if len(pending) > 1 or raw.endswith(b"\n"):
            return broken(first, problem.seq, str(problem))
        notes.append(f"line {first}: a torn last line (an interrupted write); the next writer "
                     "resumes the chain after it")  # fmt: skip
    return Verification(True, entries, prev, notes=notes)


def tail_lines(path: str | Path, count: int) -> list[bytes]:
    """The last ``count`` lines of the file (read from its end)."""
    if count <= 0:
        return []
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        window = _CHUNK
        while True:
            start = max(0, size - window)
            handle.seek(start)
            buf = handle.read(size - start)
            lines = _split_lines(buf)
            if start > 0:
                lines = lines[1:]  # the first may be partial
            if len(lines) >= count or start == 0:
                return lines[-count:]
            window *= 4
