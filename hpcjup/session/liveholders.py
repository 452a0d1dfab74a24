"""The local process holding a session's tunnel, as recorded in the laptop's cache.

A holder is alive exactly while it holds an exclusive `flock` on the session's lock file (the lock
itself, and why it is a lock rather than a pid: session/locks.py). This module finds the live
holders of cached sessions and ends them (`url`, `open`, `disconnect`, `attach`, `stop`, `ls`).
Named for what it answers, which holders live; the holding loop itself is session/holding.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from hpcjup.session.locks import locked_by
from hpcjup.session.record import SessionRecord
from hpcjup.session.store import CacheEntry, LocalStore, TunnelInfo


def holder_pid(entry: CacheEntry | None) -> int | None:
    """The pid of the live process holding this entry's tunnel, else None."""
    tunnel = entry.tunnel if entry else None
    if tunnel is None or tunnel.lock is None or tunnel.pid == os.getpid():
        return None  # an entry without a lock file comes from an older hpcjup: its pid proves nothing
    return tunnel.pid if locked_by(Path(tunnel.lock)) == tunnel.pid else None


def end_holder(entry: CacheEntry | None, timeout: float = 5.0) -> bool:
    """SIGTERM the process holding the tunnel and wait until it lets go; True if there was one."""
    pid = holder_pid(entry)
    if pid is None or entry is None or entry.tunnel is None or entry.tunnel.lock is None:
        return False
    lock = Path(entry.tunnel.lock)
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


def held_sessions(store: LocalStore, host: str | None = None, name: str | None = None) -> list[HeldEntry]:
    """Cache entries whose tunnel a live process on this laptop holds, optionally filtered."""
    hosts = store.hosts() if host is None else [host]
    entries = []
    for h in hosts:
        for n in store.names(h):
            entry = store.load(h, n)
            held = HeldEntry.of(entry) if entry and holder_pid(entry) is not None else None
            if held is not None and (name is None or held.record.name == name):
                entries.append(held)
    return entries


@dataclass(frozen=True)
class HeldEntry:
    """A cache entry whose tunnel a live holder keeps: the parts a holder always writes, there for sure."""

    entry: CacheEntry
    host: str
    record: SessionRecord
    tunnel: TunnelInfo

    @classmethod
    def of(cls, entry: CacheEntry) -> HeldEntry | None:
        """None for an entry missing a part (a damaged one: as if no holder kept it)."""
        if entry.host is None or entry.record is None or entry.tunnel is None:
            return None
        return cls(entry, entry.host, entry.record, entry.tunnel)
