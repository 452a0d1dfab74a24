"""Dask worker groups on the cluster: their jobs rendered, submitted, recorded, scaled and cancelled.

The job scripts come from dask-jobqueue (it knows every scheduler's directives), rendered
on the login node with the cluster's own Python; each group's workers carry a Dask
resource named after the group, so tasks can target it (`resources={"gpu": 1}`). The
group definitions live in the session directory (groups.json), so `hpcjup scale` works
from any laptop. A session's jobs are found only by the ids it recorded: groups.json keeps the
ids of each group, dask/jobs those the notebook submitted through the session's submit
wrapper (dask-jobqueue's cluster classes, e.g. SLURMCluster). A name is never enough to cancel a job, and
neither is a recorded id: the job must also still carry the session's name (`cancel_own_snippet`).
Everything scheduler-specific comes from the session's adapter: dask-jobqueue's job class
(`Scheduler.jobqueue`), where a job runs (`worker_job_options`), submission (`submit_worker`),
the state of the recorded jobs (`statuses`) and their cancellation (`cancel_own_snippet`).
What a group is, and its names, are in groups.py.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from hpcjup.errors import RemoteCommandError, SubmitError, UsageError
from hpcjup.job import DASK_DIR, SETUP_FILE
from hpcjup.job.contract import ADAPTIVE_DIR, GROUPS_FILE
from hpcjup.job.contract import ADAPTIVE_TOKEN as TOKEN
from hpcjup.session.groups import (
    MAX_READ,
    WorkerGroup,
    check_group_name,
    check_partition,
    group_of,
    job_name,
    parse_groups,
    recorded_ids,
    valid_ids,
    worker_name,
)
from hpcjup.session.jobscript import unwrapped
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import SessionRecord
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.schedulers.base import Scheduler

# Runs on the login node with the cluster's Python: dask-jobqueue's job class for the scheduler (module,
# class, from the adapter) renders one worker job's script; "options" say where it runs (queue, account, ...).
# No nanny: the worker is the job's own process, so a batch system's SIGTERM (a preemption's grace time) reaches
# it and daskretire.py (a preload of the session's workers) retires it, its data moving to workers that stay.
_RENDER = """
import importlib, json, sys
s = json.load(sys.stdin)
cls = getattr(importlib.import_module("dask_jobqueue." + s["module"]), s["class"])
job = cls(scheduler=s["scheduler"], name=s.get("worker_name", s["name"]), nanny=False, cores=s["cores"], memory=s["memory"], processes=1,
          python=s["python"], job_name=s["name"], job_script_prologue=s["prologue"], log_directory=s["logdir"],
          worker_extra_args=["--resources", s["group"] + "=1", "--death-timeout", "60", *s["extra"]], **s["options"])
print(job.job_script())
"""

# `bash -lc _RUN bash N WRAPPER(N words) PYTHON ARGS...`: PYTHON itself where it exists here (nothing to copy on
# the login node), else through the wrapper (job/envlocal.sh), which makes a copy here of an env whose tree was
# dropped after packing (envs/pack.py) and removes it when the render ends.
_RUN = """umask 077
n=$1; shift
eval "python=\\${$((n + 1))}"
if [ "$n" -eq 0 ] || [ ! -x "$python" ]; then exec "$@"; fi
shift "$n"
exec "$@"
"""


# -- the record on the cluster ---------------------------------------------------------------------
def _read_groups(transport: Transport, paths: SessionPaths) -> dict[str, dict[str, Any]]:
    try:
        return parse_groups(transport.read_file(paths.file(GROUPS_FILE))[:MAX_READ])
    except FileNotFoundError:
        return {}


def load_groups(transport: Transport, paths: SessionPaths) -> dict[str, WorkerGroup]:
    """The session's worker groups by name (damaged entries left out)."""
    groups = {name: group_of(name, entry) for name, entry in _read_groups(transport, paths).items()}
    return {name: group for name, group in groups.items() if group is not None}


def _record(
    transport: Transport, paths: SessionPaths, doc: dict[str, dict[str, Any]], group: WorkerGroup, ids: list[str]
) -> None:
    """Write the group's definition and its job ids into groups.json (atomically), keeping the other groups."""
    doc = {**doc, group.name: {**group.to_json(), "job_ids": valid_ids(ids)}}
    transport.write_file(paths.file(GROUPS_FILE), json.dumps(doc, indent=2).encode())


# -- the session API -----------------------------------------------------------------------------
def scale_group(
    transport: Transport,
    paths: SessionPaths,
    record: SessionRecord,
    address: str,
    group: WorkerGroup,
    jobs: int,
    scheduler: Scheduler | None = None,
) -> list[str]:
    """Bring `group` to `jobs` running or pending worker jobs (joining the Dask scheduler at `address`);
    returns the group's job ids afterwards. `scheduler`: the session's adapter (default: the record's)."""
    if scheduler is None:
        from hpcjup.schedulers import get_scheduler

        scheduler = get_scheduler(record.scheduler)
    check_group_name(group.name)
    doc = _read_groups(transport, paths)
    entry = doc.get(group.name, {})
    if group.adaptive:
        return adapt_group(transport, paths, record, address, group, scheduler, doc)
    known = group_of(group.name, entry)
    group = known if known is not None and not known.adaptive else group  # a new or once adaptive group: as given
    group = WorkerGroup(group.name, check_partition(group.partition), jobs, group.cores, group.memory)
    current = active_ids(transport, scheduler, recorded_ids(entry))
    try:
        if jobs < len(current):
            cancel_ids(transport, scheduler, current[jobs:], record.name)
            del current[jobs:]
        elif jobs > len(current):
            script = _render(transport, scheduler, paths, record, address, group)
            for _ in range(jobs - len(current)):
                current.append(scheduler.submit_worker(transport, script))
    finally:  # also after a refused submission: the jobs already accepted stay on record
        _record(transport, paths, doc, group, current)
    return current


def adapt_group(
    transport: Transport,
    paths: SessionPaths,
    record: SessionRecord,
    address: str,
    group: WorkerGroup,
    scheduler: Scheduler,
    doc: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """Make `group` adaptive (or change its bounds): render its job script once and record min, max and idle in
    groups.json; the session job's loop (hpcjup/job/adaptive.py) submits and retires its jobs from then on, and
    picks a change up within seconds. The group's jobs of a fixed past stay recorded (`stop` ends them); the
    result: those of them still active."""
    doc = _read_groups(transport, paths) if doc is None else doc
    entry = doc.get(group.name, {})
    known = group_of(group.name, entry)
    if known is not None:  # a new range for a known group keeps its shape (partition, cores, memory)
        group = WorkerGroup(
            group.name, known.partition, group.jobs, known.cores, known.memory, group.maximum,
            group.preemptible or known.preemptible, group.idle,
        )  # fmt: skip
    check_partition(group.partition)
    script = entry.get("script") if known is not None and known.adaptive else None
    if not isinstance(script, str) or not script.startswith(paths.file(f"{DASK_DIR}/")):
        script = _render(transport, scheduler, paths, record, address, group)
    current = active_ids(transport, scheduler, recorded_ids(entry))
    doc = {**doc, group.name: {**group.to_json(), "script": script, "job_ids": current}}
    transport.write_file(paths.file(GROUPS_FILE), json.dumps(doc, indent=2).encode())
    return current


def lifetime_args(walltime: int | None) -> list[str]:
    """dask-worker's options that retire a worker job's worker (its data moves to others) a little before the
    job's own time limit, instead of dying with it; none when the limit is unknown or too short for a margin."""
    if not walltime or walltime < 300:
        return []
    margin = max(120, walltime // 20)  # a staggered retirement needs a few minutes' room before the limit
    return ["--lifetime", f"{walltime - margin}s", "--lifetime-stagger", f"{min(60, margin // 4)}s"]


def _render(
    transport: Transport,
    scheduler: Scheduler,
    paths: SessionPaths,
    record: SessionRecord,
    address: str,
    group: WorkerGroup,
) -> str:
    if scheduler.jobqueue is None:
        raise UsageError(
            f"Worker groups need a batch system; this session runs on {scheduler.title or scheduler.name}.",
            hint="Use the session's own Dask workers (--workers), or start it on a cluster.",
        )
    module, cls = scheduler.jobqueue
    # The session's Python, through its container runtime or its env's node-local image (envlocal.sh) if it has
    # one; the render runs on the login node with the Python itself.
    python = record.worker_python
    account = record.resources.get("account")
    walltime = record.resources.get("time") or "01:00:00"
    spec = {
        "module": module,
        "class": cls,
        "scheduler": address,
        "name": job_name(record.name, group.name),
        "worker_name": worker_name(record.name, group),
        "options": scheduler.worker_job_options(
            group.partition,
            account if isinstance(account, str) else None,
            str(walltime),
            directives=record.resources_obj.directives,  # storage, constraints: workers need them as the job did
            cores=group.cores,
            memory=group.memory or f"{group.cores}GB",
        ),
        "cores": group.cores,
        "memory": group.memory or f"{group.cores}GB",
        "python": shlex.join(python),  # dask-jobqueue writes it into the worker's command line as it is
        "group": group.name,
        "prologue": worker_prologue(paths) + (adaptive_prologue(paths, group.name) if group.adaptive else []),
        "extra": lifetime_args(record.resources_obj.time_seconds or 3600),
        "logdir": paths.file(f"{DASK_DIR}/logs"),
    }
    bare = unwrapped(python, paths)
    wrapper = python[: len(python) - len(bare)]
    try:
        # umask 077: dask-jobqueue creates the log directory, and the worker logs are nobody else's business.
        # The render runs where the workers will (inside the session's container, if any): dask-jobqueue is there.
        argv = ["bash", "-lc", _RUN, "bash", str(len(wrapper)), *wrapper, *bare, "-c", _RENDER]
        result = transport.run(argv, input=json.dumps(spec).encode())
    except RemoteCommandError as exc:
        raise SubmitError(
            f"Could not render the worker job with dask-jobqueue: {exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc}",
            hint="Install dask-jobqueue in the cluster environment (pip install dask-jobqueue).",
        ) from exc
    path = paths.file(f"{DASK_DIR}/{group.name}.sh")
    transport.write_file(path, result.stdout.encode(), 0o700)
    return path


def worker_prologue(paths: SessionPaths) -> list[str]:
    """Shell lines before a worker starts: a private umask, the profile's environment (if the session wrote one), the
    Dask config (which also makes the worker load daskhttp.py: no HTTP port)."""
    setup = shlex.quote(paths.file(SETUP_FILE))
    config = shlex.quote(paths.file(f"{DASK_DIR}/config"))
    # umask 077: Dask's scratch (in the session's private directory's name, made here on this node) and what the
    # worker writes are nobody else's.
    return ["umask 077", f"if [ -r {setup} ]; then . {setup}; fi", f"export DASK_CONFIG={config}"]


def adaptive_prologue(paths: SessionPaths, group: str) -> list[str]:
    """An adaptive group's job, as it starts: end at once if the loop withdrew it while it waited (the job side has
    no cancel command), else leave a mark that it started (the loop then waits for its worker)."""
    marks = shlex.quote(paths.file(f"{DASK_DIR}/{ADAPTIVE_DIR}/{group}")) + f"/{TOKEN}"
    return [f"if [ -e {marks}.withdrawn ]; then exit 0; fi", f": > {marks}.started"]


# -- the recorded jobs, through the adapter ----------------------------------------------------------
def active_ids(transport: Transport, scheduler: Scheduler, ids: list[str]) -> list[str]:
    """Those of `ids` that are still pending or running (one scheduler query), in recorded order."""
    ids = scheduler.ids(valid_ids(ids))
    if not ids:
        return []
    found = scheduler.statuses(transport, ids)
    return [job_id for job_id in ids if job_id in found and found[job_id].state.active]


def cancel_ids(transport: Transport, scheduler: Scheduler, ids: list[str], session: str) -> list[str]:
    """Cancel those of exactly these jobs that are still active, the user's own and still named as `session`'s
    (job_name); the ones cancelled."""
    snippet = scheduler.cancel_own_snippet({job_id: job_name(session, "") for job_id in scheduler.ids(valid_ids(ids))})
    if not snippet:
        return []
    out = transport.run(["sh", "-c", snippet], check=False).stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("hpcjup-cancelled ")]
