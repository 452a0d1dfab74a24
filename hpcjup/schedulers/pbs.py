"""PBS Pro / OpenPBS: `qsub` prints the id, `qstat -f -F json -x` for state, `qsig`/`qdel` to stop.

What differs from Slurm: no signal before the walltime (the launcher's own timer shuts down in
time), the job starts in the home directory (`cd "$PBS_O_WORKDIR"`), no environment is passed
without `-V` (the script exports what the job needs), output is spooled unless kept with direct
write (`-k oed`), and `qstat` reports an expected start (`estimated.start_time`) where the site's
scheduler computes one (calendaring / backfill).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hpcjup.config.resources import time_to_seconds
from hpcjup.errors import HpcjupError, RemoteCommandError, SubmitError
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
)
from hpcjup.schedulers.base import JOB_LOG, JOB_SCRIPT, JobSpec, JobState, JobStatus, Scheduler
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.session.doctor import Check

#: 1234, 1234.server, an array 1234[].server or its subjob 1234[7].server.
_JOB_ID = re.compile(r"[0-9]{1,20}(?:\[[0-9]{0,10}\])?(?:\.[A-Za-z0-9][A-Za-z0-9.-]{0,253})?")
_QSTAT = ["qstat", "-f", "-F", "json", "-x"]
# Exit_status values PBS sets itself (src/include/job.h JOB_EXEC_*), and 256 + signal for a killed job.
_EXIT_WALLTIME = -29
_EXIT_MEMORY = (-26, -27)


class PBSPro(Scheduler):
    """The PBS Pro / OpenPBS adapter."""

    name = "pbs"
    title = "PBS Pro"
    directive = "#PBS"
    commands = ("qsub", "qstat", "qdel", "qsig")
    jobqueue = ("pbs", "PBSJob")
    signals_before_limit = False  # no `--signal`: the launcher's own timer
    estimates_start = True  # estimated.start_time, where the scheduler computes one
    job_id_pattern = _JOB_ID

    # -- the job script -----------------------------------------------------------------------
    def render(self, spec: JobSpec) -> str:
        res = spec.resources
        chunk = [str(res.nodes)]
        chunk += [f"ncpus={res.cpus}"] if res.cpus else []
        chunk += [f"mem={pbs_memory(res.mem)}"] if res.mem else []
        chunk += _gpu_chunk(res.gpus)
        options = [
            ("-N", f"hpcjup-{spec.name}"),
            ("-o", JOB_LOG),  # relative to qsub's directory: the session directory
            ("-j", "oe"),
            (
                "-k",
                "oed",
            ),  # direct write: the log grows while the job runs (PBS Pro >= 19), else it is copied at the end
            ("-l", "select=" + ":".join(chunk)),
            ("-l", "place=scatter") if res.nodes > 1 else None,  # one chunk per host: one launcher process per node
            ("-l", f"walltime={hms(time_to_seconds(res.time))}") if res.time else None,
            ("-q", res.partition) if res.partition else None,
            ("-A", res.account) if res.account else None,
        ]
        lines = ["#!/bin/bash", f"# hpcjup session {spec.name}: JupyterLab on a compute node."]
        lines += [f"{self.directive} {flag} {value}" for flag, value in (o for o in options if o)]
        # PBS starts the job in the home directory; without -V nothing of the submitting shell arrives.
        lines += ["", 'cd "$PBS_O_WORKDIR" || exit 1', *self.job_environment(spec)]
        lines += ["umask 077", *spec.setup, self.exec_line(spec.command), ""]
        return "\n".join(lines)

    def job_environment(self, spec: JobSpec) -> list[str]:
        res = spec.resources
        limit = (
            str(time_to_seconds(res.time))
            if res.time
            # the queue's default walltime, as granted: `qstat -f` (text) shows Resource_List.walltime
            else "$(qstat -f \"$PBS_JOBID\" 2>/dev/null | sed -n 's/^ *Resource_List.walltime = //p' "
            "| awk -F: 'NF == 3 && !s { s = ($1 * 60 + $2) * 60 + $3 } END { print s + 0 }')"
        )
        values = {
            ENV_SCHEDULER: self.name,
            ENV_JOB_ID: '"$PBS_JOBID"',
            # PBS_NODEFILE: one line per MPI rank, mother superior (this node) first, hosts as PBS names them.
            ENV_NODE: '"$(head -n 1 "$PBS_NODEFILE" 2>/dev/null || hostname -s)"',
            ENV_NODELIST: "\"$(awk '!seen[$0]++' \"$PBS_NODEFILE\" 2>/dev/null | tr '\\n' ' ' | sed 's/ $//')\"",
            ENV_CPUS: '"${NCPUS:-1}"',
            ENV_LAUNCH: shlex.quote("pbsdsh -h {host} --"),
            ENV_TIME_LIMIT: f'"{limit}"' if not res.time else limit,
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
        # qsub reads the script from stdin when given no file.
        try:
            result = transport.run(["sh", "-c", "umask 077 && exec qsub"], input=script.encode(), timeout=60)
        except RemoteCommandError as exc:
            raise submit_error(exc) from exc
        return parse_qsub(result.stdout, result.stderr)

    def worker_job_options(self, partition: str, account: str | None, walltime: str) -> dict[str, object]:
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

    def cancel_own_snippet(self, job_ids: Sequence[str]) -> str:
        ids = self.ids(job_ids)
        if not ids:
            return ""
        # qselect -u: the user's own jobs that have not finished (full ids); compared on the number,
        # since qsub may print a shorter server name than qselect.
        wanted = shlex.join(ids)
        return (
            f'own=$(qselect -u "$(id -un)" 2>/dev/null); for j in {wanted}; do n=${{j%%.*}}; '
            'for o in $own; do if [ "${o%%.*}" = "$n" ]; then qdel "$o" 2>/dev/null; echo "hpcjup-cancelled $j"; fi; '
            "done; done"
        )

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        job_id = self.check_job_id(job_id)
        if graceful and self.status(transport, job_id).state is JobState.RUNNING:
            transport.run(["qsig", "-s", "TERM", job_id], check=False)
            return
        transport.run(["qdel", job_id], check=False)

    # -- doctor -------------------------------------------------------------------------------------
    def doctor_checks(self, transport: Transport, settings: Resolved) -> list[Check]:
        """PBS's commands, and the queue (--partition) exists and takes jobs."""
        from hpcjup.session.doctor import Check, Status, check_commands

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
        limit = _table(info.get("resources_max")).get("walltime")
        return [*checks, Check("partition", Status.PASS, f"queue {queue} is enabled, walltime limit {limit or 'none'}")]


# -- parsing what PBS prints (recorded samples in tests/schedulers/data/pbs) --------------------------
def parse_qsub(stdout: str, stderr: str = "") -> str:
    """The job id qsub printed (its last line: "1234.server"); a SubmitError for anything else."""
    lines = stdout.strip().splitlines()
    job_id = lines[-1].strip() if lines else ""
    if not _JOB_ID.fullmatch(job_id):
        raise SubmitError(f"qsub printed no job id: {stdout.strip()!r} {stderr.strip()!r}")
    return job_id


def _document(text: str, what: str) -> dict[str, object]:
    """The JSON object qstat printed; a HpcjupError for anything else (qstat's JSON is not always valid JSON)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise HpcjupError(
            f"{what} printed something that is not JSON: {exc}", hint="Run it by hand on the login node."
        ) from exc
    if not isinstance(data, dict):
        raise HpcjupError(f"{what} printed JSON that is not an object.", hint="Run it by hand on the login node.")
    return data


def parse_qstat(text: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """`qstat -f -F json -x` output as JobStatus for each of `job_ids` it shows (by id, or by number)."""
    data = _document(text, "qstat -f -F json")
    jobs = data.get("Jobs") or {}  # no "Jobs" at all when none of the ids is known
    if not isinstance(jobs, dict):
        raise HpcjupError("qstat -f -F json printed a 'Jobs' that is not an object.", hint="Run it by hand.")
    by_number = {str(key).split(".", 1)[0]: key for key in jobs}
    found = {}
    for job_id in job_ids:
        key = job_id if job_id in jobs else by_number.get(job_id.split(".", 1)[0])
        record = jobs.get(key) if key is not None else None
        if isinstance(record, dict):
            found[job_id] = job_status(job_id, record)
    return found


def job_status(job_id: str, job: dict[str, object]) -> JobStatus:
    """One job's attributes (a value of "Jobs") as a JobStatus."""
    state = str(job.get("job_state", ""))
    comment = _text(job.get("comment"))
    exit_status = _int(job.get("Exit_status"))
    limits, used, estimated = (_table(job.get(key)) for key in ("Resource_List", "resources_used", "estimated"))
    limit = _seconds(limits.get("walltime"))
    spent = _seconds(used.get("walltime"))
    mapped = _state(state, exit_status)
    start = _text(estimated.get("start_time"))
    return JobStatus(
        job_id,
        mapped,
        reason=_reason(state, comment, job) if mapped is JobState.PENDING else None,
        expected_start=start if mapped is JobState.PENDING and start not in (None, "UNKNOWN") else None,
        nodes=exec_hosts(_text(job.get("exec_host"))),
        exit_code=str(exit_status) if exit_status is not None else None,
        time_left=max(0, limit - spent)
        if mapped is JobState.RUNNING and limit is not None and spent is not None
        else None,
        time_limit=limit,
    )


_STATES = {
    "Q": JobState.PENDING,
    "H": JobState.PENDING,  # held (user, operator, system, or a dependency)
    "W": JobState.PENDING,  # waiting for its execution time (-a)
    "T": JobState.PENDING,  # in transit
    "B": JobState.RUNNING,  # an array job with subjobs begun
    "R": JobState.RUNNING,
    "S": JobState.SUSPENDED,
    "U": JobState.SUSPENDED,  # suspended: the workstation became busy
    "E": JobState.COMPLETING,  # exiting after having run
    "M": JobState.GONE,  # moved to another server
}


def _state(state: str, exit_status: int | None) -> JobState:
    if state in _STATES:
        return _STATES[state]
    if state not in ("F", "X"):  # finished; X: a finished subjob
        return JobState.FAILED if state else JobState.GONE
    if exit_status is None:
        return JobState.CANCELLED  # deleted before it ran
    if exit_status == 0:
        return JobState.COMPLETED
    if exit_status == _EXIT_WALLTIME:
        return JobState.TIMEOUT
    if exit_status in _EXIT_MEMORY:
        return JobState.OUT_OF_MEMORY
    if exit_status > 256:  # 256 + the signal that killed it (qdel: SIGTERM, then SIGKILL)
        return JobState.CANCELLED
    return JobState.FAILED


def _reason(state: str, comment: str | None, job: dict[str, object]) -> str | None:
    """Why it pends, in the scheduler's words ("Can Never Run: ..." stays whole: it never clears)."""
    if state == "H":
        holds = _text(job.get("Hold_Types")) or "?"
        return f"held ({holds})" + (f": {comment}" if comment else "")
    if comment and comment.startswith("Not Running: "):
        return comment.removeprefix("Not Running: ")
    return comment


def exec_hosts(text: str | None) -> str | None:
    """The hosts of exec_host ("node1/0*2+node2/0*2") once each, comma-separated."""
    if not text:
        return None
    hosts = [part.split("/", 1)[0] for part in text.split("+") if part.split("/", 1)[0]]
    return ",".join(dict.fromkeys(hosts)) or None


def parse_queues(text: str) -> dict[str, dict[str, object]]:
    """`qstat -Q -f -F json` as queue name -> attributes."""
    queues = _document(text, "qstat -Q -f -F json").get("Queue") or {}
    if not isinstance(queues, dict):
        raise HpcjupError("qstat -Q -F json printed a 'Queue' that is not an object.", hint="Run it by hand.")
    return {str(name): attrs for name, attrs in queues.items() if isinstance(attrs, dict)}


def _table(value: object) -> dict[str, object]:
    """A nested attribute object (Resource_List, ...), or {} when absent or not an object."""
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    """Exit_status is a JSON number, or a string in older versions."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,10}", value.strip()):
        return int(value)
    return None


def _seconds(value: object) -> int | None:
    """Seconds in a PBS duration ("HH:MM:SS", or plain seconds)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}(?::[0-9]{1,2}){0,2}", value.strip()):
        parts = [int(p) for p in value.strip().split(":")]
        seconds = 0
        for part in parts:
            seconds = seconds * 60 + part
        return seconds
    return None


def hms(seconds: int) -> str:
    """HH:MM:SS (hours may pass 24), as PBS's walltime takes it."""
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def pbs_memory(mem: str) -> str:
    """hpcjup's --mem (16G, 4000M, 16GB; a plain number is MB, as in Slurm) in PBS's units (16gb, 4000mb)."""
    m = re.fullmatch(r"([0-9]+)([KMGT]?)B?", mem.strip(), re.IGNORECASE)
    if not m:
        return mem
    return f"{m.group(1)}{(m.group(2) or 'M').lower()}b"


def _gpu_chunk(gpus: str | None) -> list[str]:
    """ngpus=N, and gpu_type=T for a typed request (a100:4), as NCAR's and NCI's PBS take it."""
    if not gpus:
        return []
    kind, _, count = gpus.rpartition(":")
    return [f"ngpus={count}", *([f"gpu_type={kind}"] if kind else [])]


def submit_error(exc: RemoteCommandError) -> SubmitError:
    """qsub's own words, plus what to run on a PBS system to find valid values."""
    lines = [ln.removeprefix("qsub: ").strip() for ln in (exc.stderr or exc.stdout).splitlines() if ln.strip()]
    message = "; ".join(dict.fromkeys(lines)) or f"qsub exited with {exc.returncode}"
    text = message.lower()
    if "unknown queue" in text:
        hint = "Run `qstat -Q` on the login node to list the queues, then pass --partition."
    elif "resource limits" in text or "would exceed" in text:
        hint = (
            "Ask for less (--time, --nodes, --cpus, --mem, --gpus): `qstat -Qf QUEUE` shows the queue's resources_max."
        )
    elif "unknown resource" in text or "illegal attribute" in text:
        hint = "A resource this PBS does not know: check --mem/--gpus against `qstat -Qf QUEUE` and the site's documentation."
    elif "project" in text or "account" in text or "unauthorized" in text:
        hint = "Pass the project you may charge with --account (PBS's -A); the site's documentation says how to list yours."
    elif "command not found" in text or exc.returncode == 127:
        hint = "This host has no PBS commands on PATH: is it the cluster's login node?"
    else:
        hint = "Check the resource flags (--partition, --account, --time, --nodes, --cpus, --mem, --gpus)."
    return SubmitError(f"The scheduler refused the job: {message}", hint=hint)
