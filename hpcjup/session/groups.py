"""Dask worker groups on other partitions: separate worker jobs that join the session's scheduler.

The job scripts come from dask-jobqueue (it knows every scheduler's directives), rendered
on the login node with the cluster's own Python; each group's workers carry a Dask
resource named after the group, so tasks can target it (`resources={"gpu": 1}`). The
group definitions live in the session directory (groups.json), so `hpcjup scale` works
from any laptop. Worker jobs are named hpcjup-<session>-<group> and end with the session.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from hpcjup.errors import RemoteCommandError, SubmitError, UsageError
from hpcjup.job import DASK_DIR
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import SessionRecord
from hpcjup.transport.base import Transport

GROUPS_FILE = "groups.json"
_SPEC = re.compile(r"^(?P<partition>[A-Za-z0-9][A-Za-z0-9_.+-]*):(?P<jobs>\d+)(?:x(?P<cores>\d+))?$")

# Runs on the login node with the cluster's Python: dask-jobqueue renders one worker job's script.
_RENDER = """
import json, sys
from dask_jobqueue.slurm import SLURMJob
s = json.load(sys.stdin)
job = SLURMJob(scheduler=s["scheduler"], name=s["name"], queue=s["partition"], account=s["account"], cores=s["cores"],
               memory=s["memory"], processes=1, walltime=s["walltime"], python=s["python"], job_name=s["name"],
               job_script_prologue=s["prologue"], log_directory=s["logdir"],
               worker_extra_args=["--resources", s["group"] + "=1", "--death-timeout", "60"])
print(job.job_script())
"""


@dataclass(frozen=True)
class WorkerGroup:
    """One group: `jobs` worker jobs of `cores` cores on `partition`."""

    name: str
    partition: str
    jobs: int
    cores: int = 1
    memory: str | None = None

    @classmethod
    def parse(cls, text: str) -> WorkerGroup:
        """PARTITION:JOBS[xCORES], e.g. batch:4x8; the group is named after its partition."""
        m = _SPEC.match(text.strip())
        if not m:
            raise UsageError(
                f"--worker-group {text!r} is not valid.", hint="Use PARTITION:JOBS[xCORES], e.g. batch:4x8."
            )
        return cls(m["partition"], m["partition"], int(m["jobs"]), int(m["cores"] or 1))


def job_name(session: str, group: str) -> str:
    return f"hpcjup-{session}-{group}"


def load_groups(transport: Transport, paths: SessionPaths) -> dict[str, WorkerGroup]:
    try:
        data = json.loads(transport.read_file(paths.file(GROUPS_FILE)))
    except FileNotFoundError:
        return {}
    return {name: WorkerGroup(**spec) for name, spec in data.items()}


def scale_group(
    transport: Transport,
    paths: SessionPaths,
    record: SessionRecord,
    python: str,
    scheduler: str,
    group: WorkerGroup,
    jobs: int,
) -> list[str]:
    """Bring `group` to `jobs` running or pending worker jobs; returns the group's job ids afterwards."""
    groups = load_groups(transport, paths)
    group = groups.get(group.name, group)
    groups[group.name] = WorkerGroup(group.name, group.partition, jobs, group.cores, group.memory)
    transport.write_file(
        paths.file(GROUPS_FILE), json.dumps({n: asdict(g) for n, g in groups.items()}, indent=2).encode()
    )
    current = group_jobs(transport, record.name, group.name)
    if jobs < len(current):
        transport.run(["scancel", *current[jobs:]])
        return current[:jobs]
    if jobs > len(current):
        script = _render(transport, paths, record, python, scheduler, group)
        for _ in range(jobs - len(current)):
            current.append(_submit(transport, script))
    return current


def group_jobs(transport: Transport, session: str, group: str | None = None) -> list[str]:
    """Ids of the session's worker jobs (of one group, or all), oldest first."""
    prefix = job_name(session, group) if group else f"hpcjup-{session}-"
    out = transport.run(["squeue", "-h", "--me", "-o", "%i %j"], check=False).stdout
    ids = [
        line.split()[0]
        for line in out.splitlines()
        if len(line.split()) == 2 and _matches(line.split()[1], prefix, group)
    ]
    return sorted(ids, key=int)


def _matches(name: str, prefix: str, group: str | None) -> bool:
    return name == prefix if group else name.startswith(prefix)


def _render(
    transport: Transport, paths: SessionPaths, record: SessionRecord, python: str, scheduler: str, group: WorkerGroup
) -> str:
    config = paths.file(f"{DASK_DIR}/config")
    spec = {
        "scheduler": scheduler,
        "name": job_name(record.name, group.name),
        "partition": group.partition,
        "account": record.resources.get("account"),
        "cores": group.cores,
        "memory": group.memory or f"{group.cores}GB",
        "walltime": record.resources.get("time") or "01:00:00",
        "python": python,
        "group": group.name,
        "prologue": [f"export DASK_CONFIG={config}"],
        "logdir": paths.file(f"{DASK_DIR}/logs"),
    }
    try:
        result = transport.run(["bash", "-lc", 'exec "$0" -c "$1"', python, _RENDER], input=json.dumps(spec).encode())
    except RemoteCommandError as exc:
        raise SubmitError(
            f"Could not render the worker job with dask-jobqueue: {exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc}",
            hint="Install dask-jobqueue in the cluster environment (pip install dask-jobqueue).",
        ) from exc
    path = paths.file(f"{DASK_DIR}/{group.name}.sh")
    transport.write_file(path, result.stdout.encode(), 0o700)
    return path


def _submit(transport: Transport, script: str) -> str:
    try:
        out = transport.run(["sh", "-c", 'umask 077 && exec sbatch --parsable "$1"', "sh", script]).stdout.strip()
    except RemoteCommandError as exc:
        from hpcjup.schedulers.slurm import submit_error

        raise submit_error(exc) from exc
    return out.split(";")[0]


def cancel_worker_jobs(transport: Transport, session: str) -> list[str]:
    """Cancel every worker job of the session (they would end on their own once the scheduler is gone)."""
    ids = group_jobs(transport, session)
    if ids:
        transport.run(["scancel", *ids], check=False)
    return ids
