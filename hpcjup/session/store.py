"""The laptop's cache of sessions: 0600 JSON files in a 0700 state directory.

The cluster is the source of truth; this cache only saves a round trip, remembers
which host a session lives on, and records the local tunnel holding it (pid, port, the
lock file that proves the holder is alive: see session/locks.py).
It holds tokens, so every file is private to the user.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hpcjup.files import private_dirs as _private_dirs  # the old name, still imported from here
from hpcjup.files import write_private
from hpcjup.session.locks import remove_lock
from hpcjup.statedir import state_dir


def safe_name(part: str) -> str:
    """A host alias or session name as a file name (user@host:port has characters to avoid)."""
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", part)


class LocalStore:
    """Session entries keyed by host and session name."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_dir()

    def _dir(self, host: str) -> Path:
        return self.root / "sessions" / safe_name(host)

    def _path(self, host: str, name: str) -> Path:
        return self._dir(host) / f"{safe_name(name)}.json"

    def host_file(self, folder: str, host: str) -> Path:
        """`<state dir>/FOLDER/HOST.json`: a per-host file beside the session entries (hostfacts, the usage archive)."""
        return self.root / folder / f"{safe_name(host)}.json"

    def load(self, host: str, name: str) -> dict[str, Any] | None:
        """The cached entry, or None."""
        try:
            return json.loads(self._path(host, name).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def save(self, host: str, name: str, entry: dict[str, Any]) -> None:
        """Write an entry atomically, readable by the user only."""
        path = self._path(host, name)
        _private_dirs(path.parent)
        write_private(path, json.dumps(entry, indent=2).encode())

    def update(self, host: str, name: str, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into an entry (None removes a key); returns the new entry."""
        entry = self.load(host, name) or {}
        for key, value in changes.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
        self.save(host, name, entry)
        return entry

    def _file(self, folder: str, host: str, name: str, suffix: str) -> Path:
        return self.root / folder / safe_name(host) / f"{safe_name(name)}{suffix}"

    def log_path(self, host: str, name: str) -> Path:
        """Where a detached tunnel holder writes its output (its directory is made 0700)."""
        return _in_private_dir(self._file("logs", host, name, ".log"))

    def lock_path(self, host: str, name: str) -> Path:
        """The file a session's tunnel holder keeps locked for its whole life (its directory is made 0700)."""
        return _in_private_dir(self._file("holders", host, name, ".lock"))

    def load_any(self, host: str) -> dict[str, Any] | None:
        """Some entry of `host` (to learn the host's spelling from its directory name)."""
        for name in self.names(host):
            entry = self.load(host, name)
            if entry:
                return entry
        return None

    def remove(self, host: str, name: str) -> None:
        self._path(host, name).unlink(missing_ok=True)

    def forget(self, host: str, name: str) -> None:
        """Remove everything this laptop keeps about a session: its entry, its holder's log and lock file."""
        self.remove(host, name)
        self._file("logs", host, name, ".log").unlink(missing_ok=True)
        remove_lock(self._file("holders", host, name, ".lock"))

    def names(self, host: str) -> list[str]:
        """Cached session names on a host."""
        directory = self._dir(host)
        return sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []

    def hosts(self) -> list[str]:
        """Hosts with at least one cached session (as their directory names)."""
        base = self.root / "sessions"
        return sorted(d.name for d in base.iterdir() if d.is_dir() and any(d.glob("*.json"))) if base.is_dir() else []


def _in_private_dir(path: Path) -> Path:
    """`path`, its missing directories made 0700."""
    _private_dirs(path.parent)
    return path
