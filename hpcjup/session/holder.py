"""The local process holding a session's tunnel, as recorded in the laptop's cache.

A holder is alive exactly while it holds an exclusive `flock` on the session's lock file (in the
0700 state directory, the file 0600, the holder's pid written inside). The kernel drops the lock
when the process ends however it ends, so a pid left in the cache after a crash or a reboot, and
then reused by an unrelated process, is never taken for a holder, and never signalled. This works
the same on macOS and Linux, unlike a look at /proc. A lock belongs to the open file, and forked
children share it: the holder takes it itself, after any fork (see cli/detach.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from hpcjup.errors import UsageError
from hpcjup.session.store import LocalStore

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


def holder_pid(entry: dict[str, Any] | None) -> int | None:
    """The pid of the live process holding this entry's tunnel, else None."""
    tunnel = (entry or {}).get("tunnel") or {}
    pid, lock = tunnel.get("pid"), tunnel.get("lock")
    if not isinstance(pid, int) or not isinstance(lock, str) or pid == os.getpid():
        return None  # an entry without a lock file comes from an older hpcjup: its pid proves nothing
    return pid if locked_by(Path(lock)) == pid else None


def end_holder(entry: dict[str, Any] | None, timeout: float = 5.0) -> bool:
    """SIGTERM the process holding the tunnel and wait until it lets go; True if there was one."""
    pid = holder_pid(entry)
    if pid is None:
        return False
    lock = Path((entry or {})["tunnel"]["lock"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if locked_by(lock) != pid:  # it closed its tunnel and updated the cache before letting go
            return True
        time.sleep(0.05)
    if locked_by(lock) == pid:  # still the holder (checked again: never signal a pid that is not)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def held_sessions(store: LocalStore, host: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
    """Cache entries whose tunnel a live process on this laptop holds, optionally filtered."""
    hosts = store.hosts() if host is None else [host]
    entries = []
    for h in hosts:
        for n in store.names(h):
            entry = store.load(h, n)
            if entry and holder_pid(entry) is not None and (name is None or entry["record"]["name"] == name):
                entries.append(entry)
    return entries
