"""Human-readable logs by default; JSON lines with --log-format json."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ClientNoise(logging.Filter):
    """Errors a library logs about what a client sent (malformed Engine.IO/Socket.IO frames):
    one line each, no traceback, and each kind at most once per `interval` seconds with a count
    of those held back. A hostile client must not be able to fill the disk with tracebacks."""

    def __init__(self, interval: float = 60.0, max_kinds: int = 1000) -> None:
        super().__init__()
        self.interval = interval
        self.max_kinds = max_kinds
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # kind -> (when, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        kind = (record.name, f"{record.msg}|{type(exc).__name__ if exc else ''}")
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last[0] < self.interval:
            self._last[kind] = (last[0], last[1] + 1)
            return False
        if len(self._last) >= self.max_kinds:
            self._last.clear()
        held = last[1] if last is not None else 0
        if exc is not None:
            record.msg = f"{record.getMessage()} ({type(exc).__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        if held:
            record.msg = f"{record.getMessage()} [{held} more like it in the last minute]"
            record.args = None
        self._last[kind] = (now, 0)
        return True


CLIENT_NOISE = ClientNoise()


def quiet_client_noise() -> None:
    """Attach the filter to the loggers of the libraries that parse client frames."""
    for name in ("engineio.server", "socketio.server", "engineio", "socketio"):
        logger = logging.getLogger(name)
        if CLIENT_NOISE not in logger.filters:
            logger.addFilter(CLIENT_NOISE)


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Socket.IO, Engine.IO and aioice log every packet or check at INFO: keep them to warnings.
    for noisy in ("socketio", "engineio", "aiohttp.access", "aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
