"""IBM Spectrum LSF: `bsub < job.sh`, `bjobs -o ... -json` for state, `bkill` to stop.

What differs from Slurm: directives are read only from a script on bsub's stdin, the job runs in
the submission directory with the submitting shell's environment, the warning before the run
limit is LSF's job warning action (`-wa USR1 -wt MINUTES`), memory in `rusage[mem=]` is per slot,
and `bjobs` reports no expected start time (only plan-based scheduling has one, not in `-o`).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
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
    JOB_LOG,
    JOB_SCRIPT,
)
from hpcjup.schedulers.base import JobSpec, JobState, JobStatus, Scheduler
from hpcjup.schedulers.shell import cancel_named
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.checks import Check

_JOB_ID = re.compile(r"[0-9]{1,20}(?:\[[0-9]{1,10}\])?")  # 1234, or an array element 1234[7]
_SUBMITTED = re.compile(r"Job <([0-9]{1,20})> is submitted")
#: bjobs fields, in the order of bjobs's -o (the JSON keys are the upper-case names). -hms: times as HH:MM:SS.
FIELDS = "jobid stat queue exec_host pend_reason exit_code runtimelimit"
_BJOBS = ["bjobs", "-a", "-hms", "-o", FIELDS, "-json"]
# awk: `ID NAME` for each unfinished job in `bjobs -o "jobid stat job_name" -json` (one key a line, as LSF
# prints it; an id LSF does not know is a record with JOBID and ERROR only, so no STAT).
_OWN_JOBS = r"""
function val(line) { sub(/^[^:]*:[ \t]*"/, "", line); sub(/"[ \t]*,?[ \t]*$/, "", line); return line }
/^[ \t]*"JOBID"[ \t]*:/ { id = val($0) }
/^[ \t]*"STAT"[ \t]*:/ { stat = val($0) }
/^[ \t]*"JOB_NAME"[ \t]*:/ { name = val($0) }
/^[ \t]*}/ { if (id != "" && stat != "" && stat != "DONE" && stat != "EXIT") print id, name; id = stat = name = "" }
"""
# No --time: the queue's default run limit, asked in the job (seconds; 0 if bjobs cannot tell). With -hms
# RUNTIMELIMIT is HH:MM:SS, perhaps with "/host" (the normalising host) after it.
_QUEUE_LIMIT = (
    '$(bjobs -noheader -hms -o runtimelimit "$LSB_JOBID" 2>/dev/null '
    "| awk -F'[:/]' 'NF >= 3 && !s { s = ($1 * 60 + $2) * 60 + $3 } END { print s + 0 }')"
)
# Variables LSF sets in a job that must not reach a job submitted from inside it; the user's defaults stay.
_SCRUB_KEEP = "LSB_DEFAULTQUEUE LSB_DEFAULTPROJECT LSB_DEFAULT_USERGROUP LSB_DEFAULT_JOBGROUP"


class LSF(Scheduler):
    """The IBM Spectrum LSF adapter."""

    name = "lsf"
    title = "IBM LSF"
    requeues = True  # -r; a preemption action of brequeue (or a host failure) runs it again under its id
    directive = "#BSUB"
    commands = ("bsub", "bjobs", "bkill")
    jobqueue = ("lsf", "LSFJob")
    signals_before_limit = True  # -wa USR1 -wt MINUTES
    estimates_start = False  # bjobs -o has no estimate (plan-based scheduling's is in bjobs -l -plan only)
    job_id_pattern = _JOB_ID

    # -- the job script -----------------------------------------------------------------------
    def render(self, spec: JobSpec) -> str:
        res = spec.resources
        per_node = res.cpus or 1
        options = [
            ("-J", f"hpcjup-{spec.name}"),
            ("-o", JOB_LOG),  # appended to; relative to bsub's directory (the session directory)
            ("-n", str(res.nodes * per_node)),
            ("-R", f'"span[ptile={per_node}]"'),  # per_node slots on each of res.nodes hosts
            ("-R", f'"rusage[mem={lsf_memory_per_slot(res.mem, per_node)}]"') if res.mem else None,
            ("-W", str(math.ceil(time_to_seconds(res.time) / 60))) if res.time else None,
            ("-q", res.partition) if res.partition else None,
            ("-P", res.account) if res.account else None,
            ("-gpu", f'"{_gpu_request(res.gpus)}"') if res.gpus else None,
            # the warning action: SIGUSR1 to the job, whole minutes before the run limit
            *([("-wa", "USR1"), ("-wt", str(warning))] if (warning := warning_minutes(spec)) else []),
            # rerunnable only when asked (start --preemptible); else not, whatever the queue's RERUNNABLE says: a
            # rerun would write into a session directory pruned or reused since
            ("-r", "") if spec.requeue else ("-rn", ""),
        ]
        lines = ["#!/bin/bash", f"# hpcjup session {spec.name}: JupyterLab on a compute node."]
        lines += [f"{self.directive} {flag} {value}".rstrip() for flag, value in (o for o in options if o)]
        # The user's own options come last (--directive, a profile's `directives`), as given.
        lines += [f"{self.directive} {directive}" for directive in res.directives]
        # The log while the job runs: LSF copies -o at the end unless the site sets LSB_STDOUT_DIRECT.
        lines += ["", f"cd {shlex.quote(spec.session_dir)} || exit 1", f"exec >>{JOB_LOG} 2>&1"]
        lines += [*self.job_environment(spec), "umask 077", *spec.setup, self.exec_line(spec.command), ""]
        return "\n".join(lines)

    def job_environment(self, spec: JobSpec) -> list[str]:
        res = spec.resources
        # LSB_MCPU_HOSTS: "hostA 4 hostB 4", the first execution host (this one) first.
        values = {
            ENV_SCHEDULER: self.name,
            ENV_JOB_ID: '"$LSB_JOBID"',
            ENV_NODE: "\"$(echo $LSB_MCPU_HOSTS | awk '{ print $1 }')\"",
            ENV_NODELIST: '"$(echo $LSB_MCPU_HOSTS | awk \'{ for (i = 1; i < NF; i += 2) printf "%s%s", (i > 1 ? " " : ""), $i }\')"',
            ENV_CPUS: "\"$(echo $LSB_MCPU_HOSTS | awk '{ print $2 }')\"",
            ENV_LAUNCH: shlex.quote("blaunch {host}"),
            ENV_TIME_LIMIT: str(time_to_seconds(res.time)) if res.time else f'"{_QUEUE_LIMIT}"',
            ENV_WARN_SIGNAL: "1" if warning_minutes(spec) else '""',  # else the launcher's own timer
            ENV_WARN_SECONDS: str(spec.warn_seconds or 0),
            ENV_PARTITION: '"${LSB_QUEUE:-}"',
            ENV_ACCOUNT: '"${LSB_PROJECT_NAME:-}"',
            ENV_JOBQUEUE: "lsf",
            ENV_SUBMIT: "bsub",
            # bsub copies the submitting environment into the job: a worker job submitted from this one
            # would otherwise start with this job's LSB_* values.
            ENV_SCRUB: "LSB_",
            ENV_SCRUB_KEEP: shlex.quote(_SCRUB_KEEP),
        }
        return [f"export {key}={value}" for key, value in values.items()]

    # -- submission ---------------------------------------------------------------------------
    # bsub reads #BSUB lines only from a script on its stdin; run in the session directory: the job's and -o's.
    submit_command = f"bsub < {JOB_SCRIPT}"

    def parse_submission(self, stdout: str, stderr: str) -> str:
        return parse_bsub(stdout, stderr)

    def refusal(self, exc: RemoteCommandError) -> SubmitError:
        return submit_error(exc)

    def submit_worker(self, transport: Transport, script: str) -> str:
        # `script` is the path of the rendered worker job on the cluster (session/groups.py writes it there);
        # bsub reads #BSUB lines only from a script on its stdin.
        try:
            result = transport.run(["sh", "-c", 'umask 077 && exec bsub < "$1"', "sh", script], timeout=60)
        except RemoteCommandError as exc:
            raise submit_error(exc) from exc
        return parse_bsub(result.stdout, result.stderr)

    def worker_placement(
        self, partition: str, account: str | None, walltime: str, *, cores: int | None, memory: str | None
    ) -> dict[str, object]:
        """LSFJob's project= (bsub -P) and walltime (bsub -W's HH:MM)."""
        minutes = math.ceil(time_to_seconds(walltime) / 60)
        return {"queue": partition, "project": account, "walltime": f"{minutes // 60:02d}:{minutes % 60:02d}"}

    # -- state ----------------------------------------------------------------------------------
    def status(self, transport: Transport, job_id: str) -> JobStatus:
        return self.statuses(transport, [self.check_job_id(job_id)])[job_id]

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One `bjobs -a -o ... -json` for all jobs; one LSF no longer knows (CLEAN_PERIOD passed) is GONE."""
        found = {job_id: JobStatus(job_id, JobState.GONE) for job_id in job_ids}
        ids = self.ids(job_ids)
        if not ids:
            return found
        result = transport.run([*_BJOBS, *ids], check=False)
        if not result.stdout.strip():
            if result.returncode != 0 and "is not found" not in result.stderr:
                raise RemoteCommandError([*_BJOBS, *ids], result.returncode, result.stdout, result.stderr)
            return found
        found.update({k: v for k, v in parse_bjobs(result.stdout).items() if k in found})
        return found

    def never_starts(self, status: JobStatus) -> tuple[str, str] | None:
        # LSF refuses at bsub what no host could run ("Too many tasks requested"); of what a pending job
        # waits for, only an administrator's suspension is known here not to clear by waiting. Other
        # PEND_REASON texts are site-configurable (lsb.reasons), so they are shown, not judged.
        if status.state is JobState.PENDING and "suspended by LSF admin or root" in (status.reason or ""):
            return (
                "an administrator suspended the job while it was pending",
                "Ask your centre's support; `bjobs -l ID` says more.",
            )
        return None

    # -- ending jobs ------------------------------------------------------------------------------
    def stop_snippet(self, running: Sequence[str], pending: Sequence[str]) -> str:
        # bkill -s TERM sends that one signal; plain bkill sends SIGINT, SIGTERM and SIGKILL in turn
        # (JOB_TERMINATE_INTERVAL apart), which is for pending jobs and for the outright cancel.
        parts = []
        if self.ids(running):
            parts.append(shlex.join(["bkill", "-s", "TERM", *self.ids(running)]) + " >/dev/null 2>&1")
        if self.ids(pending):
            parts.append(shlex.join(["bkill", *self.ids(pending)]) + " >/dev/null 2>&1")
        return "; ".join(parts)

    def kill_snippet(self, job_ids: Sequence[str]) -> str:
        return shlex.join(["bkill", *self.ids(job_ids)]) + " >/dev/null 2>&1" if self.ids(job_ids) else ""

    def cancel_own_snippet(self, jobs: Mapping[str, str]) -> str:
        ids = self.ids(list(jobs))
        if not ids:
            return ""
        # With explicit ids bjobs shows any user's jobs, finished ones too (within CLEAN_PERIOD): ask for
        # the user's own, and keep those that have not ended. -json: the text form cuts job_name to its
        # column's width; JSON gives it whole.
        listed = shlex.join(["-o", "jobid stat job_name", "-json", *ids])
        listing = f'bounded bjobs -u "$(id -un)" {listed} 2>/dev/null | awk {shlex.quote(_OWN_JOBS)}'
        return cancel_named({job_id: jobs[job_id] for job_id in ids}, listing, "bkill")

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        job_id = self.check_job_id(job_id)
        if graceful and self.status(transport, job_id).state is JobState.RUNNING:
            transport.run(["bkill", "-s", "TERM", job_id], check=False)
            return
        transport.run(["bkill", job_id], check=False)

    # -- doctor -------------------------------------------------------------------------------------
    def doctor_checks(self, transport: Transport, settings: Resolved) -> list[Check]:
        """LSF's commands, and the queue (--partition) exists and takes jobs."""
        from hpcjup.schedulers.checks import Check, Status, check_commands

        checks = [check_commands(transport, self)]
        if checks[0].status is not Status.PASS:
            return [*checks, Check("partition", Status.SKIP, "not checked: no LSF commands")]
        queue = settings.value("partition")
        if not queue:
            return [*checks, Check("partition", Status.PASS, "none set: the cluster's default queue")]
        result = transport.run(["bqueues", queue], check=False)
        if result.returncode != 0:
            fix = "Run `bqueues` on the login node to list the queues, then pass --partition."
            words = (result.stderr or result.stdout).strip() or f"bqueues exited with {result.returncode}"
            return [*checks, Check("partition", Status.FAIL, f"queue {queue}: {words}", fix=fix)]
        return [*checks, Check("partition", Status.PASS, f"queue {queue} exists")]


def warning_minutes(spec: JobSpec) -> int | None:
    """-wt: the warning's lead in whole minutes (rounded up: never later than asked); None where that would
    reach back to the job's start (--time 1 with a 30 s warning), which the launcher's own timer then handles."""
    if not spec.warn_seconds:
        return None
    minutes = max(1, math.ceil(spec.warn_seconds / 60))
    limit = spec.resources.time_seconds
    return None if limit is not None and minutes * 60 >= limit else minutes


# -- parsing what LSF prints (recorded samples in tests/schedulers/data/lsf) ---------------------------
def parse_bsub(stdout: str, stderr: str = "") -> str:
    """The id in "Job <1234> is submitted to queue <normal>."; a SubmitError for anything else."""
    m = _SUBMITTED.search(stdout)
    if m is None:
        raise SubmitError(f"bsub printed no job id: {stdout.strip()!r} {stderr.strip()!r}")
    return m.group(1)


def parse_bjobs(text: str) -> dict[str, JobStatus]:
    """`bjobs -o ... -json` as job id -> JobStatus; records with an ERROR (job not found) are left out."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise HpcjupError(f"bjobs -json printed something that is not JSON: {exc}", hint="Run it by hand.") from exc
    records = data.get("RECORDS") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise HpcjupError("bjobs -json printed no RECORDS list.", hint="Run it by hand on the login node.")
    found = {}
    for record in records:
        if isinstance(record, dict) and "ERROR" not in record and isinstance(record.get("JOBID"), str):
            found[record["JOBID"]] = job_status(record)
    return found


_STATES = {
    "PEND": JobState.PENDING,
    "WAIT": JobState.PENDING,  # a chunk job's member waiting to run
    "PSUSP": JobState.PENDING,  # suspended (bstop) while pending: it still has no allocation
    "PROV": JobState.CONFIGURING,  # dispatched, waiting for its hosts to be provisioned
    "RUN": JobState.RUNNING,
    "USUSP": JobState.SUSPENDED,
    "SSUSP": JobState.SUSPENDED,
    "UNKWN": JobState.RUNNING,  # mbatchd lost contact with the host; the job may still run
    "ZOMBI": JobState.COMPLETING,  # being killed on an unreachable host
    "DONE": JobState.COMPLETED,
    "EXIT": JobState.FAILED,
}


def job_status(record: dict[str, object]) -> JobStatus:
    """One RECORDS entry as a JobStatus."""
    stat = _text(record.get("STAT")) or ""
    state = _STATES.get(stat, JobState.UNKNOWN if stat else JobState.GONE)  # a word we do not know: not over
    reason = _text(record.get("PEND_REASON"))
    if stat == "PSUSP":
        reason = "suspended while pending (bresume releases it)" + (f": {reason}" if reason else "")
    elif stat == "UNKWN":
        reason = "LSF lost contact with the job's host"
    limit = _seconds(_text(record.get("RUNTIMELIMIT")))
    return JobStatus(
        str(record.get("JOBID")),
        state,
        reason=reason.rstrip(";").strip() if reason and state in (JobState.PENDING, JobState.RUNNING) else None,
        nodes=exec_hosts(_text(record.get("EXEC_HOST"))),
        exit_code=_text(record.get("EXIT_CODE")),
        time_limit=limit,
    )


def exec_hosts(text: str | None) -> str | None:
    """EXEC_HOST ("hostA:hostA:hostB", or "4*hostA:4*hostB") as the hosts once each, comma-separated."""
    if not text:
        return None
    hosts = [part.split("*")[-1].strip() for part in text.split(":")]
    return ",".join(dict.fromkeys(h for h in hosts if h)) or None


def _seconds(text: str | None) -> int | None:
    """RUNTIMELIMIT: "HH:MM:SS" (with -hms), or minutes "1440.0" (optionally "/host"); None if absent."""
    if not text:
        return None
    text = text.split("/", 1)[0].strip()
    if re.fullmatch(r"[0-9]{1,9}:[0-9]{1,2}:[0-9]{1,2}", text):
        h, m, s = (int(p) for p in text.split(":"))
        return (h * 60 + m) * 60 + s
    if re.fullmatch(r"[0-9]{1,9}(?:\.[0-9]{1,6})?", text):
        return round(float(text) * 60)
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value and value != "-" else None


def lsf_memory_per_slot(mem: str, slots: int) -> str:
    """hpcjup's --mem (per node; a plain number is MB, as in Slurm) as rusage[mem=] per slot, in MB."""
    m = re.fullmatch(r"([0-9]+)([KMGT]?)B?", mem.strip(), re.IGNORECASE)
    if not m:
        return mem
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2).upper()]
    return f"{max(1, math.ceil(int(m.group(1)) * factor / max(1, slots)))}MB"


def _gpu_request(gpus: str) -> str:
    """bsub -gpu's num=N, and gmodel=T for a typed request (a100:4)."""
    kind, _, count = gpus.rpartition(":")
    return f"num={count}" + (f":gmodel={kind}" if kind else "")


def submit_error(exc: RemoteCommandError) -> SubmitError:
    """bsub's own words, plus what to run on an LSF system to find valid values."""
    lines = [ln.strip() for ln in (exc.stderr or exc.stdout).splitlines() if ln.strip()]
    message = "; ".join(dict.fromkeys(lines)) or f"bsub exited with {exc.returncode}"
    text = message.lower()
    if "no such queue" in text or "bad queue" in text:
        hint = "Run `bqueues` on the login node to list the queues, then pass --partition."
    elif "too many processors" in text or "processor" in text or "slots" in text:
        hint = "Ask for fewer --nodes or --cpus: `bqueues -l QUEUE` shows the queue's limits."
    elif "run limit" in text or "runlimit" in text:
        hint = "Ask for less --time: `bqueues -l QUEUE` shows the queue's RUNLIMIT."
    elif "project" in text:
        hint = (
            "Pass a project you may charge with --account (bsub -P); `bugroup` or the site's documentation lists them."
        )
    elif "error in" in text or "error near" in text:
        hint = "LSF could not read the resource request: check --mem and --gpus."
    elif "command not found" in text or exc.returncode == 127:
        hint = "This host has no LSF commands on PATH: is it the cluster's login node (source profile.lsf)?"
    else:
        hint = "Check the resource flags (--partition, --account, --time, --nodes, --cpus, --mem, --gpus)."
    return SubmitError(f"The scheduler refused the job: {message}", hint=hint)
