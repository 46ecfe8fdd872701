"""Private files: what the server keeps (the generated secret, recordings, their sidecars,
manifests and event logs, thumbnails, exports) is created 0600, its directories 0700.

The modes are given at creation (``os.open``/``os.mkdir``), never through the process umask,
which is process-wide and not ours to change. A umask only ever removes bits, so it can make
these modes stricter, never looser. Stdlib only: the settings import it too.

Also the advisory locks (``flock``) a node holds while it runs: its node id in the data
directory, its liveness in the recordings directory (docs/recording.md, "Crash repair"). An
``flock`` belongs to an open file: the kernel drops it when the process ends, ``kill -9``
included, and two opens of one file conflict even within one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "hold_lock",
    "lock_held",
    "make_private_dir",
    "private_opener",
    "replace_private",
]

FILE_MODE = 0o600
DIR_MODE = 0o700
_GROUP_OTHER = 0o077


def make_private_dir(path: str | Path, *, exist_ok: bool = True) -> None:
    """``mkdir -p`` whose every created directory, missing parents too, is 0700.

    (``Path.mkdir(mode=..., parents=True)`` gives the parents the default 0777 & ~umask.)
    Directories that already exist are left as they are.
    """
    path = Path(path)
    try:
        os.mkdir(path, DIR_MODE)
    except FileNotFoundError:
        if path.parent == path:
            raise
        make_private_dir(path.parent, exist_ok=True)
        make_private_dir(path, exist_ok=exist_ok)
    except OSError:
        # EEXIST, or e.g. EROFS/EACCES on a directory that is already there
        if not exist_ok or not path.is_dir():
            raise


def private_opener(path: str | os.PathLike[str], flags: int) -> int:
    """An ``opener`` for :func:`open`: a file it creates is 0600; a regular file that already
    existed with group or other bits (left by an older version) loses them."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and mode & _GROUP_OTHER:  # never a FIFO's or a device's mode
            os.fchmod(fd, stat.S_IMODE(mode) & ~_GROUP_OTHER)
    except BaseException:
        os.close(fd)
        raise
    return fd


def replace_private(path: str | Path, data: str | bytes, tmp: str | Path | None = None) -> None:
    """Write ``data`` to ``tmp`` (default ``<path>.tmp``), 0600, then atomically replace
    ``path`` with it: a crash leaves the old or the new file, never half of one."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        with open(tmp, "w", encoding="utf-8", opener=private_opener) as handle:
            handle.write(data)
    else:
        with open(tmp, "wb", opener=private_opener) as handle:
            handle.write(data)
    os.replace(tmp, path)


def hold_lock(path: str | Path) -> BinaryIO | None:
    """Take an exclusive ``flock`` on ``path`` (created 0600 if missing) without waiting: the
    open file that holds it (close it to let go), or None when another open file holds it (a
    running process, or another holder in this one)."""
    handle = open(path, "ab", opener=private_opener)  # noqa: SIM115 - returned, closed by the caller
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    except BaseException:
        handle.close()
        raise
    return handle


def lock_held(path: str | Path) -> bool:
    """Whether an exclusive ``flock`` is held on ``path`` now (False if there is no such file).
    Probes with a shared lock, let go at once: a holder taking its lock at that very moment
    retries (see :func:`hold_lock`'s callers)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)  # drops the shared lock too
    return False
