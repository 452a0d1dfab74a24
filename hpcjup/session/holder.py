"""The local process holding a session's tunnel, as recorded in the laptop's cache.

A holder is alive exactly while it holds an exclusive `flock` on the session's lock file (the lock
itself, and why it is a lock rather than a pid: session/locks.py). This module finds the live
holders of cached sessions and ends them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from hpcjup.session.locks import locked_by
from hpcjup.session.store import LocalStore


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
