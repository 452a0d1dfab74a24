"""Slurm: `sbatch --parsable`, `squeue` (then `sacct`) for state, `scancel` to stop, `srun` on each node.

The sh it sends is slurm_sh.py's, what it reads is slurm_parse.py's, its doctor's account and request
checks are slurm_doctor.py's.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from hpcjup import job
from hpcjup.errors import RemoteCommandError, SubmitError
from hpcjup.job import JOB_LOG, JOB_SCRIPT
from hpcjup.schedulers import slurm_sh
from hpcjup.schedulers.base import JobSpec, JobStatus, PartitionPreview, Scheduler
from hpcjup.schedulers.queues import Queue, Queues, check_queue
from hpcjup.schedulers.shell import FRAME
from hpcjup.schedulers.slurm_doctor import check_account, check_request
from hpcjup.schedulers.slurm_parse import _parse_squeue as _parse_squeue
from hpcjup.schedulers.slurm_parse import _seconds as _seconds
from hpcjup.schedulers.slurm_parse import never_starts, parse_preview, parse_statuses, submit_error
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.checks import Check

# One worker process on one host of the allocation; --overlap: the batch step holds the first node's CPUs too.
_LAUNCH = (
    "srun --overlap --nodes=1 --ntasks=1 -w {host} --cpus-per-task={cpus} --kill-on-bad-exit=0 --job-name=dask-worker"
)


class Slurm(Scheduler):
    """The Slurm adapter."""

    name = "slurm"
    title = "Slurm"
    requeues = True  # --requeue; PreemptMode=REQUEUE sends SIGTERM, then requeues the job under its id
    commands = ("sbatch", "squeue", "scancel")
    jobqueue = ("slurm", "SLURMJob")
    signals_before_limit = True  # --signal=B:USR1@N
    estimates_start = True  # squeue's %S for pending jobs
    shrinks_time = True  # --time-min: backfill may start the job with a shorter limit
    picks_partition = True  # -p a,b: the job runs in the first that can start it
    previews_start = True  # sbatch --test-only: Slurm's own start estimate, nothing submitted
    directive = "#SBATCH"
    shebang = "#!/bin/bash -l"
    #: 123, an array task 123_4, a heterogeneous job's component 123+1.
    job_id_pattern = re.compile(r"[0-9]{1,20}(?:_[0-9]{1,10}|\+[0-9]{1,10})?")
    # --batch --signal=TERM: only the batch shell (the launcher) is told, and it shuts Jupyter down.
    signal_command = ("scancel", "--batch", "--signal=TERM", "--")
    cancel_command = ("scancel", "--")
    worker_submit = 'sbatch --parsable "$1"'
    queue_word = "partition"
    lists_queues = "sinfo -s"

    def directives(self, spec: JobSpec) -> list[str]:
        res = spec.resources
        options = [
            ("job-name", f"hpcjup-{spec.name}"),
            ("output", JOB_LOG),  # relative to the submit directory: the session directory
            ("partition", res.partition),
            ("account", res.account),
            ("time", res.time),
            ("time-min", res.time_min),
            ("nodes", str(res.nodes)),
            ("ntasks-per-node", "1"),
            ("cpus-per-task", str(res.cpus) if res.cpus else None),
            ("mem", res.mem),
            ("gpus", res.gpus),
            # B: signal only the batch shell, which is the launcher (the script execs it).
            ("signal", f"B:USR1@{spec.warn_seconds}" if spec.warn_seconds else None),
        ]
        lines = [f"--{key}={value}" for key, value in options if value is not None]
        # Requeued only when asked (start --preemptible: the launcher then starts again in the same directory);
        # else never (Scheduler.directives). A --directive after it wins.
        return [*lines, "--requeue" if spec.requeue else "--no-requeue"]

    def environment(self, spec: JobSpec) -> Mapping[str, str]:
        res = spec.resources

        def given(value: str | None, variable: str) -> str:  # the request, else what Slurm chose
            return shlex.quote(value) if value and "," not in value else f'"${{{variable}:-}}"'

        return {
            job.ENV_SCHEDULER: self.name,
            job.ENV_JOB_ID: '"$SLURM_JOB_ID"',
            job.ENV_NODE: '"${SLURMD_NODENAME:-$(hostname -s)}"',
            # Each host once, this one first (the batch step runs on the allocation's first node).
            job.ENV_NODELIST: f'"${job.ENV_NODE} $(scontrol show hostnames "$SLURM_JOB_NODELIST" '
            f"2>/dev/null | grep -vxF -e \"${job.ENV_NODE}\" | tr '\\n' ' ')\"",
            job.ENV_CPUS: '"${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-$(nproc)}}"',
            # --mem (MB per node) or --mem-per-cpu (MB, times the CPUs here); Slurm sets one of them when it
            # enforces memory. envlocal.sh keeps its RAM copies within a quarter of it.
            job.ENV_MEMORY_KB: '"$(if [ -n "${SLURM_MEM_PER_NODE:-}" ]; then echo $((SLURM_MEM_PER_NODE * 1024)); '
            'elif [ -n "${SLURM_MEM_PER_CPU:-}" ]; then echo $((SLURM_MEM_PER_CPU * ${SLURM_CPUS_ON_NODE:-1} * 1024)); fi)"',
            job.ENV_LAUNCH: shlex.quote(_LAUNCH),
            job.ENV_TIME_LIMIT: str(slurm_sh.GRANTED_LIMIT if res.time_min else res.time_seconds or 0),
            job.ENV_WARN_SIGNAL: "1",  # --signal above; without it Slurm ends the job at the limit itself
            job.ENV_WARN_SECONDS: str(spec.warn_seconds or 0),
            job.ENV_RESTARTS: '"${SLURM_RESTART_COUNT:-0}"',  # a requeued job's runs before this one
            job.ENV_PARTITION: given(res.partition, "SLURM_JOB_PARTITION"),
            job.ENV_ACCOUNT: given(res.account, "SLURM_JOB_ACCOUNT"),
            job.ENV_JOBQUEUE: "slurm",
            job.ENV_SUBMIT: "sbatch",
            # A job submitted from inside this one would inherit its SLURM_* (node list, CPU counts) and
            # fail or land in the wrong shape; SLURM_CONF says which cluster, and stays.
            job.ENV_SCRUB: "SLURM_",
            job.ENV_SCRUB_KEEP: "SLURM_CONF",
        }

    # Run in the session directory: the job's working directory and its relative --output. The umask
    # (077): Slurm creates the job's log with the submitter's umask; the log is private.
    submit_command = f"sbatch --parsable {JOB_SCRIPT}"
    refusal = staticmethod(submit_error)

    def parse_submission(self, stdout: str, stderr: str) -> str:
        # --parsable prints "id" or "id;cluster"; the id goes on later command lines, so it must be one.
        last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        job_id = last.split(";", 1)[0]
        if not self.is_job_id(job_id):
            raise SubmitError(
                f"sbatch printed no job id: {stdout.strip()[:200]!r} {stderr.strip()[:200]!r}",
                hint="Check `sbatch --parsable` on the login node.",
            )
        return job_id

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One remote command for all jobs: squeue, and sacct for those squeue no longer shows."""
        wanted = self.ids(job_ids)
        if not wanted:
            return parse_statuses("", job_ids, wanted)
        fields = [slurm_sh.SQUEUE_FORMAT, f"JobIDRaw,{slurm_sh.SACCT_FIELDS}", FRAME]
        result = transport.run(["sh", "-c", slurm_sh.STATUSES, "sh", ",".join(wanted), *fields], check=False)
        if result.returncode != 0:
            raise RemoteCommandError(["squeue", "-j", ",".join(wanted)], result.returncode, "", result.stderr)
        return parse_statuses(result.stdout, job_ids, wanted)

    def own_jobs(self, job_ids: Sequence[str]) -> str:
        # --jobs=: the option's argument is optional, so `-j ID` would not be read as one. --me: never
        # another user's job. %j is the whole name (no width given). Older Slurm refuses the whole list for
        # one id it has forgotten: then the user's own jobs, all of them. An array job shows as its tasks;
        # scancel takes the array's id.
        listed = shlex.quote(",".join(job_ids))
        return (
            f"hpcjup_q=$(bounded squeue -h --me --jobs={listed} -o '%i %j' 2>&1) || "
            "case $hpcjup_q in (*'Invalid job id'*) hpcjup_q=$(bounded squeue -h --me -o '%i %j' 2>&1) ;; esac; "
            "printf '%s\\n' \"$hpcjup_q\" | sed 's/^\\([0-9][0-9]*\\)_[^ ]*/\\1/'"
        )

    def never_starts(self, status: JobStatus) -> tuple[str, str] | None:
        return never_starts(status)

    def preview_snippet(self, script: str, partitions: Sequence[str | None]) -> str:
        """sinfo once, then `sbatch --test-only` with the script on stdin for each partition (nothing is submitted)."""
        return "set -- " + shlex.join([script, *(p or "" for p in partitions)]) + slurm_sh.PREVIEW

    def parse_preview(self, stdout: str, partitions: Sequence[str | None]) -> list[PartitionPreview]:
        return parse_preview(stdout, partitions)

    def queues(self, transport: Transport, wanted: str | None) -> Queues:
        """sinfo's partitions: each with its availability and time limit, the default marked with "*"."""
        from hpcjup.schedulers.checks import first_line

        result = transport.run(["sinfo", "-h", "-o", "%P|%a|%l"], check=False)
        if result.returncode != 0:
            return Queues(error=f"sinfo failed: {first_line(result.stderr)}")
        found: dict[str, Queue] = {}
        for line in result.stdout.splitlines():
            name, avail, limit = ([*line.strip().split("|"), "", ""])[:3]
            default = name.endswith("*")
            found.setdefault(name.rstrip("*"), Queue(name.rstrip("*"), avail, limit or None, default))
        return Queues(list(found.values()))

    def request_checks(self) -> dict[str, Callable[[Transport, Resolved], Check]]:
        return {"account": check_account, "request": check_request}


def check_partition(transport: Transport, resolved: Resolved) -> Check:
    """Slurm's queue check: the partition exists, is up, and allows the requested time (queues.check_queue)."""
    return check_queue(Slurm(), transport, resolved)
