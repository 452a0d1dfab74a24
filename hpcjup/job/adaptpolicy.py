"""The adaptive worker-group loop's parts that need no Dask: how many jobs a group's work asks for, and submitting.

Standard library only (a job-side file; Python 3.9), imported by adaptive.py, which runs them: the job id in a
submit command's output (`submitted_id`), the environment a submission from inside the job gets (`scrubbed`), a
group's target from its demand (`group_target`: Dask's adaptive_target for one group), the two functions the loop
runs on the Dask scheduler (`group_demand`, `tolerate`: they touch its objects only by attribute, and travel
pickled by value), one submission's record (`Job`), the submitter (`Batch`) and when the groups retire before the
session's time limit (`wind_down_at`).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from contract import (
    ENV_SCRUB,
    ENV_SCRUB_KEEP,
    ENV_SUBMIT,
    ENV_TIME_LIMIT,
    ENV_WARN_SECONDS,
    JOBS_FILE,
)  # beside this file

# The job id in a submit command's output, as the notebook's submit wrapper (daskscale.py) reads it with sed:
# "Submitted batch job ID", "ID[;CLUSTER]", "ID.SERVER", "Job <ID> is submitted", "Your job[-array] ID".
_IDS = [
    re.compile(r"Submitted batch job ([0-9]+).*"),
    re.compile(r"([0-9]+)(?:;.*)?"),
    re.compile(r"([0-9]+\.[A-Za-z0-9][A-Za-z0-9.-]*)"),
    re.compile(r"Job <([0-9]+)> is submitted.*"),
    re.compile(r"Your job(?:-array)? ([0-9]+).*"),
]
TOKEN_SHAPE = re.compile(r"[0-9a-f]{8}")


def submitted_id(stdout: str) -> str | None:
    """The job id a submit command printed, or None."""
    for line in stdout.splitlines():
        for pattern in _IDS:
            m = pattern.fullmatch(line.strip())
            if m:
                return m.group(1)
    return None


def scrubbed(env: dict[str, str]) -> dict[str, str]:
    """The environment for a submission from inside the job: the job's own HPCJUP_SCRUB-prefixed variables
    (those that break a submission) dropped, but HPCJUP_SCRUB_KEEP's (daskscale.py's wrapper does the same)."""
    prefix, keep = env.get(ENV_SCRUB, ""), set(env.get(ENV_SCRUB_KEEP, "").split())
    if not prefix:
        return dict(env)
    return {k: v for k, v in env.items() if not k.startswith(prefix) or k in keep}


def group_target(demand: dict[str, Any], threads: int, target_duration: float) -> int:
    """Jobs the group's pending work asks for: Dask's adaptive_target (Scheduler.adaptive_target) applied to the
    group's tasks and workers only: CPU time queued and running over the target duration, no more than the tasks
    there are; twice the workers when they hold more than 60% of their memory."""
    tasks, occupancy = int(demand.get("tasks", 0)), float(demand.get("occupancy", 0.0))
    cpu = min(tasks, math.ceil(occupancy / max(target_duration, 1e-3)))
    if tasks and cpu == 0:
        cpu = 1
    jobs = math.ceil(cpu / max(1, threads))
    workers = demand.get("workers") or {}
    limit = sum(int(w.get("memory_limit", 0)) for w in workers.values())
    used = sum(int(w.get("nbytes", 0)) for w in workers.values())
    if limit > 0 and used > 0.6 * limit:
        jobs = max(jobs, 2 * len(workers))
    return jobs


def group_demand(dask_scheduler: Any, resources: list[str]) -> dict[str, Any]:
    """Run on the scheduler: for each resource (group), its tasks that wait or run, their expected CPU time, and
    its workers (name, address, idle, bytes held, memory limit). Picklable by value (cloudpickle)."""
    s = dask_scheduler
    waiting = [ts for ts in [*s.unrunnable, *s.queued] if ts.resource_restrictions]
    found: dict[str, Any] = {}
    for resource in resources:
        mine = [ws for ws in s.workers.values() if resource in (ws.resources or {})]
        queued = [ts for ts in waiting if resource in ts.resource_restrictions]
        occupancy = sum(s._get_prefix_duration(ts.prefix) for ts in queued[:100]) * max(1.0, len(queued) / 100)
        occupancy += sum(ws.occupancy for ws in mine)
        found[resource] = {
            "tasks": len(queued) + sum(len(ws.processing) for ws in mine),
            "occupancy": occupancy,
            "workers": {
                str(ws.name): {
                    "address": ws.address,
                    "busy": bool(ws.processing),
                    "nbytes": ws.nbytes,
                    "memory_limit": ws.memory_limit or 0,
                }
                for ws in mine
            },
        }
    return found


def tolerate(dask_scheduler: Any, failures: int) -> int:
    """Run on the scheduler: let a task survive `failures` lost workers (Dask's allowed-failures, default 3)."""
    dask_scheduler.allowed_failures = max(dask_scheduler.allowed_failures, failures)
    return dask_scheduler.allowed_failures


@dataclass
class Job:
    """One submission of a group: its token, job id and what the loop knows of it."""

    token: str
    job_id: str
    state: str = "pending"  # pending, started, running, retiring, withdrawn, lost, done
    since: float = field(default_factory=time.monotonic)


class Batch:
    """Submissions from the node: the submit command of the job script (HPCJUP_SUBMIT), ids to dask/jobs."""

    def __init__(self, dask_dir: str) -> None:
        self.dask_dir = dask_dir

    def submit(self, script: str) -> str:
        """Submit `script`; its job id (recorded for `hpcjup stop`). RuntimeError with the scheduler's words."""
        command = os.environ.get(ENV_SUBMIT, "")
        if not command:
            raise RuntimeError("this session's job names no submit command")
        try:
            done = subprocess.run(
                [command, script],
                env=scrubbed(dict(os.environ)),
                cwd=os.path.dirname(script),
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"{command}: {exc}") from exc
        words = (done.stderr.strip() or done.stdout.strip())[-500:]
        job_id = submitted_id(done.stdout) if done.returncode == 0 else None
        if job_id is None:
            raise RuntimeError(words or f"{command} exited with code {done.returncode}")
        with open(os.path.join(self.dask_dir, JOBS_FILE), "a") as fh:  # before anything else: `stop` ends it
            fh.write(job_id + "\n")
        return job_id


def wind_down_at(started: float) -> float | None:
    """When (time.monotonic) to retire the groups before the session's limit: a minute before its warning."""
    try:
        limit, warn = int(os.environ.get(ENV_TIME_LIMIT, "0")), int(os.environ.get(ENV_WARN_SECONDS, "0"))
    except ValueError:
        return None
    return started + limit - warn - 60 if limit > 0 else None
