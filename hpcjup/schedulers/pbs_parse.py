"""Parsing what PBS Pro / OpenPBS prints: qsub's id, `qstat -f -F json` (jobs and queues), qsub's refusals; and
writing what it reads: walltimes, memory and GPU requests in its units.

Recorded samples and where they come from: tests/schedulers/data/pbs/SOURCES.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from hpcjup.config.resources import Resources, time_to_seconds
from hpcjup.errors import HpcjupError, RemoteCommandError, SubmitError
from hpcjup.schedulers.base import JobState, JobStatus

#: 1234, 1234.server, an array 1234[].server or its subjob 1234[7].server.
JOB_ID = re.compile(r"[0-9]{1,20}(?:\[[0-9]{0,10}\])?(?:\.[A-Za-z0-9][A-Za-z0-9.-]{0,253})?")
# Exit_status values PBS sets itself (src/include/job.h JOB_EXEC_*), and 256 + signal for a killed job.
_EXIT_WALLTIME = -29
_EXIT_MEMORY = (-26, -27)


def parse_qsub(stdout: str, stderr: str = "") -> str:
    """The job id qsub printed (its last line: "1234.server"); a SubmitError for anything else."""
    lines = stdout.strip().splitlines()
    job_id = lines[-1].strip() if lines else ""
    if not JOB_ID.fullmatch(job_id):
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
    limits, used, estimated = (table(job.get(key)) for key in ("Resource_List", "resources_used", "estimated"))
    # A shrink-to-fit job (min_walltime/max_walltime) gets its walltime when it starts; until then the
    # most it may get is max_walltime.
    limit = _seconds(limits.get("walltime"))
    limit = limit if limit is not None else _seconds(limits.get("max_walltime"))
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
        return JobState.UNKNOWN if state else JobState.GONE  # a letter we do not know: not over on a guess
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
    """Why it pends, in the scheduler's words ("Can Never Run: ..." stays whole: it never clears). A queued job
    that ran before (run_count; a rerunnable job requeued by a preemption, `qrerun` or a node's failure) says so:
    until the scheduler looks at it again its comment is still the run before's ("Job run at ...")."""
    if state == "H":
        holds = _text(job.get("Hold_Types")) or "?"
        return f"held ({holds})" + (f": {comment}" if comment else "")
    if comment and comment.startswith("Job run at"):
        comment = None  # the run before's: not why it waits now
    if comment and comment.startswith("Not Running: "):
        comment = comment.removeprefix("Not Running: ")
    runs = _int(job.get("run_count"))
    if state == "Q" and runs:
        return f"requeued after {runs} run{'s' if runs > 1 else ''}" + (f": {comment}" if comment else "")
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


def table(value: object) -> dict[str, object]:
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


def hopeless(status: JobStatus) -> tuple[str, str] | None:
    """(what is wrong, which flag to change) for a queued job that waiting will not start: the scheduler's
    "Can Never Run: ..." (more than the queue or the nodes have; openpbs test/tests/functional/pbs_allpart.py),
    or a hold by an operator or the system (Hold_Types o or s; a user hold is the user's to release)."""
    reason = status.reason or ""
    if reason.startswith("Can Never Run"):
        return (
            "it asks for more than the queue or its nodes have",
            "Ask for less (--nodes, --cpus, --mem, --gpus, --time), or another --partition: "
            "`qstat -Qf QUEUE` shows the queue's resources_max, `pbsnodes -aSj` the nodes.",
        )
    holds = reason.removeprefix("held (").split(")", 1)[0] if reason.startswith("held (") else ""
    if "o" in holds or "s" in holds:
        return (
            "an operator or the system holds it",
            "Ask your centre why: `qstat -f JOB` shows the hold and its comment.",
        )
    return None


def time_options(res: Resources) -> list[tuple[str, str] | None]:
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


def gpu_chunk(gpus: str | None) -> list[str]:
    """ngpus=N, and gpu_type=T for a typed request (a100:4), as NCAR's PBS takes it."""
    if not gpus:
        return []
    kind, _, count = gpus.rpartition(":")
    return [f"ngpus={count}", *([f"gpu_type={kind}"] if kind else [])]
