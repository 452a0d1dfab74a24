"""One session's usage figures: read from its records on the cluster, kept in this laptop's archive.

The launcher writes usage.json (hpcjup/job/usage.py); it comes from the cluster, so every field is
checked here before it is used (a bad one makes the document damaged, never a crash). What
`hpcjup stats` computed for each session is also kept in a 0600 archive on the laptop, so that
sessions removed from the host (`hpcjup prune`) still count in later statistics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcjup.errors import DamagedDocument
from hpcjup.files import private_dirs, write_private
from hpcjup.job import USAGE_FILE
from hpcjup.session.fields import WORD, Reader, parse_object

if TYPE_CHECKING:
    from hpcjup.session.store import LocalStore

MAX_ARCHIVED = 5000  # sessions per host in the laptop's archive: the newest are kept
_MAX_SECONDS = 10 * 365 * 86400.0  # a duration longer than this is not something the launcher wrote


def moment(value: Any) -> float | None:
    """Unix time of an ISO 8601 string (naive means UTC), or None if it is not one."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _time(value: Any) -> float | None:
    if value is None:
        return None
    found = moment(value)
    if found is None:
        raise ValueError(f"{str(value)[:40]!r} is not an ISO 8601 time")
    return found


def _seconds(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= _MAX_SECONDS:
        raise ValueError(f"{str(value)[:40]!r} is not a number of seconds")
    return float(value)


@dataclass(frozen=True)
class JobUsage:
    """usage.json, checked: the moments as Unix times (None where the launcher has not reached them)."""

    started_at: float | None
    submitted_at: float | None = None
    ready_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    updated_at: float | None = None
    partition: str | None = None
    nodes: int = 1
    time_limit: int = 0  # seconds granted; 0: unknown
    busy_seconds: float = 0.0

    @classmethod
    def from_json(cls, raw: bytes) -> JobUsage:
        """Parse and check usage.json; DamagedDocument names what is wrong."""
        r = Reader(parse_object(raw, USAGE_FILE), USAGE_FILE)
        return cls(
            started_at=r.checked("started_at", _time),
            submitted_at=r.checked("submitted_at", _time),
            ready_at=r.checked("ready_at", _time),
            ended_at=r.checked("ended_at", _time),
            end_reason=r.text("end_reason", pattern=WORD),
            updated_at=r.checked("updated_at", _time),
            partition=r.text("partition"),
            nodes=r.integer("nodes", default=1, low=1, high=1_000_000),
            time_limit=r.integer("time_limit", default=0),
            busy_seconds=r.checked("busy_seconds", _seconds),
        )


@dataclass(frozen=True)
class SessionFigures:
    """What `hpcjup stats` knows about one session; None where its records do not say."""

    name: str
    job_id: str
    host: str
    partition: str
    created_at: float  # the laptop's record of the submission (session.json)
    end: str  # how it ended: the launcher's reason, or the scheduler's state (running, pending, lost, ...)
    nodes: int = 1
    submitted_at: float | None = None
    started_at: float | None = None
    ready_at: float | None = None
    until: float | None = None  # when it ended, or the last moment it was known to run
    busy_seconds: float | None = None
    time_limit: int | None = None  # seconds: granted, else asked
    has_usage: bool = False  # False: an older session without usage.json

    @property
    def key(self) -> str:
        return f"{self.name}#{self.job_id}"

    @property
    def queue_wait(self) -> float | None:
        """Submission to job start, in seconds (clock differences never make it negative)."""
        if self.started_at is None:
            return None
        return max(0.0, self.started_at - (self.submitted_at or self.created_at))

    @property
    def to_ready(self) -> float | None:
        """Job start to Jupyter answering (the URL), in seconds."""
        if self.started_at is None or self.ready_at is None:
            return None
        return max(0.0, self.ready_at - self.started_at)

    @property
    def used(self) -> float | None:
        """Seconds the job held its nodes (up to its end, or its last sign of life)."""
        if self.started_at is None or self.until is None:
            return None
        return max(0.0, self.until - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> SessionFigures | None:
        """An archived entry, or None if it is not one this hpcjup wrote."""
        if not isinstance(data, dict):
            return None
        known = {f.name: f for f in fields(cls)}
        try:
            values = {k: v for k, v in data.items() if k in known}
            figures = cls(**values)
        except TypeError:
            return None
        text_ok = all(isinstance(getattr(figures, k), str) for k in ("name", "job_id", "host", "partition", "end"))
        numbers = [figures.created_at, figures.submitted_at, figures.started_at, figures.ready_at, figures.until]
        numbers += [figures.busy_seconds, figures.time_limit]
        numbers_ok = all(n is None or (isinstance(n, (int, float)) and not isinstance(n, bool)) for n in numbers)
        counts_ok = isinstance(figures.nodes, int) and figures.nodes >= 1 and figures.created_at is not None
        return figures if text_ok and numbers_ok and counts_ok else None


class UsageArchive:
    """The laptop's record of past sessions' figures, per host: one 0600 JSON file each, bounded."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store

    def path(self, host: str) -> Path:
        return self.store.host_file("usage", host)

    def load(self, host: str) -> dict[str, SessionFigures]:
        """key -> figures of the sessions archived for `host`; entries that do not check out are dropped."""
        try:
            data = json.loads(self.path(host).read_text())
        except (OSError, ValueError):
            return {}
        entries = data.get("sessions") if isinstance(data, dict) else None
        found = [SessionFigures.from_dict(item) for item in entries] if isinstance(entries, list) else []
        return {f.key: f for f in found if f is not None}

    def save(self, host: str, figures: list[SessionFigures]) -> None:
        """Keep these (the newest MAX_ARCHIVED), atomically and readable by the user only."""
        newest = sorted(figures, key=lambda f: f.created_at)[-MAX_ARCHIVED:]
        path = self.path(host)
        private_dirs(path.parent)
        write_private(path, json.dumps({"schema": 1, "sessions": [f.to_dict() for f in newest]}).encode())


def read_usage(raw: bytes | None) -> tuple[JobUsage | None, str | None]:
    """(usage, None), (None, None) without a usage.json, or (None, why it is damaged)."""
    if raw is None:
        return None, None
    try:
        return JobUsage.from_json(raw), None
    except DamagedDocument as exc:
        return None, exc.message
