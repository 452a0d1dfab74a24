"""IBM Spectrum LSF: `bsub < job.sh`, `bjobs -o ... -json` for state, `bkill` to stop.

What differs from Slurm: directives are read only from a script on bsub's stdin, the job runs in
the submission directory with the submitting shell's environment, the warning before the run
limit is LSF's job warning action (`-wa USR1 -wt MINUTES`), memory in `rusage[mem=]` is per slot,
and `bjobs` reports no expected start time (only plan-based scheduling has one, not in `-o`).
Parsers: lsf_parse.py.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence

from hpcjup import job
from hpcjup.config.resources import time_to_seconds
from hpcjup.job import JOB_LOG, JOB_SCRIPT
from hpcjup.schedulers.base import JobSpec, JobState, JobStatus, Scheduler
from hpcjup.schedulers.lsf_parse import gpu_request, lsf_memory_per_slot, parse_bjobs, parse_bsub, submit_error
from hpcjup.schedulers.queues import Queue, Queues
from hpcjup.transport.base import Transport

_JOB_ID = re.compile(r"[0-9]{1,20}(?:\[[0-9]{1,10}\])?")  # 1234, or an array element 1234[7]
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
    # bkill -s TERM sends that one signal; plain bkill sends SIGINT, SIGTERM and SIGKILL in turn
    # (JOB_TERMINATE_INTERVAL apart), which is for pending jobs and for the outright cancel.
    signal_command = ("bkill", "-s", "TERM")
    cancel_command = ("bkill",)
    quiet = " >/dev/null 2>&1"
    # bsub reads #BSUB lines only from a script on its stdin.
    worker_submit = 'bsub < "$1"'
    lists_queues = "bqueues"

    # -- the job script -----------------------------------------------------------------------
    def directives(self, spec: JobSpec) -> list[str]:
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
            ("-gpu", f'"{gpu_request(res.gpus)}"') if res.gpus else None,
            # the warning action: SIGUSR1 to the job, whole minutes before the run limit
            *([("-wa", "USR1"), ("-wt", str(warning))] if (warning := warning_minutes(spec)) else []),
            # rerunnable only when asked (start --preemptible); else not, whatever the queue's RERUNNABLE says: a
            # rerun would write into a session directory pruned or reused since
            ("-r", "") if spec.requeue else ("-rn", ""),
        ]
        return [f"{flag} {value}".rstrip() for flag, value in (option for option in options if option)]

    def preamble(self, spec: JobSpec) -> list[str]:
        # The log while the job runs: LSF copies -o at the end unless the site sets LSB_STDOUT_DIRECT.
        return [f"cd {shlex.quote(spec.session_dir)} || exit 1", f"exec >>{JOB_LOG} 2>&1"]

    def environment(self, spec: JobSpec) -> Mapping[str, str]:
        res = spec.resources
        # LSB_MCPU_HOSTS: "hostA 4 hostB 4", the first execution host (this one) first.
        return {
            job.ENV_SCHEDULER: self.name,
            job.ENV_JOB_ID: '"$LSB_JOBID"',
            job.ENV_NODE: "\"$(echo $LSB_MCPU_HOSTS | awk '{ print $1 }')\"",
            job.ENV_NODELIST: '"$(echo $LSB_MCPU_HOSTS | awk \'{ for (i = 1; i < NF; i += 2) printf "%s%s", (i > 1 ? " " : ""), $i }\')"',
            job.ENV_CPUS: "\"$(echo $LSB_MCPU_HOSTS | awk '{ print $2 }')\"",
            job.ENV_MEMORY_KB: '""',  # not said: its cgroup's limit bounds it, where it has one
            job.ENV_LAUNCH: shlex.quote("blaunch {host}"),
            job.ENV_TIME_LIMIT: str(time_to_seconds(res.time)) if res.time else f'"{_QUEUE_LIMIT}"',
            job.ENV_WARN_SIGNAL: "1" if warning_minutes(spec) else '""',  # else the launcher's own timer
            job.ENV_WARN_SECONDS: str(spec.warn_seconds or 0),
            job.ENV_RESTARTS: "''",  # not given: the launcher counts runs from the state.json before
            job.ENV_PARTITION: '"${LSB_QUEUE:-}"',
            job.ENV_ACCOUNT: '"${LSB_PROJECT_NAME:-}"',
            job.ENV_JOBQUEUE: "lsf",
            job.ENV_SUBMIT: "bsub",
            # bsub copies the submitting environment into the job: a worker job submitted from this one
            # would otherwise start with this job's LSB_* values.
            job.ENV_SCRUB: "LSB_",
            job.ENV_SCRUB_KEEP: shlex.quote(_SCRUB_KEEP),
        }

    # -- submission ---------------------------------------------------------------------------
    # bsub reads #BSUB lines only from a script on its stdin; run in the session directory: the job's and -o's.
    submit_command = f"bsub < {JOB_SCRIPT}"
    refusal = staticmethod(submit_error)

    def parse_submission(self, stdout: str, stderr: str) -> str:
        return parse_bsub(stdout, stderr)

    def worker_placement(
        self, partition: str, account: str | None, walltime: str, *, cores: int | None, memory: str | None
    ) -> dict[str, object]:
        """LSFJob's project= (bsub -P) and walltime (bsub -W's HH:MM)."""
        minutes = math.ceil(time_to_seconds(walltime) / 60)
        return {"queue": partition, "project": account, "walltime": f"{minutes // 60:02d}:{minutes % 60:02d}"}

    # -- state ----------------------------------------------------------------------------------
    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One `bjobs -a -o ... -json` for all jobs; one LSF no longer knows (CLEAN_PERIOD passed) is GONE."""
        return self._queried(transport, job_ids, _BJOBS, "is not found", lambda stdout, _: parse_bjobs(stdout))

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

    def own_jobs(self, job_ids: Sequence[str]) -> str:
        # With explicit ids bjobs shows any user's jobs, finished ones too (within CLEAN_PERIOD): ask for
        # the user's own, and keep those that have not ended. -json: the text form cuts job_name to its
        # column's width; JSON gives it whole.
        listed = shlex.join(["-o", "jobid stat job_name", "-json", *job_ids])
        return f'bounded bjobs -u "$(id -un)" {listed} 2>/dev/null | awk {shlex.quote(_OWN_JOBS)}'

    # -- doctor -------------------------------------------------------------------------------------
    def queues(self, transport: Transport, wanted: str | None) -> Queues:
        """The queue asked for exists (`bqueues QUEUE` answers for it)."""
        if not wanted:
            return Queues(complete=False)
        result = transport.run(["bqueues", wanted], check=False)
        if result.returncode != 0:
            words = (result.stderr or result.stdout).strip() or f"bqueues exited with {result.returncode}"
            return Queues(error=words, complete=False)
        return Queues([Queue(wanted, state=None)], complete=False)


def warning_minutes(spec: JobSpec) -> int | None:
    """-wt: the warning's lead in whole minutes (rounded up: never later than asked); None where that would
    reach back to the job's start (--time 1 with a 30 s warning), which the launcher's own timer then handles."""
    if not spec.warn_seconds:
        return None
    minutes = max(1, math.ceil(spec.warn_seconds / 60))
    limit = spec.resources.time_seconds
    return None if limit is not None and minutes * 60 >= limit else minutes
