"""What every scheduler adapter provides: render a job, submit it, ask its state, cancel it.

An adapter (`hpcjup/schedulers/NAME.py`, one registry line in `__init__.py`) is the only place that
knows a batch system: its commands, directives, time/memory/GPU formats, state words, pending
reasons that never clear, how it passes the environment, how it warns before the time limit, how it
starts one process per node, which dask-jobqueue job class renders its worker jobs, its doctor
checks, and the hints for its refusals. The session layer drives it through this interface, and
the job side learns everything from the `HPCJUP_*` variables the rendered script exports
(`hpcjup.job.ENV_*`, written by `job_environment`).

`Scheduler` is a template: an adapter declares its commands and states and fills in a few hooks, and
the base does the rest the same way for every batch system. The job script is `render`: the adapter's
`directives(spec)` (then the user's own), its `preamble(spec)`, the job's `environment(spec)` as a
mapping that must name exactly the contract's variables, `umask 077`, the setup lines, the launcher.
`status` is one job of `statuses`; a graceful stop, a kill and `cancel` run the declared
`signal_command` and `cancel_command`; the doctor's queue check (schedulers/queues.py) judges what the
adapter's `queues()` lists.

Know before you submit (`hpcjup start --dry-run`): an adapter with `previews_start = True` writes
`preview_snippet(script, partitions)`, POSIX sh that asks everything in ONE remote command (the
scheduler's own verdict on the rendered script for each partition, the partitions' limits and free
nodes) and prints framed sections, and `parse_preview(stdout, partitions)` turns that output into one
`PartitionPreview` per partition (any text: previews, or an HpcjupError; never another exception);
`FRAME` and `sections()` (schedulers/shell.py) frame and read such output.
Without it, each partition gets a `note` saying there is no start estimate on that scheduler.
"""

from __future__ import annotations

import functools
import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeGuard

from hpcjup.config.resources import Resources
from hpcjup.errors import HpcjupError, RemoteCommandError, SubmitError, UsageError
from hpcjup.job import JOB_LOG as JOB_LOG  # the job contract's (hpcjup/job/contract.py); here for older imports
from hpcjup.job import JOB_SCRIPT as JOB_SCRIPT
from hpcjup.job import contract
from hpcjup.schedulers.preview import PartitionPreview as PartitionPreview  # `start --dry-run`'s answer
from hpcjup.schedulers.shell import cancel_named
from hpcjup.schedulers.states import JobState as JobState
from hpcjup.schedulers.states import JobStatus as JobStatus
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.checks import Check
    from hpcjup.schedulers.queues import Queues

#: The job's environment, every name the launcher reads, in the contract's order (hpcjup/job/contract.py ENV_*).
JOB_ENVIRONMENT = tuple(value for key, value in vars(contract).items() if key.startswith("ENV_"))


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
    #: The job script's first line, and where the job runs (its comment line).
    shebang: str = "#!/bin/bash"
    runs_on: str = "a compute node"
    #: Asks a running job to end: SIGTERM to the launcher, which shuts Jupyter down and so ends the job (ids follow).
    signal_command: tuple[str, ...] = ()
    #: Cancels jobs outright: pending ones, and every kill (ids follow).
    cancel_command: tuple[str, ...] = ()
    #: What follows those commands in a snippet: the session layer reads nothing of theirs.
    quiet: str = " 2>/dev/null"
    #: sh that submits a worker-group job script whose path is "$1" (dask-jobqueue's); "": no worker jobs.
    worker_submit: str = ""
    #: The doctor's queue check: its name, the scheduler's word for a queue, and the command that lists them.
    queue_check: str = "partition"
    queue_word: str = "queue"
    lists_queues: str = ""

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

    def ids(self, job_ids: Sequence[str]) -> list[str]:
        """The valid ones of `job_ids` (anything else never reaches a command line)."""
        return [job_id for job_id in job_ids if self.is_job_id(job_id)]

    # -- the job script ------------------------------------------------------------------------------
    def render(self, spec: JobSpec) -> str:
        """The job script for `spec`: directives (hpcjup's, then the user's), the preamble, the job's environment,
        `umask 077`, spec.setup, and the launcher in the shell's place."""
        lines = [self.shebang, f"# hpcjup session {spec.name}: JupyterLab on {self.runs_on}."]
        if self.directive:
            lines += [f"{self.directive} {option}" for option in self.directives(spec)]
            # The user's own options come last (--directive, a profile's `directives`): the batch system keeps them.
            lines += [f"{self.directive} {option}" for option in spec.resources.directives]
            lines.append("")
        lines += [*self.preamble(spec), *self.job_environment(spec), "umask 077", *spec.setup]
        return "\n".join([*lines, self.exec_line(spec.command), ""])

    def directives(self, spec: JobSpec) -> list[str]:
        """hpcjup's own directives for `spec`, each without the prefix (`directive`); the values are validated by
        Resources. One of them makes the job not requeueable: a rerun would write into a session directory that
        `prune` removed or a new session of the same name holds."""
        return []

    def preamble(self, spec: JobSpec) -> list[str]:
        """sh lines before the job's environment (where the job starts, where its output goes)."""
        return []

    def environment(self, spec: JobSpec) -> Mapping[str, str]:
        """The job's environment: each contract name (hpcjup.job.ENV_*) with its value as a sh word (quoted, or an
        expansion of the batch system's own variables). A value may use the names before it in the contract."""
        raise NotImplementedError

    def job_environment(self, spec: JobSpec) -> list[str]:
        """The `export HPCJUP_...=...` lines of the job script: the launcher reads only these."""
        values = self.environment(spec)
        missing = [name for name in JOB_ENVIRONMENT if name not in values]
        unknown = sorted(set(values) - set(JOB_ENVIRONMENT))
        if missing or unknown:  # the launcher would read an unset name, or the adapter spells one wrong
            raise HpcjupError(
                f"The {self.title or self.name} adapter's job environment does not match the job contract "
                f"(missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'}).",
                hint="A bug in hpcjup: please report it.",
            )
        return [f"export {name}={values[name]}" for name in JOB_ENVIRONMENT]

    @staticmethod
    def exec_line(command: Sequence[str]) -> str:
        """The script's last line: replace the shell with the launcher, so signals reach it."""
        return "exec " + shlex.join(command)

    # -- submission ------------------------------------------------------------------------------------
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
        return self._submit(transport, 'cd "$1" && umask 077 && ' + self.submit_command, session_dir)

    def submit_worker(self, transport: Transport, script: str) -> str:
        """Submit one rendered worker-group job script (dask-jobqueue's; its path on the cluster); its job id."""
        if not self.worker_submit:
            raise UsageError(
                f"{self.title or self.name} has no worker jobs.", hint="Worker groups need a batch system."
            )
        return self._submit(transport, "umask 077 && exec " + self.worker_submit, script)

    def _submit(self, transport: Transport, script: str, path: str) -> str:
        try:
            result = transport.run(["sh", "-c", script, "sh", path], timeout=60)
        except RemoteCommandError as exc:
            raise self.refusal(exc) from exc
        return self.parse_submission(result.stdout, result.stderr)

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

    # -- state -----------------------------------------------------------------------------------------
    def status(self, transport: Transport, job_id: str) -> JobStatus:
        """The job's current state (GONE when the scheduler forgot it); an id not of this scheduler's form is refused."""
        job_id = self.check_job_id(job_id)  # a command's option takes the next word whatever it is
        return self.statuses(transport, [job_id])[job_id]

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Several jobs' states in one remote command; an id that is not a job id is GONE and reaches no command."""
        raise NotImplementedError

    def _queried(
        self,
        transport: Transport,
        job_ids: Sequence[str],
        query: Sequence[str],
        forgotten: str,
        parse: Callable[[str, Sequence[str]], Mapping[str, JobStatus]],
    ) -> dict[str, JobStatus]:
        """`statuses` by one query of all jobs (`query` + the ids): what `parse` reads of its output for each; GONE
        for a job it does not show, and for all when the scheduler only says it forgot them (`forgotten`)."""
        found = {job_id: JobStatus(job_id, JobState.GONE) for job_id in job_ids}
        ids = self.ids(job_ids)
        result = transport.run([*query, *ids], check=False) if ids else None
        if result is None or not result.stdout.strip():
            if result is not None and result.returncode != 0 and forgotten not in result.stderr:
                raise RemoteCommandError([*query, *ids], result.returncode, result.stdout, result.stderr)
            return found
        return {**found, **{k: v for k, v in parse(result.stdout, ids).items() if k in found}}

    def never_starts(self, status: JobStatus) -> tuple[str, str] | None:
        """(what is wrong, which flag to change) when a pending job waits for something that will not come
        (a partition limit, an unknown account, a hold by an admin); None while waiting may still help."""
        return None

    # -- ending jobs: sh snippets, so that the session layer can end many jobs in one remote command -----
    def _quietly(self, command: Sequence[str], job_ids: Sequence[str]) -> str:
        ids = self.ids(job_ids)
        return shlex.join([*command, *ids]) + self.quiet if ids else ""

    def stop_snippet(self, running: Sequence[str], pending: Sequence[str]) -> str:
        """sh that asks `running` jobs to end gracefully (SIGTERM to the launcher) and cancels `pending` ones."""
        if self.signal_command == self.cancel_command:  # one command does both (Grid Engine's qdel of a -notify job)
            return self._quietly(self.cancel_command, [*running, *pending])
        parts = [self._quietly(self.signal_command, running), self._quietly(self.cancel_command, pending)]
        return "; ".join(part for part in parts if part)

    def kill_snippet(self, job_ids: Sequence[str]) -> str:
        """sh that ends these jobs at once."""
        return self._quietly(self.cancel_command, job_ids)

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        """Ask the job to end: gracefully (SIGTERM to the launcher, while it runs) or at once (a pending job has
        no launcher to tell: it is cancelled)."""
        job_id = self.check_job_id(job_id)
        if graceful and self.status(transport, job_id).state is JobState.RUNNING:
            transport.run([*self.signal_command, job_id], check=False)
            return
        transport.run([*self.cancel_command, job_id], check=False)

    def leftovers_snippet(self, session_dir: str) -> str:
        """sh that ends what a session whose launcher is gone left running (no batch system ends it: `--local`,
        `--scheduler none`); empty where the scheduler's own end of the job takes all of it."""
        return ""

    def own_jobs(self, job_ids: Sequence[str]) -> str:
        """sh printing `ID NAME` for those of `job_ids` that are the user's own and active (one query, under
        shell.BOUNDED's `bounded`); "" where the scheduler has no worker jobs."""
        return ""

    #: An awk regex cut from ids before `cancel_own_snippet` compares them (PBS: the server part).
    own_jobs_cut: str = ""

    def cancel_own_snippet(self, jobs: Mapping[str, str]) -> str:
        """sh that cancels those of these recorded (worker) jobs, {id: the name prefix hpcjup gave it}, that are
        still active, the user's own and still named so (`cancel_named`), printing `hpcjup-cancelled ID` for each
        and `hpcjup-spared ID` for one under another name; empty where the scheduler has no worker jobs."""
        ids = self.ids(list(jobs))
        listing = self.own_jobs(ids) if ids else ""
        if not listing:
            return ""
        cancel = shlex.join(self.cancel_command)
        return cancel_named({job_id: jobs[job_id] for job_id in ids}, listing, cancel, cut=self.own_jobs_cut)

    # -- start --dry-run -------------------------------------------------------------------------------
    def preview_snippet(self, script: str, partitions: Sequence[str | None]) -> str:
        """sh that asks the scheduler about `script` in each partition (None: its default) without submitting
        anything, and prints framed sections for `parse_preview`; empty when `previews_start` is False."""
        return ""

    def parse_preview(self, stdout: str, partitions: Sequence[str | None]) -> list[PartitionPreview]:
        """One preview per partition from what `preview_snippet` printed (the default: no estimate, plainly)."""
        note = f"no start estimate on {self.title or self.name}"
        return [PartitionPreview(name, note=note) for name in partitions]

    # -- doctor ----------------------------------------------------------------------------------------
    def queues(self, transport: Transport, wanted: str | None) -> Queues:
        """What the scheduler lists of its queues, in one remote command (all of them, or only `wanted`)."""
        from hpcjup.schedulers.queues import Queues

        return Queues(complete=False)

    def request_checks(self) -> dict[str, Callable[[Transport, Resolved], Check]]:
        """The adapter's own doctor checks after the queue's, by name (the account, the whole request)."""
        return {}

    def doctor_checks(self, transport: Transport, settings: Resolved) -> list[Check]:
        """The scheduler's `doctor` checks (hpcjup.schedulers.checks.Check): its commands on the PATH, the queue
        (queues.check_queue), then `request_checks`; each skipped when the commands are missing."""
        from hpcjup.schedulers.checks import Check, Status, check_commands
        from hpcjup.schedulers.queues import check_queue

        if not self.commands:  # no batch system: nothing of its own to check
            return []
        named: dict[str, Callable[[Transport, Resolved], Check]] = {
            self.queue_check: functools.partial(check_queue, self)
        }
        named.update(self.request_checks())
        checks = [check_commands(transport, self)]
        if checks[0].status is not Status.PASS:
            skip = f"not checked: no {self.title or self.name} commands"
            return [*checks, *(Check(name, Status.SKIP, skip) for name in named)]
        return [*checks, *(check(transport, settings) for check in named.values())]
