"""The lock file that proves a session's tunnel holder is alive (the holder itself: session/liveholders.py).

A holder is alive exactly while it holds an exclusive `flock` on the session's lock file (in the
0700 state directory, the file 0600, the holder's pid written inside). The kernel drops the lock
when the process ends however it ends, so a pid left in the cache after a crash or a reboot, and
then reused by an unrelated process, is never taken for a holder, and never signalled. This works
the same on macOS and Linux, unlike a look at /proc. A lock belongs to the open file, and forked
children share it: the holder takes it itself, after any fork (see cli/detach.py).

A leaf: the cache (session/store.py) removes lock files and the holder module reads them, both through here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

from hpcjup.errors import UsageError

try:
    import fcntl
except ImportError:  # Windows: no flock, so no holder is ever recognised (and none is ever signalled)
    fcntl = None  # type: ignore[assignment]


class HolderLock:
    """The lock a holder keeps for its whole life; a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, timeout: float = 2.0) -> None:
        """Lock the file and write our pid into it; UsageError if another live holder has it."""
        if fcntl is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                # A checker holds a shared lock for a moment: retry briefly; a holder keeps it for good.
                if time.monotonic() >= deadline:
                    raise self._busy() from None
                time.sleep(0.05)
                continue
            if _same_file(fd, self.path):  # else remove_lock() unlinked it between our open and our lock
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        """Let go (closing the file releases the lock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _busy(self) -> UsageError:
        pid = locked_by(self.path)
        return UsageError(
            f"Another process{f' (pid {pid})' if pid else ''} already holds this session's tunnel on this laptop.",
            hint="`hpcjup url SESSION` prints its URL; `hpcjup disconnect SESSION` closes it.",
        )

    def __enter__(self) -> HolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.release()


def locked_by(path: Path) -> int | None:
    """The pid written in a lock file that some process holds locked now; None if nobody holds it."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)  # we could take it: nobody holds it
        return None
    finally:
        os.close(fd)


def remove_lock(path: Path) -> None:
    """Remove a lock file that nobody holds (a held one stays: its holder is alive)."""
    if fcntl is None:
        path.unlink(missing_ok=True)
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)  # while we hold it, so no holder can be using this file
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
