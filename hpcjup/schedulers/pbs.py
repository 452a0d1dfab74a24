"""PBS Pro / OpenPBS: `qsub` prints the id, `qstat -f -F json -x` for state, `qsig`/`qdel` to stop.

What differs from Slurm: no signal before the walltime (the launcher's own timer shuts down in
time), the job starts in the home directory (`cd "$PBS_O_WORKDIR"`), no environment is passed
without `-V` (the script exports what the job needs), output is spooled unless kept with direct
write (`-k oed`), and `qstat` reports an expected start (`estimated.start_time`) where the site's
scheduler computes one (calendaring / backfill). `--time-min` becomes a shrink-to-fit job
(`min_walltime`/`max_walltime`, PBS Pro 13 and later): the scheduler sets the walltime when it
starts the job, which reads it back from `qstat -f`. Parsers: pbs_parse.py.
NCI Gadi's PBS takes job-wide resources and `-P` (pbs_nci.py, registered as "pbs-nci").
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from hpcjup import job
from hpcjup.config.resources import Resources, time_to_seconds
from hpcjup.errors import HpcjupError
from hpcjup.job import JOB_LOG, JOB_SCRIPT
from hpcjup.schedulers.base import JobSpec, JobStatus, Scheduler
from hpcjup.schedulers.pbs_parse import (
    JOB_ID,
    gpu_chunk,
    hms,
    hopeless,
    parse_qstat,
    parse_qsub,
    parse_queues,
    pbs_memory,
    submit_error,
    table,
    time_options,
)
from hpcjup.schedulers.queues import Queue, Queues
from hpcjup.transport.base import Transport

_QSTAT = ["qstat", "-f", "-F", "json", "-x"]
# awk: `ID NAME` for each of the user's unfinished jobs in `qstat -f -F json` (one attribute a line; a job
# opens with its id as a key, `"1234.server":{`, the only keys that start with a digit).
_OWN_JOBS = r"""
function val(line) { sub(/^[^:]*:[ \t]*"/, "", line); sub(/"[ \t]*,?[ \t]*$/, "", line); return line }
function emit() { if (id != "" && state != "F" && index(owner, user "@") == 1) print id, name; id = "" }
/^[ \t]*"[0-9][^"]*"[ \t]*:[ \t]*\{/ { emit(); id = $0; sub(/^[ \t]*"/, "", id); sub(/".*/, "", id); name = owner = state = ""; next }
/^[ \t]*"Job_Name"[ \t]*:/ { name = val($0) }
/^[ \t]*"Job_Owner"[ \t]*:/ { owner = val($0) }
/^[ \t]*"job_state"[ \t]*:/ { state = val($0) }
END { emit() }
"""
# The walltime PBS granted this job, in seconds (0 if qstat cannot tell), read in the job: `qstat -f` (text)
# shows Resource_List.walltime once the job runs, also for a shrink-to-fit job and a queue's default.
_GRANTED = (
    "$(qstat -f \"$PBS_JOBID\" 2>/dev/null | sed -n 's/^ *Resource_List.walltime = //p' "
    "| awk -F: 'NF == 3 && !s { s = ($1 * 60 + $2) * 60 + $3 } END { print s + 0 }')"
)


class PBSPro(Scheduler):
    """The PBS Pro / OpenPBS adapter."""

    name = "pbs"
    title = "PBS Pro"
    requeues = True  # -r y; preempt_order R requeues a rerunnable job
    directive = "#PBS"
    commands = ("qsub", "qstat", "qdel", "qsig")
    jobqueue = ("pbs", "PBSJob")
    signals_before_limit = False  # no `--signal`: the launcher's own timer
    estimates_start = True  # estimated.start_time, where the scheduler computes one
    shrinks_time = True  # shrink-to-fit: -l min_walltime=...,max_walltime=...
    job_id_pattern = JOB_ID
    # qsig -s TERM signals the job's processes and leaves the job alone: the launcher shuts down and
    # exits, which ends the job. qdel would add SIGKILL after the queue's kill_delay (10 s by default).
    signal_command = ("qsig", "-s", "TERM")
    cancel_command = ("qdel",)
    worker_submit = 'qsub "$1"'
    own_jobs_cut = "[.].*"  # compared on the number: qsub may print a shorter server name than qstat
    lists_queues = "qstat -Q"
    #: Resources as select= chunks, one per node (PBS Pro's way); False: job-wide ncpus/mem/ngpus (NCI Gadi's).
    chunks = True
    #: The option that charges a project: -A (PBS Pro's Account_Name); NCI Gadi takes -P.
    project_flag = "-A"

    # -- the job script -----------------------------------------------------------------------
    def directives(self, spec: JobSpec) -> list[str]:
        res = spec.resources
        options = [
            ("-N", f"hpcjup-{spec.name}"),
            ("-o", JOB_LOG),  # relative to qsub's directory: the session directory
            ("-j", "oe"),
            # direct write: the log grows while the job runs (PBS Pro >= 19), else it is copied at the end
            ("-k", "oed"),
            *self.resource_options(res),
            *time_options(res),
            ("-q", res.partition) if res.partition else None,
            (self.project_flag, res.account) if res.account else None,
            # rerunnable only when asked (start --preemptible), else not: a rerun would write into a session directory
            # pruned or reused since
            ("-r", "y" if spec.requeue else "n"),
        ]
        return [f"{flag} {value}" for flag, value in (option for option in options if option)]

    def preamble(self, spec: JobSpec) -> list[str]:
        # PBS starts the job in the home directory; without -V nothing of the submitting shell arrives.
        return ['cd "$PBS_O_WORKDIR" || exit 1']

    def resource_options(self, res: Resources) -> list[tuple[str, str] | None]:
        """The -l lines for nodes, CPUs, memory and GPUs: one chunk per node, scattered over hosts."""
        chunk = [str(res.nodes)]
        chunk += [f"ncpus={res.cpus}"] if res.cpus else []
        chunk += [f"mem={pbs_memory(res.mem)}"] if res.mem else []
        chunk += gpu_chunk(res.gpus)
        # place=scatter: one chunk per host, so one launcher process per node
        return [("-l", "select=" + ":".join(chunk)), ("-l", "place=scatter") if res.nodes > 1 else None]

    def cpus_per_node(self) -> str:
        """sh: the CPUs the job has on each node (PBS sets NCPUS to the chunk's ncpus)."""
        return '"${NCPUS:-1}"'

    def environment(self, spec: JobSpec) -> Mapping[str, str]:
        res = spec.resources
        # Asked for exactly: that is the limit. Shrink-to-fit or the queue's default: what PBS granted.
        limit = str(time_to_seconds(res.time)) if res.time and not res.time_min else f'"{_GRANTED}"'
        return {
            job.ENV_SCHEDULER: self.name,
            job.ENV_JOB_ID: '"$PBS_JOBID"',
            # PBS_NODEFILE: one line per MPI rank, mother superior (this node) first, hosts as PBS names them.
            job.ENV_NODE: '"$(head -n 1 "$PBS_NODEFILE" 2>/dev/null || hostname -s)"',
            job.ENV_NODELIST: "\"$(awk '!seen[$0]++' \"$PBS_NODEFILE\" 2>/dev/null | tr '\\n' ' ' | sed 's/ $//')\"",
            job.ENV_CPUS: self.cpus_per_node(),
            job.ENV_MEMORY_KB: '""',  # not said: its cgroup's limit bounds it, where it has one
            job.ENV_LAUNCH: shlex.quote("pbsdsh -h {host} --"),
            job.ENV_TIME_LIMIT: limit,
            job.ENV_WARN_SIGNAL: '""',  # PBS sends nothing before the walltime: the launcher's timer
            job.ENV_WARN_SECONDS: str(spec.warn_seconds or 0),
            job.ENV_RESTARTS: "''",  # not given: the launcher counts runs from the state.json before
            job.ENV_PARTITION: '"${PBS_QUEUE:-}"',
            job.ENV_ACCOUNT: shlex.quote(res.account or ""),  # PBS exports no variable for -A
            job.ENV_JOBQUEUE: "pbs",
            job.ENV_SUBMIT: "qsub",
            job.ENV_SCRUB: '""',  # qsub reads no PBS_* variable of the surrounding job; worker jobs get no -V
            job.ENV_SCRUB_KEEP: '""',
        }

    # -- submission ---------------------------------------------------------------------------
    # Run in the session directory: the relative -o and $PBS_O_WORKDIR; the umask (077) keeps the log private.
    submit_command = f"qsub {JOB_SCRIPT}"
    refusal = staticmethod(submit_error)

    def parse_submission(self, stdout: str, stderr: str) -> str:
        return parse_qsub(stdout, stderr)

    def worker_placement(
        self, partition: str, account: str | None, walltime: str, *, cores: int | None, memory: str | None
    ) -> dict[str, object]:
        """PBSJob's queue, account and walltime (H:MM:SS); `cores`/`memory` are PBSJob's own select= here."""
        return {"queue": partition, "account": account, "walltime": hms(time_to_seconds(walltime))}

    # -- state ----------------------------------------------------------------------------------
    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One `qstat -f -F json -x` for all jobs; a job qstat does not know (history off or expired) is GONE."""
        return self._queried(transport, job_ids, _QSTAT, "Unknown Job Id", parse_qstat)

    def never_starts(self, status: JobStatus) -> tuple[str, str] | None:
        return hopeless(status)

    def own_jobs(self, job_ids: Sequence[str]) -> str:
        # qstat -f -F json (as `statuses` asks; the text form wraps long values): each job's id, Job_Name,
        # Job_Owner (user@host: the user's own only) and job_state (without -x a finished job is not shown;
        # F all the same).
        return f'bounded qstat -f -F json {shlex.join(job_ids)} 2>/dev/null | awk -v user="$(id -un)" {shlex.quote(_OWN_JOBS)}'

    # -- doctor -------------------------------------------------------------------------------------
    def queues(self, transport: Transport, wanted: str | None) -> Queues:
        """The queue asked for (`qstat -Q -f -F json QUEUE`): enabled and started, its walltime limit."""
        if not wanted:
            return Queues(complete=False)
        result = transport.run(["qstat", "-Q", "-f", "-F", "json", wanted], check=False)
        try:
            info = parse_queues(result.stdout).get(wanted)
        except HpcjupError:
            info = None
        if info is None:
            return Queues(error=(result.stderr or result.stdout).strip() or "qstat does not list it", complete=False)
        up = str(info.get("enabled", "True")) == "True" and str(info.get("started", "True")) == "True"
        limit = table(info.get("resources_max")).get("walltime")
        state = "up" if up else "not enabled and started"
        return Queues([Queue(wanted, state, str(limit) if limit else None, takes_jobs=up)], complete=False)
