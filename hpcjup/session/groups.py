"""Dask worker groups: what a group is, and its names and records as text.

A worker group is a set of separate worker jobs on some partition that join the session's Dask scheduler
(`WorkerGroup`: fixed, or adaptive between a minimum and a maximum). This module parses the user's spec
(`--worker-group`, `scale`'s range), checks the names that become file names, batch directives and Dask
resources, names the worker jobs (hpcjup+<session>+<group>; '+' is in no session name), and reads the
record of a group's jobs (groups.json, dask/jobs) from its bytes. No cluster here: groupjobs.py renders,
submits, records and cancels the jobs; groupstatus.py reads the adaptive loop's figures for `ls`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hpcjup.errors import UsageError
from hpcjup.job import DASK_DIR
from hpcjup.job.contract import ADAPTIVE_TOKEN as TOKEN

JOBS_FILE = f"{DASK_DIR}/jobs"  # one id a line, appended by the submit wrapper (dasklaunch.py)
MAX_READ = 1 << 20  # cluster files are read bounded: a huge file must not stall `stop`
_GROUP = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # the session-name rule: a safe path component
GROUP_NAME = re.compile(_GROUP)  # also a safe file name and Dask resource
_PARTITION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")
_SPEC = re.compile(
    rf"(?P<partition>{_GROUP}):(?:(?P<min>[0-9]{{1,6}})-)?(?P<jobs>[0-9]{{1,6}})(?:x(?P<cores>[0-9]{{1,6}}))?"
    r"(?P<preemptible>:preemptible)?"
)
_RANGE = re.compile(r"(?:(?P<min>[0-9]{1,6})-)?(?P<max>[0-9]{1,6})")
DEFAULT_IDLE = 300  # seconds a group's worker may idle before the loop retires it (the adapt_idle setting)
# The shape of a recorded id: digits first, then what schedulers add (123_4 array task, 123+1, 123.server);
# never an option, a space or a shell character. Each adapter's own `ids` checks again before a command.
_JOB_ID = re.compile(r"[0-9]{1,20}(?:[_.+][A-Za-z0-9_.-]{1,64})?")


@dataclass(frozen=True)
class WorkerGroup:
    """One group: `jobs` worker jobs of `cores` cores on `partition`; adaptive when `maximum` is set (then the
    session job's loop keeps it between `jobs` (the minimum) and `maximum` jobs, as the work needs)."""

    name: str
    partition: str
    jobs: int
    cores: int = 1
    memory: str | None = None
    maximum: int | None = None  # None: a fixed group of `jobs` jobs
    preemptible: bool = False  # lost jobs are expected (preemption): Dask tolerates many lost workers
    idle: int = DEFAULT_IDLE  # adaptive: seconds a worker may idle before it is retired

    @property
    def adaptive(self) -> bool:
        return self.maximum is not None

    @classmethod
    def parse(cls, text: str, idle: int = DEFAULT_IDLE) -> WorkerGroup:
        """PARTITION:JOBS[xCORES] (fixed) or PARTITION:MIN-MAX[xCORES] (adaptive), either with a :preemptible
        suffix, e.g. batch:4x8, batch:0-16x8:preemptible; the group is named after its partition."""
        m = _SPEC.fullmatch(text.strip())
        if m is None or int(m["cores"] or 1) < 1 or int(m["min"] or 0) > int(m["jobs"]):
            raise UsageError(
                f"--worker-group {text!r} is not valid.",
                hint="Use PARTITION:JOBS[xCORES] or PARTITION:MIN-MAX[xCORES] (adaptive), each optionally followed "
                "by :preemptible, e.g. batch:4x8 or batch:0-16x8 (a partition named like a session: letters, "
                "digits, '.', '_', '-'; for others use `hpcjup scale SESSION GROUP JOBS --partition P`).",
            )
        adaptive = m["min"] is not None
        low = int(m["min"]) if adaptive else int(m["jobs"])
        return cls(
            m["partition"],
            m["partition"],
            low,
            int(m["cores"] or 1),
            maximum=int(m["jobs"]) if adaptive else None,
            preemptible=m["preemptible"] is not None,
            idle=idle,
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "partition": self.partition,
            "jobs": self.jobs,
            "cores": self.cores,
            "memory": self.memory,
        }
        if self.adaptive:
            doc.update(min=self.jobs, max=self.maximum, adapt_idle=self.idle)
        if self.preemptible:
            doc["preemptible"] = True
        return doc


def parse_range(text: str) -> tuple[int, int | None]:
    """`hpcjup scale`'s size: JOBS (a fixed group: (JOBS, None)) or MIN-MAX (adaptive: (MIN, MAX))."""
    m = _RANGE.fullmatch(text.strip())
    if m is None or (m["min"] is not None and int(m["min"]) > int(m["max"])):
        raise UsageError(
            f"Worker group size {text!r} is not valid.",
            hint="Give a number of jobs (e.g. 4) or an adaptive range MIN-MAX (e.g. 0-16).",
        )
    if m["min"] is None:
        return int(m["max"]), None
    return int(m["min"]), int(m["max"])


def check_group_name(name: str) -> str:
    """A valid group name (it becomes a file name and a Dask resource), or a UsageError."""
    if not GROUP_NAME.fullmatch(name):
        raise UsageError(
            f"Worker group name {name!r} is not valid.",
            hint="Use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, e.g. gpu.",
        )
    return name


def check_partition(name: str) -> str:
    """A valid partition name (it becomes a batch directive), or a UsageError."""
    if not _PARTITION.fullmatch(name):
        raise UsageError(f"Partition {name!r} is not valid.", hint="Give a partition name such as batch.")
    return name


def job_name(session: str, group: str) -> str:
    """The name of a worker job: '+' separates, and no session or group name contains one."""
    return f"hpcjup+{session}+{group}"


def worker_name(session: str, group: WorkerGroup) -> str:
    """The `--name` of a group's worker: Dask refuses a second worker of a name it knows, so each job's differs.
    An adaptive group's carries its submission's token (the loop maps workers to jobs by it); a fixed group's
    one script serves all its jobs, so the job's shell (bash) makes it unique: its host and its own pid."""
    return job_name(session, group.name) + (f"+{TOKEN}" if group.adaptive else "+${HOSTNAME%%.*}-$$")


def valid_ids(ids: Iterable[object]) -> list[str]:
    """The well-formed job ids among `ids`, each once, in order; anything else never reaches a command line."""
    found: list[str] = []
    for job_id in ids:
        if isinstance(job_id, str) and _JOB_ID.fullmatch(job_id) and job_id not in found:
            found.append(job_id)
    return found


# -- the record: groups.json (definitions and ids per group) and dask/jobs (the notebook's jobs), as bytes --
def parse_groups(data: bytes) -> dict[str, dict[str, Any]]:
    """groups.json as {group: entry}; a damaged file or entry counts as absent (it came from the cluster)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {name: entry for name, entry in doc.items() if GROUP_NAME.fullmatch(name) and isinstance(entry, dict)}


def group_of(name: str, entry: dict[str, Any]) -> WorkerGroup | None:
    """The group a groups.json entry defines, or None if the entry is damaged."""
    try:
        partition, memory = entry["partition"], entry.get("memory")
        if not isinstance(partition, str) or not _PARTITION.fullmatch(partition):
            return None
        adaptive = entry.get("max") is not None
        return WorkerGroup(
            name,
            partition,
            int(entry["min"] if adaptive else entry["jobs"]),
            int(entry.get("cores", 1)),
            memory if isinstance(memory, str) else None,
            maximum=int(entry["max"]) if adaptive else None,
            preemptible=entry.get("preemptible") is True,
            idle=int(entry.get("adapt_idle", DEFAULT_IDLE)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def recorded_ids(entry: dict[str, Any]) -> list[str]:
    """The valid job ids a groups.json entry recorded."""
    ids = entry.get("job_ids")
    return valid_ids(ids) if isinstance(ids, list) else []


def ids_in(groups_json: bytes | None, jobs_file: bytes | None) -> list[str]:
    """The valid job ids recorded in a session's groups.json and dask/jobs (damaged content counts as none)."""
    ids = [job_id for entry in parse_groups((groups_json or b"")[:MAX_READ]).values() for job_id in recorded_ids(entry)]
    return valid_ids([*ids, *(jobs_file or b"")[:MAX_READ].decode(errors="replace").split()])
