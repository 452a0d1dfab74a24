"""The local process holding a session's tunnel, as recorded in the laptop's cache."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from hpcjup.session.store import LocalStore


def holder_pid(entry: dict[str, Any] | None) -> int | None:
    """The pid of a live hpcjup process holding this entry's tunnel, else None."""
    tunnel = (entry or {}).get("tunnel") or {}
    pid = tunnel.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    cmdline = f"/proc/{pid}/cmdline"
    if os.path.exists(cmdline):  # guard against a recycled pid where /proc tells us
        with open(cmdline, "rb") as fh:
            if b"hpcjup" not in fh.read():
                return None
    return pid


def end_holder(entry: dict[str, Any] | None, timeout: float = 5.0) -> bool:
    """SIGTERM the process holding the tunnel and wait for it to go; True if there was one."""
    pid = holder_pid(entry)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
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
