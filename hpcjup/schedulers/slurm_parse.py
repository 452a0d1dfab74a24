"""Reading what Slurm prints: squeue lines, durations, pending reasons that never clear, refusals, and the
framed output of `start --dry-run`'s one remote command (`sbatch --test-only` per partition, `sinfo`)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from hpcjup.config.resources import time_to_seconds
from hpcjup.errors import RemoteCommandError, SubmitError
from hpcjup.schedulers.base import JobState, JobStatus, PartitionPreview
from hpcjup.schedulers.shell import sections, unanswered


def _parse_squeue(job_id: str, line: str) -> JobStatus:
    state, reason, start, nodes, left, limit = (line.split("|") + [""] * 6)[:6]
    return JobStatus(
        job_id,
        JobState.parse(state),
        reason=None if reason in ("", "None", "(null)") else reason,
        expected_start=None if start in ("", "N/A", "Unknown") else start,
        nodes=nodes or None,
        time_left=_seconds(left),
        time_limit=_seconds(limit),
    )


def parse_statuses(stdout: str, job_ids: Sequence[str], wanted: Sequence[str]) -> dict[str, JobStatus]:
    """Each job's state from the framed output of slurm_sh.STATUSES for the `wanted` ones (the valid ids of
    `job_ids`): squeue's line, else accounting's, else GONE; UNKNOWN for all when squeue did not answer."""
    found = {job_id: JobStatus(job_id, JobState.GONE) for job_id in job_ids if job_id not in wanted}
    if not wanted:
        return found
    for section, _, code, text in sections(stdout):
        if section == "squeue" and code != 0:  # no answer from the controller: UNKNOWN, in Slurm's words
            unknown = JobStatus("", JobState.UNKNOWN, reason=unanswered(text, code, "squeue"))
            return {**found, **{job_id: dataclasses.replace(unknown, job_id=job_id) for job_id in wanted}}
        for line in text.splitlines():
            fields = line.split("|")
            if section == "squeue" and fields[-1].strip() in wanted:
                found[fields[-1].strip()] = _parse_squeue(fields[-1].strip(), line)
            elif section == "sacct" and fields[0] in wanted and fields[0] not in found and len(fields) > 1:
                state, exit_code, nodes, limit = ([*fields[1:], "", "", "", ""])[:4]
                found[fields[0]] = JobStatus(
                    fields[0],
                    JobState.parse(state) if state else JobState.GONE,
                    nodes=nodes or None,
                    exit_code=exit_code or None,
                    time_limit=_seconds(limit),
                )
    return {**{job_id: JobStatus(job_id, JobState.GONE) for job_id in wanted}, **found}


def _seconds(text: str) -> int | None:
    """Seconds in a Slurm duration as squeue/sacct print it; None for UNLIMITED, NOT_SET, ..."""
    try:
        return time_to_seconds(text.strip())
    except ValueError:  # time_to_seconds accepts exactly the formats Slurm prints, nothing else
        return None


# Pending reasons that waiting will not clear: (what is wrong, in words; which flag to change).
_PARTITIONS = "`sinfo -s` lists the partitions; `scontrol show partition NAME` their limits."
_HOPELESS: dict[str, tuple[str, str]] = {
    "PartitionNodeLimit": (
        "more nodes than the partition allows",
        f"Ask for fewer --nodes, or another --partition. {_PARTITIONS}",
    ),
    "PartitionTimeLimit": (
        "a longer time than the partition allows",
        f"Ask for less --time, or another --partition. {_PARTITIONS}",
    ),
    "PartitionConfig": (
        "the request does not fit the partition (more nodes, CPUs, memory or GPUs than it has)",
        f"Ask for less (--nodes, --cpus, --mem, --gpus), or another --partition. {_PARTITIONS}",
    ),
    "BadConstraints": (
        "no node has what the job asks for",
        "Check --gpus, --mem and --cpus against `sinfo -o '%P %c %m %G'`.",
    ),
    "InvalidAccount": (
        "the account is not valid here",
        "Pass another --account: `sacctmgr show associations user=$USER` lists yours.",
    ),
    "InvalidQOS": (
        "the job's QOS is not valid for this account or partition",
        "Choose another --partition or --account, or ask your centre.",
    ),
    "JobHeldAdmin": ("an administrator holds the job", "Ask your centre's support; `scontrol show job ID` says more."),
    "DependencyNeverSatisfied": ("it depends on a job that failed", "Submit it again without the dependency."),
    "ReqNodeNotAvail": (
        "the nodes it needs are down or drained",
        f"Ask for another --partition or fewer --nodes. {_PARTITIONS}",
    ),
}
# Per-job limits of a QOS or an association (…MaxWallDurationPerJobLimit, …MaxNodePerJob, …): this job never fits.
_HOPELESS_PARTS = (
    (
        "MaxWallDurationPerJobLimit",
        ("a longer time than your QOS or association allows per job", "Ask for less --time."),
    ),
    (
        "PerJob",
        ("more than your QOS or association allows per job", "Ask for less (--nodes, --cpus, --mem, --gpus, --time)."),
    ),
)


def never_starts(status: JobStatus) -> tuple[str, str] | None:
    """(what is wrong, which flag to change) for a pending reason that waiting will not clear."""
    reason = (status.reason or "").split(",")[0].strip()
    if reason == "ReqNodeNotAvail" and "UnavailableNodes" not in (status.reason or ""):
        return None  # nodes reserved or briefly out: that clears
    return _HOPELESS.get(reason) or next((v for k, v in _HOPELESS_PARTS if k in reason), None)


def submit_error(exc: RemoteCommandError) -> SubmitError:
    """The scheduler's own words, plus what to run to find valid values."""
    message = _words(exc.stderr or exc.stdout) or f"sbatch exited with {exc.returncode}"
    return SubmitError(f"The scheduler refused the job: {message}", hint=_hint(message, exc.returncode))


def _words(text: str) -> str:
    """sbatch's lines without its prefixes ("sbatch: error: ", "allocation failure: "), each once."""
    lines = [
        ln.strip().removeprefix("sbatch: error: ").removeprefix("allocation failure: ") for ln in text.splitlines()
    ]
    return "; ".join(dict.fromkeys(line.strip() for line in lines if line.strip()))


def _hint(message: str, returncode: int) -> str:
    """What to run or change, for sbatch's refusal `message`."""
    text = message.lower()
    if "account" in text or "association" in text:
        return "Run `sacctmgr show associations user=$USER format=account,partition` to list your accounts, then pass --account."
    if "partition" in text:
        return "Run `sinfo -s` on the login node to list the partitions you may use, then pass --partition."
    if "time limit" in text:
        return "Ask for less --time; `sinfo -o '%P %l'` shows each partition's limit."
    if "node configuration is not available" in text:
        return f"Ask for less (--nodes, --cpus, --mem, --gpus), or another --partition. {_PARTITIONS}"
    if "command not found" in text or returncode == 127:
        return "This host has no Slurm commands on PATH: is it the cluster's login node?"
    return "Check the resource flags (--partition, --account, --time, --nodes, --cpus, --mem, --gpus)."


# -- start --dry-run ----------------------------------------------------------------------------------
# sbatch --test-only (22.05-24.x): "sbatch: Job 889 to start at 2026-12-02T01:12:27 using 1 processors on nodes
# node1 in partition booster".
_TEST_ONLY = re.compile(
    r"Job [0-9]+ to start at ([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}) using [0-9]+ processors"
    r" on nodes \S+ in partition ([A-Za-z0-9][A-Za-z0-9_.+-]{0,127})\s*$",
    re.MULTILINE,
)
_COUNTS = re.compile(r"([0-9]{1,9})/([0-9]{1,9})/([0-9]{1,9})/([0-9]{1,9})")  # sinfo %F: allocated/idle/other/total


def parse_sinfo(text: str) -> dict[str, tuple[str, int | None, int, int]]:
    """{partition: (availability, time limit in seconds or None, idle nodes, total nodes)} from
    `sinfo -h -o '%P|%a|%l|%F'`; the default partition is also under "" (sinfo marks it with '*')."""
    found: dict[str, tuple[str, int | None, int, int]] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or not (counts := _COUNTS.fullmatch(fields[3].strip())):
            continue
        name, avail, limit = fields[0].strip(), fields[1].strip(), fields[2].strip()
        entry = (avail, _seconds(limit), int(counts.group(2)), int(counts.group(4)))
        if name.endswith("*"):
            name = name[:-1]
            found.setdefault("", entry)
        if name:
            found.setdefault(name, entry)
    return found


def parse_preview(stdout: str, partitions: Sequence[str | None]) -> list[PartitionPreview]:
    """One preview per partition (None: the default) from the framed output of the preview snippet."""
    parts = sections(stdout)
    infos = [(code, text) for section, _, code, text in parts if section == "sinfo"]
    code, text = infos[0] if infos else (None, stdout)
    if code != 0:  # Slurm does not answer (or the command was cut short): exit 10, as for any failed remote command
        raise RemoteCommandError(
            ["sinfo", "-h", "-o", "%P|%a|%l|%F"],
            -1 if code is None else code,
            _words(text)[:300],
            "",
            hint="Check that Slurm answers: `sinfo -s` on the login node.",
        )
    sinfo = parse_sinfo(text)
    tests = {arg: (code, text) for section, arg, code, text in parts if section == "test"}
    return [_preview(name, tests.get(name or ""), sinfo) for name in partitions]


def _preview(
    name: str | None, test: tuple[int | None, str] | None, sinfo: dict[str, tuple[str, int | None, int, int]]
) -> PartitionPreview:
    """One partition's preview: sbatch --test-only's verdict, with sinfo's limit and node counts."""
    code, text = test if test is not None else (None, "")
    if code is None:
        return _with_nodes(PartitionPreview(name, note="sbatch --test-only gave no answer"), sinfo, name)
    if code != 0:
        words = _words(text) or f"sbatch --test-only exited with {code}"
        return _with_nodes(PartitionPreview(name, refusal=words, hint=_hint(words, code)), sinfo, name)
    found = _TEST_ONLY.search(text)
    chosen = name or (found.group(2) if found else None)
    note = None if found else f"Slurm gave no start estimate: {_words(text)[:200] or 'no output'}"
    availability = sinfo.get(chosen or "", ("up",))[0]
    if availability != "up":
        note = f"the partition is {availability}: jobs wait until it is up"
    return _with_nodes(PartitionPreview(chosen, estimate=found.group(1) if found else None, note=note), sinfo, chosen)


def _with_nodes(
    preview: PartitionPreview, sinfo: dict[str, tuple[str, int | None, int, int]], name: str | None
) -> PartitionPreview:
    """`preview` with the partition's limit and node counts ("" or None: the default), where sinfo said them."""
    if (name or "") not in sinfo:
        return preview
    _, limit, idle, total = sinfo[name or ""]
    return dataclasses.replace(preview, time_limit_seconds=limit, idle_nodes=idle, total_nodes=total)
