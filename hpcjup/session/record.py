"""The JSON documents of a session: what the laptop wrote, and what the job wrote back."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from hpcjup.config.resources import Resources
from hpcjup.errors import HpcjupError, RemoteCommandError
from hpcjup.transport.base import Transport

SCHEMA = 1


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pick(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of `data` that dataclass `cls` knows (newer writers may add keys)."""
    return {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}


def parse_json(raw: bytes, what: str) -> dict[str, Any]:
    """Decode a session document; a broken one is a clear error, not a traceback."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RemoteCommandError(["read", what], 1, "", f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RemoteCommandError(["read", what], 1, "", f"{what} is not a JSON object")
    return data


@dataclass(frozen=True)
class SessionRecord:
    """session.json: written by the laptop after submission; the source of truth for attach and ls."""

    name: str
    host: str
    scheduler: str
    job_id: str
    created_at: str
    resources: dict[str, Any] = field(default_factory=dict)
    workdir: str | None = None
    idle_timeout: int | None = None
    python: str = "python3"  # the cluster-side Python the job runs (worker groups use it too)
    hpcjup_version: str = ""
    schema: int = SCHEMA

    @property
    def resources_obj(self) -> Resources:
        return Resources.from_dict(self.resources)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> SessionRecord:
        return cls(**_pick(cls, parse_json(raw, "session.json")))


@dataclass(frozen=True)
class Connection:
    """connection.json: where the job's Jupyter listens and its token (a secret: 0600 everywhere)."""

    job_id: str
    node: str
    address: str
    port: int
    token: str
    base_url: str = "/"
    socket: str | None = None  # socket mode: Jupyter's Unix socket on the node (port is 0)
    pid: int | None = None
    started_at: str | None = None
    ready_at: str | None = None
    jupyter_server_version: str | None = None
    dask: dict[str, Any] | None = None  # scheduler address, dashboard port on the node, workers
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Connection:
        return cls(**_pick(cls, data))

    @classmethod
    def from_json(cls, raw: bytes) -> Connection:
        return cls.from_dict(parse_json(raw, "connection.json"))


@dataclass(frozen=True)
class JobReport:
    """state.json: the launcher's own account of where it is and, at the end, why it stopped."""

    state: str  # starting | running | stopping | ended
    reason: str | None = None  # stopped | walltime | idle | jupyter-exited | no-jupyter | ...
    message: str | None = None
    exit_code: int | None = None
    node: str | None = None
    updated_at: str | None = None

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    @classmethod
    def from_json(cls, raw: bytes) -> JobReport:
        return cls(**_pick(cls, parse_json(raw, "state.json")))


def read_report(transport: Transport, path: str) -> JobReport | None:
    """The launcher's state.json, or None if it has not written one (or it is unreadable)."""
    try:
        return JobReport.from_json(transport.read_file(path))
    except (FileNotFoundError, HpcjupError):
        return None
