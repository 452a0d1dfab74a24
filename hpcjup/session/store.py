"""The laptop's cache of sessions: 0600 JSON files in a 0700 state directory.

The cluster is the source of truth; this cache only saves a round trip, remembers
which host a session lives on, and records the local tunnel holding it (pid, port, the
lock file that proves the holder is alive: see session/locks.py).
It holds tokens, so every file is private to the user.

An entry is a `CacheEntry`, read and written only by `CacheEntry.from_json`/`to_json` here. The file
format is the one older versions wrote (`{"host": ..., "record": {...}, "tunnel": {"url": ..., ...}}`);
the laptop's own file, but still read warily: a file that is not a JSON object is no entry, and a part
that does not read (an older version's, a damaged one) is absent, never a crash.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcjup.errors import DamagedDocument
from hpcjup.files import private_dirs as _private_dirs  # the old name, still imported from here
from hpcjup.files import write_private
from hpcjup.session.locks import remove_lock
from hpcjup.session.record import Connection, SessionRecord
from hpcjup.statedir import state_dir


def safe_name(part: str) -> str:
    """A host alias or session name as a file name (user@host:port has characters to avoid)."""
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", part)


def _int(value: Any) -> int | None:
    """A JSON integer (not true/false), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class TunnelInfo:
    """The local tunnel a holder process keeps (`tunnel`): its pid, the lock file it holds, port and URL."""

    pid: int
    local_port: int
    url: str
    lock: str | None = None  # None in entries of versions before the lock file: their pid proves nothing

    @classmethod
    def from_dict(cls, data: Any) -> TunnelInfo | None:
        if not isinstance(data, dict):
            return None
        pid, port, url = _int(data.get("pid")), _int(data.get("local_port")), _str(data.get("url"))
        if pid is None or port is None or url is None:
            return None
        return cls(pid=pid, local_port=port, url=url, lock=_str(data.get("lock")))

    def to_dict(self) -> dict[str, Any]:
        tunnel: dict[str, Any] = {"pid": self.pid, "lock": self.lock, "local_port": self.local_port, "url": self.url}
        return {key: value for key, value in tunnel.items() if value is not None}


@dataclass(frozen=True)
class TunnelError:
    """Why a holder gave up while the job ran on (`tunnel_error`, e.g. a refused reconnect), shown by `ls`."""

    message: str
    hint: str | None = None
    at: str | None = None  # ISO 8601, UTC

    @classmethod
    def from_dict(cls, data: Any) -> TunnelError | None:
        if not isinstance(data, dict) or _str(data.get("message")) is None:
            return None
        return cls(message=data["message"], hint=_str(data.get("hint")), at=_str(data.get("at")))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Preemption:
    """A holder waits for its preempted job's next run (`preempted`): since when, and the runs before it."""

    at: str
    restarts: int

    @classmethod
    def from_dict(cls, data: Any) -> Preemption | None:
        if not isinstance(data, dict):
            return None
        at, restarts = _str(data.get("at")), _int(data.get("restarts"))
        return None if at is None or restarts is None else cls(at, restarts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parsed(read: Any, data: Any) -> Any:
    """`read(data)` for a JSON object, None for anything else or a damaged document."""
    if not isinstance(data, dict):
        return None
    try:
        return read(data)
    except DamagedDocument:
        return None


@dataclass(frozen=True)
class CacheEntry:
    """What this laptop remembers of one session. Every part may be missing: `start` writes host and
    record at submission, a tunnel holder adds connection and tunnel, and leaves the rest when it lets go."""

    host: str | None = None  # the destination as the user gave it
    record: SessionRecord | None = None  # session.json as submitted
    connection: Connection | None = None  # connection.json, as the holder last forwarded to it
    tunnel: TunnelInfo | None = None  # while a holder process keeps the tunnel (see session/liveholders.py)
    tunnel_error: TunnelError | None = None
    last_local_port: int | None = None  # the tunnel's port once it closed (attach takes it again if free)
    preempted: Preemption | None = None
    restarts: int | None = None  # the runs before the one the holder follows (preemptible sessions)

    @classmethod
    def from_json(cls, raw: bytes | str) -> CacheEntry | None:
        """The entry a cache file holds, or None if it is not a JSON object (damaged parts read as absent)."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        return cls(
            host=_str(data.get("host")),
            record=_parsed(SessionRecord.from_dict, data.get("record")),
            connection=_parsed(Connection.from_dict, data.get("connection")),
            tunnel=TunnelInfo.from_dict(data.get("tunnel")),
            tunnel_error=TunnelError.from_dict(data.get("tunnel_error")),
            last_local_port=_int(data.get("last_local_port")),
            preempted=Preemption.from_dict(data.get("preempted")),
            restarts=_int(data.get("restarts")),
        )

    def to_json(self) -> bytes:
        """The file's text: the keys older versions wrote, absent parts left out."""
        parts = {
            "host": self.host,
            "record": dataclasses.asdict(self.record) if self.record else None,
            "connection": self.connection.to_dict() if self.connection else None,
            "tunnel": self.tunnel.to_dict() if self.tunnel else None,
            "tunnel_error": self.tunnel_error.to_dict() if self.tunnel_error else None,
            "last_local_port": self.last_local_port,
            "preempted": self.preempted.to_dict() if self.preempted else None,
            "restarts": self.restarts,
        }
        return json.dumps({key: value for key, value in parts.items() if value is not None}, indent=2).encode()


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

    def load(self, host: str, name: str) -> CacheEntry | None:
        """The cached entry, or None (none, or not one: see CacheEntry.from_json)."""
        try:
            return CacheEntry.from_json(self._path(host, name).read_bytes())
        except (FileNotFoundError, IsADirectoryError):
            return None

    def save(self, host: str, name: str, entry: CacheEntry) -> None:
        """Write an entry atomically, readable by the user only."""
        path = self._path(host, name)
        _private_dirs(path.parent)
        write_private(path, entry.to_json())

    def update(self, host: str, name: str, **changes: Any) -> CacheEntry:
        """Replace these parts of an entry (None removes one), a missing entry starting empty; returns the new entry."""
        entry = dataclasses.replace(self.load(host, name) or CacheEntry(), **changes)
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

    def load_any(self, host: str) -> CacheEntry | None:
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
