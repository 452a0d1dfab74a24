"""PBS Pro / OpenPBS: `qsub` prints the id, `qstat -f -F json -x` for state, `qsig`/`qdel` to stop.

What differs from Slurm: no signal before the walltime (the launcher's own timer shuts down in
time), the job starts in the home directory (`cd "$PBS_O_WORKDIR"`), no environment is passed
without `-V` (the script exports what the job needs), output is spooled unless kept with direct
write (`-k oed`), and `qstat` reports an expected start (`estimated.start_time`) where the site's
scheduler computes one (calendaring / backfill). `--time-min` becomes a shrink-to-fit job
(`min_walltime`/`max_walltime`, PBS Pro 13 and later): the scheduler sets the walltime when it
starts the job, which reads it back from `qstat -f`. Parsers: pbs_parse.py.
NCI Gadi's PBS takes job-wide resources and `-P` (`NCIGadi`, registered as "pbs-nci").
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from hpcjup.config.resources import Resources, time_to_seconds
from hpcjup.errors import HpcjupError, RemoteCommandError, SubmitError, UsageError
from hpcjup.job import (
    ENV_ACCOUNT,
    ENV_CPUS,
    ENV_JOB_ID,
    ENV_JOBQUEUE,
    ENV_LAUNCH,
    ENV_NODE,
    ENV_NODELIST,
    ENV_PARTITION,
    ENV_SCHEDULER,
    ENV_SCRUB,
    ENV_SCRUB_KEEP,
    ENV_SUBMIT,
    ENV_TIME_LIMIT,
    ENV_WARN_SECONDS,
    ENV_WARN_SIGNAL,
    JOB_LOG,
    JOB_SCRIPT,
)
from hpcjup.schedulers.base import JobSpec, JobState, JobStatus, Scheduler
from hpcjup.schedulers.pbs_parse import (
    JOB_ID,
    hms,
    hopeless,
    parse_qstat,
    parse_qsub,
    parse_queues,
    submit_error,
    table,
)
from hpcjup.schedulers.shell import cancel_named
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.checks import Check

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
    #: Resources as select= chunks, one per node (PBS Pro's way); False: job-wide ncpus/mem/ngpus (NCI Gadi's).
    chunks = True
    #: The option that charges a project: -A (PBS Pro's Account_Name); NCI Gadi takes -P.
    project_flag = "-A"

    # -- the job script -----------------------------------------------------------------------
    def render(self, spec: JobSpec) -> str:
        res = spec.resources
        options = [
            ("-N", f"hpcjup-{spec.name}"),
            ("-o", JOB_LOG),  # relative to qsub's directory: the session directory
            ("-j", "oe"),
            # direct write: the log grows while the job runs (PBS Pro >= 19), else it is copied at the end
            ("-k", "oed"),
            *self.resource_options(res),
            *_time_options(res),
            ("-q", res.partition) if res.partition else None,
            (self.project_flag, res.account) if res.account else None,
            # rerunnable only when asked (start --preemptible), else not: a rerun would write into a session directory
            # pruned or reused since
            ("-r", "y" if spec.requeue else "n"),
        ]
        lines = ["#!/bin/bash", f"# hpcjup session {spec.name}: JupyterLab on a compute node."]
        lines += [f"{self.directive} {flag} {value}" for flag, value in (o for o in options if o)]
        # The user's own options come last (--directive, a profile's `directives`), as given.
        lines += [f"{self.directive} {directive}" for directive in res.directives]
        # PBS starts the job in the home directory; without -V nothing of the submitting shell arrives.
        lines += ["", 'cd "$PBS_O_WORKDIR" || exit 1', *self.job_environment(spec)]
        lines += ["umask 077", *spec.setup, self.exec_line(spec.command), ""]
        return "\n".join(lines)

    def resource_options(self, res: Resources) -> list[tuple[str, str] | None]:
        """The -l lines for nodes, CPUs, memory and GPUs: one chunk per node, scattered over hosts."""
        chunk = [str(res.nodes)]
        chunk += [f"ncpus={res.cpus}"] if res.cpus else []
        chunk += [f"mem={pbs_memory(res.mem)}"] if res.mem else []
        chunk += _gpu_chunk(res.gpus)
        # place=scatter: one chunk per host, so one launcher process per node
        return [("-l", "select=" + ":".join(chunk)), ("-l", "place=scatter") if res.nodes > 1 else None]

    def cpus_per_node(self) -> str:
        """sh: the CPUs the job has on each node (PBS sets NCPUS to the chunk's ncpus)."""
        return '"${NCPUS:-1}"'

    def job_environment(self, spec: JobSpec) -> list[str]:
        res = spec.resources
        # Asked for exactly: that is the limit. Shrink-to-fit or the queue's default: what PBS granted.
        limit = str(time_to_seconds(res.time)) if res.time and not res.time_min else f'"{_GRANTED}"'
        values = {
            ENV_SCHEDULER: self.name,
            ENV_JOB_ID: '"$PBS_JOBID"',
            # PBS_NODEFILE: one line per MPI rank, mother superior (this node) first, hosts as PBS names them.
            ENV_NODE: '"$(head -n 1 "$PBS_NODEFILE" 2>/dev/null || hostname -s)"',
            ENV_NODELIST: "\"$(awk '!seen[$0]++' \"$PBS_NODEFILE\" 2>/dev/null | tr '\\n' ' ' | sed 's/ $//')\"",
            ENV_CPUS: self.cpus_per_node(),
            ENV_LAUNCH: shlex.quote("pbsdsh -h {host} --"),
            ENV_TIME_LIMIT: limit,
            ENV_WARN_SIGNAL: '""',  # PBS sends nothing before the walltime: the launcher's timer
            ENV_WARN_SECONDS: str(spec.warn_seconds or 0),
            ENV_PARTITION: '"${PBS_QUEUE:-}"',
            ENV_ACCOUNT: shlex.quote(res.account or ""),  # PBS exports no variable for -A
            ENV_JOBQUEUE: "pbs",
            ENV_SUBMIT: "qsub",
            ENV_SCRUB: '""',  # qsub reads no PBS_* variable of the surrounding job; worker jobs get no -V
            ENV_SCRUB_KEEP: '""',
        }
        return [f"export {key}={value}" for key, value in values.items()]

    # -- submission ---------------------------------------------------------------------------
    # Run in the session directory: the relative -o and $PBS_O_WORKDIR; the umask (077) keeps the log private.
    submit_command = f"qsub {JOB_SCRIPT}"

    def parse_submission(self, stdout: str, stderr: str) -> str:
        return parse_qsub(stdout, stderr)

    def refusal(self, exc: RemoteCommandError) -> SubmitError:
        return submit_error(exc)

    def submit_worker(self, transport: Transport, script: str) -> str:
        # `script` is the path of the rendered worker job on the cluster (session/groups.py writes it there).
        try:
            result = transport.run(["sh", "-c", 'umask 077 && exec qsub "$1"', "sh", script], timeout=60)
        except RemoteCommandError as exc:
            raise submit_error(exc) from exc
        return parse_qsub(result.stdout, result.stderr)

    def worker_placement(
        self, partition: str, account: str | None, walltime: str, *, cores: int | None, memory: str | None
    ) -> dict[str, object]:
        """PBSJob's queue, account and walltime (H:MM:SS); `cores`/`memory` are PBSJob's own select= here."""
        return {"queue": partition, "account": account, "walltime": hms(time_to_seconds(walltime))}

    # -- state ----------------------------------------------------------------------------------
    def status(self, transport: Transport, job_id: str) -> JobStatus:
        return self.statuses(transport, [self.check_job_id(job_id)])[job_id]

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One `qstat -f -F json -x` for all jobs; a job qstat does not know (history off or expired) is GONE."""
        found = {job_id: JobStatus(job_id, JobState.GONE) for job_id in job_ids}
        ids = self.ids(job_ids)
        if not ids:
            return found
        result = transport.run([*_QSTAT, *ids], check=False)
        if not result.stdout.strip():
            if result.returncode != 0 and "Unknown Job Id" not in result.stderr:
                raise RemoteCommandError([*_QSTAT, *ids], result.returncode, result.stdout, result.stderr)
            return found
        found.update(parse_qstat(result.stdout, ids))
        return found

    def never_starts(self, status: JobStatus) -> tuple[str, str] | None:
        return hopeless(status)

    # -- ending jobs ------------------------------------------------------------------------------
    def stop_snippet(self, running: Sequence[str], pending: Sequence[str]) -> str:
        # qsig -s TERM signals the job's processes and leaves the job alone: the launcher shuts down and
        # exits, which ends the job. qdel would add SIGKILL after the queue's kill_delay (10 s by default).
        parts = []
        if self.ids(running):
            parts.append(shlex.join(["qsig", "-s", "TERM", *self.ids(running)]) + " 2>/dev/null")
        if self.ids(pending):
            parts.append(shlex.join(["qdel", *self.ids(pending)]) + " 2>/dev/null")
        return "; ".join(parts)

    def kill_snippet(self, job_ids: Sequence[str]) -> str:
        return shlex.join(["qdel", *self.ids(job_ids)]) + " 2>/dev/null" if self.ids(job_ids) else ""

    def cancel_own_snippet(self, jobs: Mapping[str, str]) -> str:
        ids = self.ids(list(jobs))
        if not ids:
            return ""
        # qstat -f -F json (as `statuses` asks; the text form wraps long values): each job's id, Job_Name,
        # Job_Owner (user@host: the user's own only) and job_state (without -x a finished job is not shown;
        # F all the same). Compared on the number, since qsub may print a shorter server name than qstat.
        listing = (
            f'bounded qstat -f -F json {shlex.join(ids)} 2>/dev/null | awk -v user="$(id -un)" {shlex.quote(_OWN_JOBS)}'
        )
        return cancel_named({job_id: jobs[job_id] for job_id in ids}, listing, "qdel", cut="[.].*")

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        job_id = self.check_job_id(job_id)
        if graceful and self.status(transport, job_id).state is JobState.RUNNING:
            transport.run(["qsig", "-s", "TERM", job_id], check=False)
            return
        transport.run(["qdel", job_id], check=False)

    # -- doctor -------------------------------------------------------------------------------------
    def doctor_checks(self, transport: Transport, settings: Resolved) -> list[Check]:
        """PBS's commands, and the queue (--partition) exists and takes jobs."""
        from hpcjup.schedulers.checks import Check, Status, check_commands

        checks = [check_commands(transport, self)]
        if checks[0].status is not Status.PASS:
            return [*checks, Check("partition", Status.SKIP, "not checked: no PBS commands")]
        queue = settings.value("partition")
        if not queue:
            return [*checks, Check("partition", Status.PASS, "none set: the server's default queue")]
        result = transport.run(["qstat", "-Q", "-f", "-F", "json", queue], check=False)
        try:
            info = parse_queues(result.stdout).get(queue)
        except HpcjupError:
            info = None
        if info is None:
            fix = "Run `qstat -Q` on the login node to list the queues, then pass --partition."
            words = (result.stderr or result.stdout).strip() or "qstat does not list it"
            return [*checks, Check("partition", Status.FAIL, f"queue {queue}: {words}", fix=fix)]
        if str(info.get("enabled", "True")) != "True" or str(info.get("started", "True")) != "True":
            fix = "Choose another --partition (`qstat -Q` shows which queues are enabled and started)."
            return [*checks, Check("partition", Status.FAIL, f"queue {queue} is not enabled and started", fix=fix)]
        limit = table(info.get("resources_max")).get("walltime")
        return [*checks, Check("partition", Status.PASS, f"queue {queue} is enabled, walltime limit {limit or 'none'}")]


class NCIGadi(PBSPro):
    """NCI Gadi's PBS Pro: no select= chunks (job-wide ncpus, mem, ngpus; more than one node is whole nodes),
    the project with -P; file systems a job may use with `-l storage=...` (give it with --directive).
    Facts: https://opus.nci.org.au/display/Help/PBS+Directives+Explained (see hpcjup/sites/gadi.toml)."""

    name = "pbs-nci"
    title = "PBS Pro (NCI Gadi)"
    chunks = False
    project_flag = "-P"

    def check_request(self, resources: Resources) -> None:
        super().check_request(resources)
        if resources.nodes > 1 and not resources.cpus:
            raise UsageError(
                f"--nodes {resources.nodes} on Gadi needs --cpus: Gadi takes the job's CPUs in all (ncpus), "
                "whole nodes when more than one.",
                hint="Give the cores of one node, e.g. --cpus 48 in the normal queue (104 in normalsr).",
            )

    def resource_options(self, res: Resources) -> list[tuple[str, str] | None]:
        """Job-wide totals: -l ncpus=, -l mem=, -l ngpus= (Gadi's queues decide the GPU type)."""
        count = res.gpus.rpartition(":")[2] if res.gpus else None
        return [
            ("-l", f"ncpus={res.nodes * res.cpus}") if res.cpus else None,
            ("-l", f"mem={pbs_memory(res.mem, res.nodes)}") if res.mem else None,
            ("-l", f"ngpus={res.nodes * int(count)}") if count else None,
        ]

    def cpus_per_node(self) -> str:
        # Gadi's PBS_NCPUS: the job's CPUs in all, spread evenly over whole nodes.
        return (
            '"$(n=$(awk \'!seen[$0]++\' "$PBS_NODEFILE" 2>/dev/null | wc -l); '
            'echo $(( ${PBS_NCPUS:-${NCPUS:-1}} / (n > 0 ? n : 1) )))"'
        )

    def worker_placement(
        self, partition: str, account: str | None, walltime: str, *, cores: int | None, memory: str | None
    ) -> dict[str, object]:
        # PBSJob writes -A and select= chunks; Gadi charges with -P and takes job-wide ncpus/mem.
        options = super().worker_placement(partition, None, walltime, cores=cores, memory=memory)
        options["job_extra_directives"] = [f"-P {account}"] if account else []
        if cores:
            mem = pbs_memory(memory) if memory else ""
            mem = f",mem={mem}" if mem.endswith("b") and mem[:1].isdigit() else ""  # units PBS reads, or none
            options["resource_spec"] = f"ncpus={cores}{mem}"
        return options


def _time_options(res: Resources) -> list[tuple[str, str] | None]:
    """-l walltime=, or shrink-to-fit's min_walltime/max_walltime (no walltime: PBS sets it at the start)."""
    if res.time and res.time_min:
        low, high = hms(time_to_seconds(res.time_min)), hms(time_to_seconds(res.time))
        return [("-l", f"min_walltime={low},max_walltime={high}")]
    return [("-l", f"walltime={hms(time_to_seconds(res.time))}")] if res.time else []


def pbs_memory(mem: str, times: int = 1) -> str:
    """hpcjup's --mem (16G, 4000M, 16GB; a plain number is MB, as in Slurm), `times` over, in PBS's units (16gb)."""
    m = re.fullmatch(r"([0-9]+)([KMGT]?)B?", mem.strip(), re.IGNORECASE)
    if not m:
        return mem
    return f"{int(m.group(1)) * times}{(m.group(2) or 'M').lower()}b"


def _gpu_chunk(gpus: str | None) -> list[str]:
    """ngpus=N, and gpu_type=T for a typed request (a100:4), as NCAR's PBS takes it."""
    if not gpus:
        return []
    kind, _, count = gpus.rpartition(":")
    return [f"ngpus={count}", *([f"gpu_type={kind}"] if kind else [])]
