"""Reading what Grid Engine prints: `qstat -xml` (with the error reasons of jobs in error state), `qacct -j`,
qsub's refusals, and the framed output of `start --dry-run`'s one remote command (`qsub -w v`, `qstat -g c`); and
writing what it reads: h_rt, slots, memory per slot and GPU counts."""

from __future__ import annotations

import dataclasses
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence

from hpcjup.config.resources import time_to_seconds
from hpcjup.errors import RemoteCommandError, SubmitError, UsageError
from hpcjup.schedulers.base import JobSpec, JobState, JobStatus, PartitionPreview
from hpcjup.schedulers.shell import FRAME, sections

# -- parsing ---------------------------------------------------------------------------------------------
#: The start of the reason of a job in error state (Eqw); `never_starts` knows it by this.
ERROR_STATE = "error state"
# `qstat -j ID,...` for jobs in error state: "error reason    1:      12/01/2026 22:38:56 [1001:17698]: error: ..."
_ERROR_REASON = re.compile(r"error reason\s+[0-9]+:\s+(?:[0-9/]+ [0-9:]+ )?(?:\[[0-9:]+\]: )?(.*\S)")


def parse_statuses(text: str) -> dict[str, JobStatus]:
    """{job id: status} from the statuses command: `qstat -xml -r`, then under "@@hpcjup errors" the error
    reasons (`qstat -j`) of jobs in error state, which join their status's reason."""
    xml, _, errors = text.partition(f"\n{FRAME} errors\n")
    found = parse_qstat_xml(xml)
    job_id = ""
    for line in errors.splitlines():
        if line.startswith("job_number:"):
            job_id = line.split(":", 1)[1].strip()
        elif (match := _ERROR_REASON.match(line)) and job_id in found and found[job_id].reason:
            status = found[job_id]
            if ": " not in (status.reason or ""):  # the first reason of a job, as qstat -j lists them
                found[job_id] = dataclasses.replace(status, reason=f"{status.reason}: {match.group(1)[:300]}")
    return found


def parse_qstat_xml(text: str) -> dict[str, JobStatus]:
    """{job id: status} of every job in `qstat -xml [-r]` output; {} for anything that is not such XML."""
    try:
        root = ET.fromstring(text)
    except (ET.ParseError, ValueError):  # ValueError: e.g. an encoding declaration in a str
        return {}
    found: dict[str, JobStatus] = {}
    for entry in root.iter("job_list"):
        job_id = (entry.findtext("JB_job_number") or "").strip()
        if not re.fullmatch(r"[0-9]{1,20}", job_id) or job_id in found:
            continue  # an array job lists one entry per task range: the first tells its state
        found[job_id] = _status(job_id, entry)
    return found


def _status(job_id: str, entry: ET.Element) -> JobStatus:
    code = (entry.findtext("state") or "").strip()
    state, reason = state_of(code)
    queue = (entry.findtext("queue_name") or "").strip()
    limit = next((el.text for el in entry.iter("hard_request") if el.get("name") == "h_rt"), None)
    return JobStatus(
        job_id,
        state,
        reason=reason,
        nodes=queue.split("@", 1)[1] if "@" in queue else None,
        time_limit=_h_rt(limit),
    )


def state_of(code: str) -> tuple[JobState, str | None]:
    """The JobState (and a reason) of a Grid Engine state code such as qw, hqw, r, t, dr, Eqw, s."""
    letters = set(code)
    if "E" in letters:  # Eqw: it stays in the queue, never to start, until it is deleted (or an admin clears it)
        return JobState.PENDING, f"{ERROR_STATE} ({code})"
    if "d" in letters:
        return JobState.COMPLETING, "being deleted"
    if letters & {"s", "S", "T"}:
        return JobState.SUSPENDED, "suspended"
    if "r" in letters:
        return JobState.RUNNING, None
    if "t" in letters:
        return JobState.CONFIGURING, "being transferred to its host"
    if "h" in letters:
        return JobState.PENDING, "held"
    if letters & {"q", "w"}:
        return JobState.PENDING, None
    return (JobState.FAILED, f"unknown state {code!r}") if code else (JobState.GONE, None)


def parse_qacct(text: str) -> dict[str, JobStatus]:
    """{job id: status} of the records in `qacct -j` output (records start with a line of '=')."""
    found: dict[str, JobStatus] = {}
    for record in re.split(r"^=+\s*$", text, flags=re.MULTILINE):
        fields: dict[str, str] = {}
        for line in record.splitlines():
            key, _, value = line.partition(" ")
            if key and value.strip():
                fields.setdefault(key, value.strip())
        job_id = fields.get("jobnumber", "")
        if re.fullmatch(r"[0-9]{1,20}", job_id):
            found[job_id] = _accounted(job_id, fields)  # a later record (a re-run) wins
    return found


def _accounted(job_id: str, fields: dict[str, str]) -> JobStatus:
    failed = fields.get("failed", "").split(" ", 1)[0]
    exit_code = fields.get("exit_status", "").split(" ", 1)[0] or None
    if failed == "0":
        state = JobState.COMPLETED if exit_code == "0" else JobState.FAILED
    elif failed == "37":  # "qmaster enforced h_rt, h_cpu, or h_vmem limit"
        state = JobState.TIMEOUT
    elif failed == "100" and exit_code in ("137", "143"):  # ended by a signal after it started: qdel
        state = JobState.CANCELLED
    else:
        state = JobState.FAILED
    host = fields.get("hostname")
    return JobStatus(job_id, state, nodes=host.split(".")[0] if host else None, exit_code=exit_code)


# -- refusals --------------------------------------------------------------------------------------------
def submit_error(exc: RemoteCommandError) -> SubmitError:
    """The scheduler's own words, plus what to run to find valid values."""
    message = _message(exc.stderr + "\n" + exc.stdout) or f"qsub exited with {exc.returncode}"
    return SubmitError(f"The scheduler refused the job: {message}", hint=_hint(message, exc.returncode))


def _message(text: str) -> str:
    """qsub's lines without its boilerplate ("Unable to run job: ", "Exiting.")."""
    lines = [line.strip().removeprefix("Unable to run job: ").strip() for line in text.splitlines()]
    return "; ".join(dict.fromkeys(line for line in lines if line and line != "Exiting."))


def _hint(message: str, returncode: int) -> str:
    """What to run, for the refusal `message`."""
    text = message.lower()
    if returncode == 127 or "command not found" in text:
        return "This host has no Grid Engine commands on PATH: is it the cluster's login node?"
    if "queue" in text and "unknown" in text:
        return "Run `qconf -sql` on the login node to list the queues, then pass one as --partition."
    if "parallel environment" in text:
        return (
            "Run `qconf -spl` to list the parallel environments: hpcjup asks for `smp` (--cpus) and `mpi` "
            "(--nodes > 1); ask your admins which ones your site has."
        )
    if "project" in text:
        return "Run `qconf -sprjl` to list the projects, then pass one as --account."
    if "resource" in text:
        return "Run `qconf -sc` to list the resources the cell knows (--mem asks for h_vmem, --gpus for gpu)."
    if "no suitable queue" in text or "cannot run" in text:
        return "No queue could ever run this request: `qstat -g c` shows queues and their slots; ask for less."
    return "Check the resource flags (--partition, --account, --time, --nodes, --cpus, --mem, --gpus)."


def _h_rt(text: str | None) -> int | None:
    """Seconds in an h_rt value: seconds, or [[H:]M:]S."""
    if not text or not re.fullmatch(r"[0-9]{1,9}(?::[0-9]{1,2}){0,2}", text.strip()):
        return None
    seconds = 0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


# -- start --dry-run ----------------------------------------------------------------------------------
_NO_ESTIMATE = "no start estimate on Grid Engine (it has none)"


def parse_cluster_queues(text: str) -> dict[str, tuple[int, int]]:
    """{queue: (available slots, total slots)} from `qstat -g c` (header, a dashed line, one line per queue)."""
    found: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[4].isdigit() and fields[5].isdigit() and len(fields[5]) < 10:
            found.setdefault(fields[0], (int(fields[4]), int(fields[5])))
    return found


def parse_preview(stdout: str, partitions: Sequence[str | None]) -> list[PartitionPreview]:
    """One preview per queue (None: any) from the framed output of the preview snippet: `qsub -w v`'s verdict
    (could a queue ever run the job?), the queue's h_rt and its free slots. Grid Engine has no start estimate."""
    parts = sections(stdout)
    slots = next((parse_cluster_queues(text) for name, _, code, text in parts if name == "slots" and code == 0), {})
    verdicts = {arg: (code, text) for name, arg, code, text in parts if name == "verify"}
    limits = {arg: _queue_limit(text) for name, arg, code, text in parts if name == "limit" and code == 0}
    previews = []
    for queue in partitions:
        code, text = verdicts.get(queue or "", (None, ""))
        free, total = slots.get(queue, (None, None)) if queue else _sum(slots.values())
        preview = PartitionPreview(
            queue, time_limit_seconds=limits.get(queue or ""), free_slots=free, total_slots=total, note=_NO_ESTIMATE
        )
        if code is None:
            preview = dataclasses.replace(preview, note=f"{_NO_ESTIMATE}; qsub -w v gave no answer")
        elif code != 0:
            words = _message(text) or f"qsub -w v exited with {code}"
            preview = dataclasses.replace(preview, refusal=words, hint=_hint(words, code))
        previews.append(preview)
    return previews


def _queue_limit(text: str) -> int | None:
    """h_rt in seconds from `qconf -sq QUEUE`'s h_rt line (None: INFINITY, or not shown)."""
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "h_rt":
            return _h_rt(value)
    return None


def _sum(counts: Iterable[tuple[int, int]]) -> tuple[int | None, int | None]:
    """All queues' (available, total) slots together; (None, None) if none was listed."""
    pairs = list(counts)
    return (sum(a for a, _ in pairs), sum(t for _, t in pairs)) if pairs else (None, None)


# -- writing what Grid Engine reads -------------------------------------------------------------------
_UNIT_MIB = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}  # Slurm's --mem units; no unit = MiB


def time_seconds(spec: JobSpec) -> int | None:
    return None if spec.resources.time is None else time_to_seconds(spec.resources.time)


def slots_of(nodes: int, cpus: int | None) -> int:
    return nodes * (cpus or 1)


def per_slot_mib(mem: str, slots: int) -> int:
    """--mem (per job, Slurm's units; no unit = MiB) as MiB per slot, rounded up."""
    match = re.fullmatch(r"([0-9]+)([KMGT]?)B?", mem.upper())
    if not match:
        raise UsageError(f"--mem {mem!r} is not valid: expected a size such as 16G or 4000M.")
    mib = int(match.group(1)) * _UNIT_MIB[match.group(2)]
    return max(1, math.ceil(mib / slots))


def gpu_count(gpus: str) -> str:
    """The count of --gpus; a GPU type has no common Grid Engine spelling."""
    if ":" in gpus:
        raise UsageError(
            f"--gpus {gpus!r}: Grid Engine sites name GPU types their own way.",
            hint="Ask for a count (--gpus 2); `qconf -sc` shows the cell's GPU resources.",
        )
    return gpus


def h_rt(walltime: str) -> str:
    """hpcjup's --time (a bare number is minutes) as h_rt's H:MM:SS (where a bare number is seconds); as given if
    it is not of hpcjup's form."""
    try:
        seconds = time_to_seconds(walltime)
    except ValueError:
        return walltime
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def parse_qsub(stdout: str, stderr: str) -> str:
    """The id `qsub -terse` printed (first line; an array job's "123.1-4:1" is job 123); a SubmitError otherwise."""
    first = next((line.strip() for line in stdout.splitlines() if line.strip()), "")
    job_id = first.split(".", 1)[0]
    if not re.fullmatch(r"[0-9]{1,20}", job_id):
        raise SubmitError(
            f"qsub printed no job id: {stdout.strip()[:200]!r} {stderr.strip()[:200]!r}",
            hint="Check `qsub -terse` on the login node.",
        )
    return job_id
