"""What `hpcjup start` asks for, after validation: the request that submit.py turns into a session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpcjup.config.resources import Resources
from hpcjup.errors import UsageError

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.base import Scheduler
    from hpcjup.session.envplan import Located


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
    envs: Located | None = None  # --env/--kernel (or a bare cluster): Jupyter from the server env, kernels
    check_jupyter: str | None = None  # a bare start: the upload checks this Python has JupyterLab
    preemptible: bool = False  # the job is requeueable: preempted, it comes back (schedulers.base.JobSpec.requeue)

    def check(self, scheduler: Scheduler) -> None:
        """Refuse, before anything is submitted, what `scheduler` cannot do of this request (UsageError, exit 2)."""
        scheduler.check_request(self.resources)
        if self.preemptible:
            scheduler.check_preemptible()


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
