"""Reading what IBM Spectrum LSF prints: bsub's id, `bjobs -o ... -json` records, bsub's refusals; and writing
what it reads: memory per slot and GPU requests in its units.

Recorded samples and where they come from: tests/schedulers/data/lsf/SOURCES.md.
"""

from __future__ import annotations

import json
import math
import re

from hpcjup.errors import HpcjupError, RemoteCommandError, SubmitError
from hpcjup.schedulers.base import JobState, JobStatus

_SUBMITTED = re.compile(r"Job <([0-9]{1,20})> is submitted")


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


def gpu_request(gpus: str) -> str:
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
