"""What every scheduler adapter provides: render a job, submit it, ask its state, cancel it.

An adapter (`hpcjup/schedulers/NAME.py`, one registry line in `__init__.py`) is the only place that
knows a batch system: its commands, directives, time/memory/GPU formats, state words, pending
reasons that never clear, how it passes the environment, how it warns before the time limit, how it
starts one process per node, which dask-jobqueue job class renders its worker jobs, its doctor
checks, and the hints for its refusals. The session layer drives it through this interface, and
the job side learns everything from the `HPCJUP_*` variables the rendered script exports
(`hpcjup.job.ENV_*`, written by `job_environment`).

Know before you submit (`hpcjup start --dry-run`): an adapter with `previews_start = True` writes
`preview_snippet(script, partitions)`, POSIX sh that asks everything in ONE remote command (the
scheduler's own verdict on the rendered script for each partition, the partitions' limits and free
nodes) and prints framed sections, and `parse_preview(stdout, partitions)` turns that output into one
`PartitionPreview` per partition (any text: previews, or an HpcjupError; never another exception);
`FRAME` and `sections()` (schedulers/shell.py) frame and read such output.
Without it, each partition gets a `note` saying there is no start estimate on that scheduler.
"""

from __future__ import annotations

import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, TypeGuard

from hpcjup.config.resources import Resources
from hpcjup.errors import RemoteCommandError, SubmitError, UsageError
from hpcjup.job import JOB_LOG as JOB_LOG  # the job contract's (hpcjup/job/contract.py); here for older imports
from hpcjup.job import JOB_SCRIPT as JOB_SCRIPT
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.checks import Check


class JobState(str, Enum):
    """A job's state, with Slurm's names as the common vocabulary."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    GONE = "GONE"  # the scheduler no longer knows the job (finished, and forgotten)
    UNKNOWN = "UNKNOWN"  # the scheduler did not answer: counted as active, so nothing is pruned on a guess

    @property
    def active(self) -> bool:
        """Whether the job still holds (or waits for) its allocation."""
        return self in _ACTIVE

    @classmethod
    def parse(cls, text: str) -> JobState:
        """A scheduler's state word (e.g. "CANCELLED by 1000", "CA") as a JobState."""
        word = text.strip().split(" ")[0].rstrip("+").upper()
        word = _SHORT.get(word, word)
        word = _SAME_AS.get(word, word)
        try:
            return cls(word)
        except ValueError:  # a word we do not know: not a reason to call the job over (prune would act on it)
            return cls.UNKNOWN if word else cls.GONE


_ACTIVE = {
    JobState.PENDING,
    JobState.CONFIGURING,
    JobState.RUNNING,
    JobState.COMPLETING,
    JobState.SUSPENDED,
    JobState.UNKNOWN,
}
_SHORT = {
    "PD": "PENDING",
    "CF": "CONFIGURING",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "S": "SUSPENDED",
    "CD": "COMPLETED",
    "F": "FAILED",
    "CA": "CANCELLED",
    "TO": "TIMEOUT",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "PR": "PREEMPTED",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "RQ": "REQUEUED",
    "RF": "REQUEUE_FED",
    "RH": "REQUEUE_HOLD",
    "RD": "RESV_DEL_HOLD",
    "RS": "RESIZING",
    "RV": "REVOKED",
    "SE": "SPECIAL_EXIT",
    "SI": "SIGNALING",
    "SO": "STAGE_OUT",
    "ST": "STOPPED",
}
# Slurm's other words, as the state they amount to. A requeued job waits again under the same id
# (REQUEUE_HOLD, SPECIAL_EXIT and RESV_DEL_HOLD until someone releases it); STOPPED keeps its CPUs.
_SAME_AS = {
    "REQUEUED": "PENDING",
    "REQUEUE_FED": "PENDING",
    "REQUEUE_HOLD": "PENDING",
    "RESV_DEL_HOLD": "PENDING",
    "SPECIAL_EXIT": "PENDING",
    "RESIZING": "RUNNING",
    "SIGNALING": "RUNNING",
    "STAGE_OUT": "COMPLETING",
    "STOPPED": "SUSPENDED",
    "REVOKED": "CANCELLED",  # a federated sibling: another cluster runs the job
}


@dataclass(frozen=True)
class JobStatus:
    """What the scheduler says about one job."""

    job_id: str
    state: JobState
    reason: str | None = None  # why it pends (Priority, Resources, ...)
    expected_start: str | None = None  # the scheduler's estimate while pending
    nodes: str | None = None
    exit_code: str | None = None
    time_left: int | None = None  # seconds until the time limit, while running
    time_limit: int | None = None  # seconds

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {k: (v.value if isinstance(v, JobState) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to render one session's job."""

    name: str  # the session name; the job is called hpcjup-<name>
    session_dir: str  # absolute path on the cluster
    command: Sequence[str]  # what the job runs (the launcher)
    resources: Resources = field(default_factory=Resources)
    warn_seconds: int | None = None  # ask for SIGUSR1 this long before the time limit
    # Requeueable (start --preemptible): a preempted job waits again under its id and reruns in the session
    # directory; otherwise never (a rerun would write into a directory `prune` removed or a new session holds).
    requeue: bool = False
    setup: Sequence[str] = ()  # shell lines that prepare the environment (modules, conda, ...) before the launcher


@dataclass(frozen=True)
class PartitionPreview:
    """What the scheduler says, before anything is submitted, of running the job in one partition (queue)."""

    name: str | None  # the partition; None: the scheduler's default (when it did not say which)
    estimate: str | None = None  # the scheduler's expected start, ISO local time as it printed it
    time_limit_seconds: int | None = None  # the partition's limit; None: none, or not known
    idle_nodes: int | None = None
    total_nodes: int | None = None
    free_slots: int | None = None  # schedulers that count slots, not nodes (Grid Engine)
    total_slots: int | None = None
    refusal: str | None = None  # the scheduler's own words when it would never run the job here
    hint: str | None = None  # which flag to change, with a refusal
    note: str | None = None  # what could not be said (e.g. no start estimate on this scheduler)

    @property
    def can_take(self) -> bool:
        """Whether the scheduler would take the job in this partition."""
        return self.refusal is None

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return dict(self.__dict__)


class Scheduler(ABC):
    """One batch system."""

    name: str  # the registry's key, recorded in session.json
    title: str = ""  # as users call it: "Slurm", "PBS Pro", "IBM LSF", "Grid Engine"
    #: Commands that must be on the login node's PATH (detection and `doctor`).
    commands: tuple[str, ...] = ()
    #: dask-jobqueue's module and job class for worker-group jobs, e.g. ("slurm", "SLURMJob"); None: no worker jobs.
    jobqueue: tuple[str, str] | None = None
    #: Whether the job gets SIGUSR1 from the scheduler before its limit (Slurm --signal); else the launcher's own timer.
    signals_before_limit: bool = False
    #: Whether the scheduler reports an expected start time for pending jobs.
    estimates_start: bool = False
    #: Whether it may shorten a job's limit down to a minimum to start it sooner (Slurm --time-min, PBS shrink-to-fit).
    shrinks_time: bool = False
    #: The prefix of the job script's directive lines ("#SBATCH", "#PBS", "#BSUB", "#$"; "" without a batch system).
    directive: str = ""
    #: Whether it takes several partitions and starts the job in the first that can (Slurm -p a,b).
    picks_partition: bool = False
    #: Whether `preview_snippet`/`parse_preview` ask the scheduler itself (`start --dry-run`).
    previews_start: bool = False

    #: Where a job can be submitted requeueable (JobSpec.requeue): preempted, it waits again under its id and runs
    #: again. Adapters that can say so; elsewhere `start --preemptible` is refused (check_preemptible).
    requeues = False
    #: Why `requeues` is False, for the refusal.
    no_requeue = "it has no preemption that requeues a job"

    def check_preemptible(self) -> None:
        """Refuse `start --preemptible` where a preempted job could not come back (UsageError, exit 2)."""
        if not self.requeues:
            raise UsageError(
                f"{self.title or self.name} cannot run a preemptible session: {self.no_requeue}.",
                hint="Start without --preemptible (or set `preemptible = false` in the profile).",
            )

    def check_request(self, resources: Resources) -> None:
        """Refuse, before anything is submitted, what this scheduler cannot do (UsageError, exit 2)."""
        what = self.title or self.name
        if resources.time_min is not None and not self.shrinks_time:
            raise UsageError(
                f"{what} has nothing like --time-min.", hint="Leave --time-min out, or ask for less --time."
            )
        if len(resources.partitions) > 1 and not self.picks_partition:
            raise UsageError(
                f"{what} takes one partition (queue) per job, not {resources.partition}.", hint="Give one --partition."
            )

    #: Address Jupyter binds to, when the adapter knows better than the node's name (local: loopback).
    bind_address: str | None = None
    #: What a whole job id looks like (matched with fullmatch). Ids come back from session.json, which
    #: anyone with the account can edit: only a string of this form may reach a scheduler command.
    job_id_pattern: re.Pattern[str] = re.compile(r"[0-9]{1,20}")

    def is_job_id(self, job_id: object) -> TypeGuard[str]:
        """Whether `job_id` is a whole job id of this scheduler (a string, nothing around it)."""
        return isinstance(job_id, str) and self.job_id_pattern.fullmatch(job_id) is not None

    def check_job_id(self, job_id: object) -> str:
        """`job_id` if it is a job id of this scheduler; a UsageError otherwise (`--me` would be an option)."""
        if self.is_job_id(job_id):
            return job_id
        raise UsageError(
            f"job id {job_id!r} is not a {self.name.capitalize()} job id.",
            hint="The session's session.json is damaged: cancel its job by hand if one runs, then `hpcjup prune`.",
        )

    @abstractmethod
    def render(self, spec: JobSpec) -> str:
        """The job script for `spec`: directives, `job_environment(spec)`, `umask 077`, spec.setup, exec_line."""

    def job_environment(self, spec: JobSpec) -> list[str]:
        """The `export HPCJUP_...=...` lines of the job script (see hpcjup.job.ENV_*): the launcher reads only these."""
        raise NotImplementedError

    def submit_worker(self, transport: Transport, script: str) -> str:
        """Submit one rendered worker-group job script (dask-jobqueue's); its job id. Raises SubmitError."""
        raise UsageError(f"{self.title or self.name} has no worker jobs.", hint="Worker groups need a batch system.")

    def worker_job_options(
        self,
        partition: str,
        account: str | None,
        walltime: str,
        *,
        directives: Sequence[str] = (),
        cores: int | None = None,
        memory: str | None = None,
    ) -> dict[str, object]:
        """The dask-jobqueue job class's keyword arguments for a worker job: where it runs (`worker_placement`,
        the adapter's) and, after the adapter's own extra directives, the session's `directives` (what the
        worker needs as much as the session's job)."""
        options = self.worker_placement(partition, account, walltime, cores=cores, memory=memory)
        own = options.pop("job_extra_directives", [])
        extra = [*(own if isinstance(own, list) else []), *directives]
        return {**options, "job_extra_directives": extra} if extra else options

    def worker_placement(
        self, partition: str, account: str | None, walltime: str, *, cores: int | None, memory: str | None
    ) -> dict[str, object]:
        """Where a worker job runs, in the job class's words: queue, account, walltime (and any extra directives
        of the adapter's own); `cores` and `memory` for a dialect that places them itself (NCI Gadi)."""
        return {"queue": partition, "account": account, "walltime": walltime}

    def doctor_checks(self, transport: Transport, settings: Resolved) -> list[Check]:
        """The scheduler's own `doctor` checks (hpcjup.schedulers.checks.Check objects): commands, queue, account, request."""
        return []

    #: sh that submits `job.sh` (run in the session directory, umask 077) and prints what `parse_submission`
    #: reads. A command line of its own, so the session layer can run it in the same remote command as the upload.
    submit_command: str = ""

    @abstractmethod
    def parse_submission(self, stdout: str, stderr: str) -> str:
        """The job id in what `submit_command` printed; SubmitError if there is none."""

    def refusal(self, exc: RemoteCommandError) -> SubmitError:
        """A refused submission (`submit_command` failed) in the scheduler's own words, with a hint for it."""
        return SubmitError(f"{self.title or self.name} refused the job: {exc.stderr.strip() or exc.stdout.strip()}")

    def submit(self, transport: Transport, session_dir: str) -> str:
        """Submit the session's job script on its own; return the job id. Raises SubmitError."""
        script = 'cd "$1" && umask 077 && ' + self.submit_command
        try:
            result = transport.run(["sh", "-c", script, "sh", session_dir], timeout=60)
        except RemoteCommandError as exc:
            raise self.refusal(exc) from exc
        return self.parse_submission(result.stdout, result.stderr)

    @abstractmethod
    def status(self, transport: Transport, job_id: str) -> JobStatus:
        """The job's current state (GONE when the scheduler forgot it)."""

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Several jobs' states (adapters override this with one query)."""
        return {job_id: self.status(transport, job_id) for job_id in job_ids}

    # -- sh snippets, so that the session layer can end many jobs in one remote command ---------------
    def stop_snippet(self, running: Sequence[str], pending: Sequence[str]) -> str:
        """sh that asks `running` jobs to end gracefully (SIGTERM to the launcher) and cancels `pending` ones."""
        raise NotImplementedError

    def kill_snippet(self, job_ids: Sequence[str]) -> str:
        """sh that ends these jobs at once."""
        raise NotImplementedError

    def leftovers_snippet(self, session_dir: str) -> str:
        """sh that ends what a session whose launcher is gone left running (no batch system ends it: `--local`,
        `--scheduler none`); empty where the scheduler's own end of the job takes all of it."""
        return ""

    def cancel_own_snippet(self, jobs: Mapping[str, str]) -> str:
        """sh that cancels those of these recorded (worker) jobs, {id: the name prefix hpcjup gave it}, that are
        still active, the user's own and still named so (`cancel_named`), printing `hpcjup-cancelled ID` for each
        and `hpcjup-spared ID` for one under another name; empty where the scheduler has no worker jobs."""
        return ""

    # -- start --dry-run -------------------------------------------------------------------------------
    def preview_snippet(self, script: str, partitions: Sequence[str | None]) -> str:
        """sh that asks the scheduler about `script` in each partition (None: its default) without submitting
        anything, and prints framed sections for `parse_preview`; empty when `previews_start` is False."""
        return ""

    def parse_preview(self, stdout: str, partitions: Sequence[str | None]) -> list[PartitionPreview]:
        """One preview per partition from what `preview_snippet` printed (the default: no estimate, plainly)."""
        note = f"no start estimate on {self.title or self.name}"
        return [PartitionPreview(name, note=note) for name in partitions]

    def ids(self, job_ids: Sequence[str]) -> list[str]:
        """The valid ones of `job_ids` (anything else never reaches a command line)."""
        return [job_id for job_id in job_ids if self.is_job_id(job_id)]

    def never_starts(self, status: JobStatus) -> tuple[str, str] | None:
        """(what is wrong, which flag to change) when a pending job waits for something that will not come
        (a partition limit, an unknown account, a hold by an admin); None while waiting may still help."""
        return None

    @abstractmethod
    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        """Ask the job to end: gracefully (SIGTERM to the launcher) or at once."""

    @staticmethod
    def exec_line(command: Sequence[str]) -> str:
        """The script's last line: replace the shell with the launcher, so signals reach it."""
        return "exec " + shlex.join(command)
