"""Create a session on the cluster: its private directory, the launcher, the job script, the job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpcjup import __version__
from hpcjup.config.environment import launcher_python, setup_lines
from hpcjup.config.resources import Resources, time_to_seconds
from hpcjup.errors import HpcjupError, UsageError
from hpcjup.job import DASK_DIR, job_files
from hpcjup.schedulers.base import JobSpec, Scheduler
from hpcjup.session.layout import SessionPaths, check_name, new_name
from hpcjup.session.record import SessionRecord, now_iso, read_report
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved

# Ask for the walltime warning this long before the limit (short jobs: a quarter of their time).
_WARN_SECONDS = 300


@dataclass(frozen=True)
class StartRequest:
    """What `hpcjup start` asks for, after validation."""

    resources: Resources = field(default_factory=Resources)
    name: str | None = None
    workdir: str | None = None
    python: str = "python3"
    idle_timeout: int = 0  # seconds; 0 = never
    ready_timeout: int = 300  # seconds Jupyter may take to answer once the job runs
    dask: DaskRequest | None = None  # None: no Dask cluster
    socket: bool = False  # Jupyter on a Unix socket on the node instead of TCP
    settings: Resolved | None = None  # the resolved profile: environment activation, containers


@dataclass(frozen=True)
class DaskRequest:
    """The Dask cluster in the allocation; None fields mean "fill the allocation"."""

    workers: int | None = None  # worker processes in all (default: one per node)
    worker_cores: int | None = None  # threads per worker (default: the job's CPUs per task)
    worker_memory: str | None = None  # memory limit per worker (default: Dask's "auto")

    def check_fits(self, resources: Resources) -> None:
        """Refuse, before submitting, more worker cores than the allocation has (when --cpus says)."""
        if resources.cpus is None or self.workers is None:
            return
        wanted = self.workers * (self.worker_cores or 1)
        have = resources.nodes * resources.cpus
        if wanted > have:
            raise UsageError(
                f"{self.workers} workers x {self.worker_cores or 1} cores = {wanted} cores, but the allocation has "
                f"{resources.nodes} node(s) x {resources.cpus} CPUs = {have}.",
                hint="Ask for fewer --workers or --worker-cores, or more --nodes or --cpus.",
            )


def submit(transport: Transport, scheduler: Scheduler, request: StartRequest) -> tuple[SessionRecord, SessionPaths]:
    """Make the session directory, upload, submit; on any failure leave nothing behind."""
    paths = _claim_directory(transport, scheduler, request.name)
    try:
        for name, code in job_files().items():
            transport.write_file(paths.file(name), code, 0o600)
        if request.dask is not None:
            _upload_credentials(transport, paths)
        spec = JobSpec(
            name=paths.name,
            session_dir=paths.dir,
            command=_launcher_command(request, paths, scheduler),
            resources=request.resources,
            warn_seconds=_warn_seconds(request.resources.time),
            setup=tuple(setup_lines(request.settings)) if request.settings else (),
        )
        transport.write_file(paths.script, scheduler.render(spec).encode(), 0o700)
        job_id = scheduler.submit(transport, paths.dir)
    except BaseException:
        transport.rmtree(paths.dir)  # nothing was submitted: no trace left (Ctrl-C included)
        raise
    record = SessionRecord(
        name=paths.name,
        host=transport.name,
        scheduler=scheduler.name,
        job_id=job_id,
        created_at=now_iso(),
        resources=request.resources.to_dict(),
        workdir=request.workdir,
        idle_timeout=request.idle_timeout or None,
        python=request.python,
        hpcjup_version=__version__,
    )
    try:
        transport.write_file(paths.record, record.to_json(), 0o600)
    except BaseException:
        scheduler.cancel(transport, job_id, graceful=False)
        transport.rmtree(paths.dir)
        raise
    return record, paths


def _claim_directory(transport: Transport, scheduler: Scheduler, name: str | None) -> SessionPaths:
    """Create the session directory exclusively (0700); a finished session's name may be reused."""
    home = transport.home()
    root = SessionPaths(home, "x").root
    transport.makedirs(root, 0o700)
    for _ in range(5 if name is None else 1):
        paths = SessionPaths(home, check_name(name) if name else new_name())
        try:
            transport.mkdir(paths.dir, 0o700)
            return paths
        except FileExistsError:
            if name is None:
                continue  # a random name collided: draw another
            if _is_finished(transport, scheduler, paths):
                transport.rmtree(paths.dir)
                transport.mkdir(paths.dir, 0o700)
                return paths
            raise UsageError(
                f"A session named {name!r} already exists on {transport.name}.",
                hint=f"Attach to it with `hpcjup attach {name}`, stop it with `hpcjup stop {name}`, or choose another --name.",
            ) from None
    raise HpcjupError("Could not find a free session name.", hint="Pass --name.")


def _is_finished(transport: Transport, scheduler: Scheduler, paths: SessionPaths) -> bool:
    """Whether the session's job is over (its directory then only holds logs)."""
    report = read_report(transport, paths.state)
    if report is not None and report.ended:
        return True
    try:
        record = SessionRecord.from_json(transport.read_file(paths.record))
    except FileNotFoundError:
        return True  # a directory left half-made by an interrupted start
    return not scheduler.status(transport, record.job_id).state.active


def _launcher_command(request: StartRequest, paths: SessionPaths, scheduler: Scheduler) -> list[str]:
    python = launcher_python(request.settings, paths.home) if request.settings else [request.python]
    command = [*python, paths.launcher, "--session-dir", paths.dir, "--ready-timeout", str(request.ready_timeout)]
    if request.workdir:
        command += ["--workdir", request.workdir]
    if scheduler.bind_address:
        command += ["--bind", scheduler.bind_address]
    if request.socket:
        command += ["--socket"]
    if request.idle_timeout:
        command += ["--idle-timeout", str(request.idle_timeout)]
    dask = request.dask
    if dask is not None:
        command += ["--dask"]
        command += ["--workers", str(dask.workers)] if dask.workers is not None else []
        command += ["--worker-cores", str(dask.worker_cores)] if dask.worker_cores else []
        command += ["--worker-memory", dask.worker_memory] if dask.worker_memory else []
        if request.resources.time:  # workers retire cleanly a minute before the walltime warning
            lifetime = time_to_seconds(request.resources.time) - (_warn_seconds(request.resources.time) or 0) - 60
            command += ["--lifetime", str(max(60, lifetime))]
    return command


def _upload_credentials(transport: Transport, paths: SessionPaths) -> None:
    from hpcjup.session.dasktls import make_credentials

    cert, key = make_credentials(paths.name)
    transport.mkdir(paths.file(DASK_DIR), 0o700)
    transport.write_file(paths.file(f"{DASK_DIR}/cert.pem"), cert, 0o600)
    transport.write_file(paths.file(f"{DASK_DIR}/key.pem"), key, 0o600)


def _warn_seconds(time_limit: str | None) -> int | None:
    """How long before the limit the job wants SIGUSR1 to shut down cleanly."""
    if time_limit is None:
        return _WARN_SECONDS
    return max(30, min(_WARN_SECONDS, time_to_seconds(time_limit) // 4))
