"""The JSON documents of a session: what the laptop wrote, and what the job wrote back."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from hpcjup.config.resources import Resources
from hpcjup.errors import DamagedDocument, HpcjupError
from hpcjup.job import CONNECTION_FILE, REASON_STOPPED, SCHEMA, STATE_FILE
from hpcjup.session.fields import ADDRESS, HOST_NAME, PYTHON, TOKEN, WORD, Reader, base_url, dask_address, parse_object
from hpcjup.session.layout import NAME
from hpcjup.transport.base import Transport

_JOB_ID = re.compile(r"[A-Za-z0-9_.+-]{1,64}")  # the adapter checks its own form before any command line
_STATES = re.compile(r"starting|running|stopping|ended")


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _created_at(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("missing")
    datetime.fromisoformat(value)  # ValueError if it is not a time
    return value


def _command(value: Any) -> str:
    """A shell-quoted command line (python_command): text that shlex splits into words; "" when absent."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 4096 or any(ord(c) < 32 for c in value):
        raise ValueError("not a one-line command")
    shlex.split(value)  # ValueError on unbalanced quotes
    return value


def _flag(value: Any) -> bool:
    """A JSON true or false; False when absent (documents of older versions)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError("not true or false")
    return value


def _paths(value: Any) -> list[str]:
    """A list of absolute paths (envs); [] when absent."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 64:
        raise ValueError("not a list of paths")
    if not all(isinstance(p, str) and p.startswith("/") and len(p) < 4096 and "\n" not in p for p in value):
        raise ValueError("not a list of absolute paths")
    return list(value)


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
    python: str = "python3"  # the cluster-side Python the job runs
    # The whole command that ran it, shell-quoted, when more than `python` (a container: `ch-run IMG -- python3`):
    # worker groups run theirs the same way. "" for sessions of older versions and plain Pythons.
    python_command: str = ""
    # The environment directories the session uses (server env, kernels' envs): `hpcjup env rm` refuses them.
    envs: list[str] = field(default_factory=list)
    hpcjup_version: str = ""
    schema: int = SCHEMA

    def uses_env(self, path: str) -> bool:
        """Whether the session runs from the environment at `path` (its Python, a kernel, Dask)."""
        path = path.rstrip("/")
        mine = [*self.envs, self.python, *shlex.split(self.python_command or "")]
        return any(p == path or p.startswith(path + "/") for p in mine)

    @property
    def worker_python(self) -> list[str]:
        """The argv prefix worker jobs run Python with: the session's own, inside its container if it has one."""
        return shlex.split(self.python_command) if self.python_command else [self.python]

    @property
    def resources_obj(self) -> Resources:
        return Resources.from_dict(self.resources)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> SessionRecord:
        """Parse and check session.json; DamagedDocument names what is wrong."""
        return cls.from_dict(parse_object(raw, "session.json"))

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str = "session.json") -> SessionRecord:
        """Check session.json's fields, already parsed (the laptop's cache holds a copy)."""
        r = Reader(data, what)
        return cls(
            name=r.text("name", required=True, pattern=NAME),
            host=r.text("host", required=True),
            scheduler=r.text("scheduler", required=True, pattern=WORD),
            job_id=r.text("job_id", required=True, pattern=_JOB_ID),
            created_at=r.checked("created_at", _created_at),
            resources=r.mapping("resources") or {},
            workdir=r.text("workdir"),
            idle_timeout=r.integer("idle_timeout"),
            python=r.text("python", default="python3", pattern=PYTHON),
            python_command=r.checked("python_command", _command),
            envs=r.checked("envs", _paths),
            hpcjup_version=r.text("hpcjup_version", default=""),
            schema=r.integer("schema", default=SCHEMA),
        )


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
    dask_missing: str | None = None  # why the session has no Dask (the default kernel lacks distributed)
    # start --preemptible: how often the job ran before this run (requeued); a newer one is the session's new place
    restarts: int = 0
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str = CONNECTION_FILE) -> Connection:
        """Check every field: the node and address reach ssh, the base URL and token reach a URL."""
        r = Reader(data, what)
        socket = r.text("socket")
        if socket is not None and not socket.startswith("/"):
            raise DamagedDocument(what, f"has a socket path that is not absolute: {socket[:80]!r}")
        dask = r.mapping("dask")
        if dask is not None:
            d = Reader(dask, f"{what} (dask)")
            dask = {
                **dask,
                "scheduler": d.checked("scheduler", dask_address),
                "dashboard_port": d.integer("dashboard_port", high=65535),
            }
        return cls(
            job_id=r.text("job_id", required=True, pattern=_JOB_ID),
            node=r.text("node", required=True, pattern=HOST_NAME),
            address=r.text("address", required=True, pattern=ADDRESS),
            port=r.integer("port", required=True, high=65535),
            token=r.text("token", required=True, pattern=TOKEN),
            base_url=r.checked("base_url", base_url),
            socket=socket,
            pid=r.integer("pid"),
            started_at=r.text("started_at"),
            ready_at=r.text("ready_at"),
            jupyter_server_version=r.text("jupyter_server_version"),
            dask=dask,
            dask_missing=r.message("dask_missing"),
            restarts=r.integer("restarts", default=0),
            schema=r.integer("schema", default=SCHEMA),
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Connection:
        return cls.from_dict(parse_object(raw, CONNECTION_FILE))


@dataclass(frozen=True)
class JobReport:
    """state.json: the launcher's own account of where it is and, at the end, why it stopped."""

    state: str  # starting | running | stopping | ended
    reason: str | None = None  # stopped | walltime | idle | jupyter-exited | no-jupyter | ...
    message: str | None = None
    exit_code: int | None = None
    node: str | None = None
    updated_at: str | None = None
    preemptible: bool = False  # start --preemptible: the job may run again after this run's end (requeued)
    restarts: int = 0  # how often the job ran before this run

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    @property
    def may_return(self) -> bool:
        """This run ended by a stop signal in a requeueable job: a preemption's, if the scheduler holds the job
        again (the launcher cannot tell it from `stop`'s; the scheduler's state can)."""
        return self.ended and self.preemptible and self.reason == REASON_STOPPED

    @classmethod
    def from_json(cls, raw: bytes) -> JobReport:
        """Parse and check state.json (written by the launcher on the node)."""
        r = Reader(parse_object(raw, STATE_FILE), STATE_FILE)
        return cls(
            state=r.text("state", required=True, pattern=_STATES),
            reason=r.text("reason", pattern=WORD),
            message=r.message("message"),
            exit_code=r.integer("exit_code", low=-(2**31)),
            node=r.text("node", pattern=HOST_NAME),
            updated_at=r.text("updated_at"),
            preemptible=r.checked("preemptible", _flag),
            restarts=r.integer("restarts", default=0),
        )


def read_report(transport: Transport, path: str) -> JobReport | None:
    """The launcher's state.json, or None if it has not written one (or it is unreadable)."""
    try:
        return JobReport.from_json(transport.read_file(path))
    except (FileNotFoundError, HpcjupError):
        return None
