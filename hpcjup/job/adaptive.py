"""The adaptive worker-group loop: beside the Dask scheduler in the session's job, it grows and shrinks groups.

Run by dasklaunch.py with the job's Dask Python (`python -m adaptive SESSION_DIR`; `distributed` is there, so
this is the one job-side module that is not standard-library only). The laptop may sleep: the loop submits and
retires worker jobs from the node. Each adaptive group of groups.json (written by the laptop: min, max, idle,
the job script dask-jobqueue rendered once) gets one `GroupAdapt`, Dask's own AdaptiveCore with its plan /
requested / observed bookkeeping and its wait_count for scaling down, set to the group's idle time. Its target
is Dask's adaptive_target computed for the group alone: only the tasks that ask for the group's resource
(`resources={GROUP: 1}`) and the group's workers count.

The job side knows no batch system: jobs are submitted with the submit command the job script names
(HPCJUP_SUBMIT, the surrounding job's variables dropped as the notebook's submit wrapper drops them) and their
ids appended to dask/jobs, which `hpcjup stop` cancels (only while still named as the session's). Each
submission's script carries its own token, in its worker's name (hpcjup+SESSION+GROUP+TOKEN) and in two marks:
TOKEN.started (the job began) and TOKEN.withdrawn (left by the loop for a job it no longer wants while it
waits, or one it lost and replaced, should the scheduler requeue it: it then ends the moment it starts). A worker that leaves without being retired (preempted, cancelled,
failed) is a lost job; the group's target then asks for another. What the loop sees goes to dask/adaptive.json
(running, pending, target, lost, the last refusal), which `hpcjup ls` reads. What needs no Dask (the target's
arithmetic, the submit command, the scheduler-side probes) is in adaptpolicy.py, beside this file.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import sys
import time
import traceback
from collections.abc import Iterable
from typing import Any

import adaptpolicy  # beside this file, as are the next two
from adaptpolicy import TOKEN_SHAPE, Batch, Job, group_demand, group_target, tolerate, wind_down_at
from atomic import write_private
from contract import ADAPTIVE_DIR, ADAPTIVE_STATUS, ADAPTIVE_TOKEN, DASK_DIR, GROUPS_FILE

INTERVAL = 2.0  # seconds between two looks at the scheduler
START_TIMEOUT = 180.0  # a started job whose worker has not joined after this long is lost (--death-timeout 60)
ALLOWED_FAILURES = 1000  # with preemptible groups: a task survives this many lost workers (the evaluation's figure)
BACKOFF = (30.0, 600.0)  # after a refused submission: first wait, longest wait (doubling)
GIVE_UP = 5  # refusals in a row after which a group waits for a change of groups.json (`hpcjup scale`)


def _core() -> type:
    from distributed.deploy.adaptive_core import AdaptiveCore

    return AdaptiveCore


class GroupAdapt(_core()):  # type: ignore[misc]
    """Dask's AdaptiveCore for one worker group: plan and requested are the group's wanted jobs (waiting or
    running), observed those whose worker has joined; wait_count turns the group's idle time into Dask's
    consecutive scale-down recommendations."""

    def __init__(self, loop: Loop, name: str, spec: dict[str, Any]) -> None:
        super().__init__(minimum=0, maximum=0, wait_count=1)
        self.loop, self.name = loop, name
        self.jobs: dict[str, Job] = {}
        self.demand: dict[str, Any] = {}
        self.last_target = 0
        self.lost = 0
        self.error: str | None = None
        self.refusals = 0
        self.next_try = 0.0
        self.spec: dict[str, Any] = {}
        self.configure(spec)

    def configure(self, spec: dict[str, Any]) -> None:
        """Take the group's entry of groups.json (again): bounds, idle time, script; a change clears a give-up."""
        if spec != self.spec:
            self.refusals, self.next_try = 0, 0.0
        self.spec = spec
        self.minimum, self.maximum = int(spec["min"]), int(spec["max"])
        self.wait_count = max(1, math.ceil(float(spec.get("adapt_idle", 300)) / INTERVAL))

    @property
    def plan(self) -> set[str]:
        return {t for t, job in self.jobs.items() if job.state in ("pending", "started", "running")}

    @property
    def requested(self) -> set[str]:
        return self.plan

    @property
    def observed(self) -> set[str]:
        return {t for t, job in self.jobs.items() if job.state == "running"}

    async def target(self) -> int:
        import dask
        from dask.utils import parse_timedelta

        duration = parse_timedelta(dask.config.get("distributed.adaptive.target-duration"))
        target = group_target(self.demand, int(self.spec.get("cores", 1)), float(duration))
        bounded = max(self.minimum, min(self.maximum, target))
        if bounded != max(self.minimum, min(self.maximum, self.last_target)):
            self.loop.say(f"group {self.name}: the work asks for {target} job(s); target {bounded}")
        self.last_target = target
        return target

    def withdraw_over_maximum(self) -> None:
        """Jobs still waiting beyond the group's maximum (`hpcjup scale` lowered it) are withdrawn now, newest
        first: Dask's own scale-down would wait the group's idle time for them, and a job over the user's bound is
        not wanted. Running workers over it retire through that idle wait (their data moves first)."""
        excess = len(self.plan) - self.maximum
        if excess <= 0:
            return
        waiting = [t for t in reversed(list(self.jobs)) if self.jobs[t].state in ("pending", "started")][:excess]
        for token in waiting:
            self.loop.withdraw(self.name, token)
            self.jobs[token].state = "withdrawn"
        if waiting:
            ids = " ".join(self.jobs[t].job_id or t for t in waiting)
            self.loop.say(f"group {self.name}: over its maximum {self.maximum}: withdrew waiting job(s) {ids}")

    async def workers_to_close(self, target: int) -> list[str]:
        """The group's idle workers, those holding least data first, down to `target`."""
        workers = self.demand.get("workers") or {}
        idle = [t for t in self.observed if (workers.get(self.worker_name(t)) or {}).get("busy") is False]
        idle.sort(key=lambda t: workers[self.worker_name(t)].get("nbytes", 0))
        return idle[: max(0, len(self.observed) - target)]

    async def scale_up(self, n: int) -> None:
        wanted = min(n, self.maximum) - len(self.plan)
        if wanted <= 0 or time.monotonic() < self.next_try or self.refusals >= GIVE_UP:
            return
        for _ in range(wanted):
            token = secrets.token_hex(4)
            try:
                job_id = self.loop.batch.submit(self.loop.script_for(self.name, self.spec["script"], token))
            except RuntimeError as exc:
                self.refused(str(exc))
                return
            self.jobs[token] = Job(token, job_id)
            self.error, self.refusals = None, 0
            self.loop.say(f"group {self.name}: submitted job {job_id} (target {n})")

    def refused(self, words: str) -> None:
        """A refused submission: shown (dask/adaptive.json), tried again later and later, and not for ever."""
        self.refusals += 1
        self.error = words
        wait = min(BACKOFF[1], BACKOFF[0] * 2 ** (self.refusals - 1))
        self.next_try = time.monotonic() + wait
        more = "; given up until the group changes" if self.refusals >= GIVE_UP else f"; next try in {wait:.0f} s"
        self.loop.say(f"group {self.name}: the scheduler refused a job: {words}{more}")

    async def scale_down(self, workers: Iterable[str]) -> None:
        running = []
        for token in workers:
            job = self.jobs.get(token)
            if job is None:
                continue
            if job.state == "running":
                running.append(self.worker_name(token))
                job.state = "retiring"
            else:  # it waits in the queue (or starts): it ends as it starts
                self.loop.withdraw(self.name, token)
                job.state = "withdrawn"
        if running:
            names = sorted(running)
            self.loop.say(f"group {self.name}: retiring idle worker(s) {' '.join(names)}")
            self.loop.retire(names)

    def worker_name(self, token: str) -> str:
        return f"{self.loop.prefix}+{self.name}+{token}"

    def observe(self, demand: dict[str, Any], marks: set[str]) -> None:
        """Bring each job's state up to date from the scheduler's workers and the jobs' start marks."""
        self.demand = demand
        present = {name.rsplit("+", 1)[-1] for name in (demand.get("workers") or {})}
        now = time.monotonic()
        for token in present - set(self.jobs):  # a worker of a job submitted before the loop (re)started
            if TOKEN_SHAPE.fullmatch(token):
                self.jobs[token] = Job(token, "", "running")
        for token, job in self.jobs.items():
            if token in present:
                if job.state in ("pending", "started", "lost"):  # "lost": back after all (a requeue that raced)
                    job.state, job.since = "running", now
            elif job.state == "running":
                job.state = "lost"
                self.lost += 1
                self.loop.withdraw(self.name, token)  # requeued (a preemption), it ends as it starts: replaced now
                self.loop.say(f"group {self.name}: worker job {job.job_id or token} was lost; replaced if needed")
            elif job.state == "retiring":
                job.state = "done"
            elif job.state == "pending" and token in marks:
                job.state, job.since = "started", now
            elif job.state == "started" and now - job.since > START_TIMEOUT:
                job.state = "lost"
                self.loop.withdraw(self.name, token)
                self.lost += 1
                self.loop.say(f"group {self.name}: job {job.job_id} started but its worker never joined")

    def figures(self) -> dict[str, Any]:
        states = [job.state for job in self.jobs.values()]
        return {
            "running": states.count("running") + states.count("retiring"),
            "pending": states.count("pending") + states.count("started"),
            "target": max(self.minimum, min(self.maximum, self.last_target)),
            "min": self.minimum,
            "max": self.maximum,
            "lost": self.lost,
            "error": self.error,
            "jobs": {job.job_id: job.state for job in self.jobs.values() if job.job_id},
        }


class Loop:
    """All adaptive groups of one session, looked at every INTERVAL seconds."""

    def __init__(self, session_dir: str, client: Any) -> None:
        self.session_dir = session_dir
        self.dask_dir = os.path.join(session_dir, DASK_DIR)
        self.prefix = f"hpcjup+{os.path.basename(os.path.normpath(session_dir))}"
        self.client = client
        self.batch = Batch(self.dask_dir)
        self.groups: dict[str, GroupAdapt] = {}
        self.tolerant = False
        self.status: dict[str, Any] = {}
        self.winding_down = False

    def say(self, text: str) -> None:
        print(f"hpcjup adaptive: {text}", file=sys.stderr, flush=True)
        try:
            self.client.log_event("hpcjup-adaptive", text)  # the notebook sees it: client.get_events(...)
        except Exception:  # the event log is for the user's eyes; the loop goes on without it
            pass

    def specs(self) -> dict[str, dict[str, Any]]:
        """The adaptive groups of groups.json, with a script of this session's (a damaged entry is skipped)."""
        try:
            with open(os.path.join(self.session_dir, GROUPS_FILE), "rb") as fh:
                doc = json.loads(fh.read(1 << 20))
        except (OSError, ValueError):
            return {}
        found = {}
        for name, entry in doc.items() if isinstance(doc, dict) else ():
            if not (
                isinstance(entry, dict)
                and entry.get("max") is not None
                and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name)
            ):
                continue
            script = entry.get("script")
            try:
                ok = int(entry["min"]) >= 0 and int(entry["max"]) >= int(entry["min"])
            except (KeyError, TypeError, ValueError):
                ok = False
            if ok and isinstance(script, str) and script.startswith(self.dask_dir + os.sep):
                found[name] = entry
        return found

    def group_dir(self, group: str) -> str:
        path = os.path.join(self.dask_dir, ADAPTIVE_DIR, group)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def script_for(self, group: str, template: str, token: str) -> str:
        """This submission's script: the group's, with the token in its worker's name and marks."""
        with open(template) as fh:
            text = fh.read().replace(ADAPTIVE_TOKEN, token)
        path = os.path.join(self.group_dir(group), f"{token}.sh")
        write_private(path, text.encode())
        os.chmod(path, 0o700)
        return path

    def marks(self, group: str) -> set[str]:
        try:
            names = os.listdir(os.path.join(self.dask_dir, ADAPTIVE_DIR, group))
        except OSError:
            return set()
        return {name[: -len(".started")] for name in names if name.endswith(".started")}

    def withdraw(self, group: str, token: str) -> None:
        write_private(os.path.join(self.group_dir(group), f"{token}.withdrawn"), b"")

    def retire(self, names: list[str]) -> None:
        """Retire workers gracefully (their data moves to others first) and let them close: their jobs end."""
        self.client.retire_workers(names=names, close_workers=True, remove=True)

    def tick(self) -> None:
        specs = self.specs()
        for name in list(self.groups):
            if name not in specs:  # no longer adaptive (or gone): the loop's jobs end, the laptop's stay
                self.release(self.groups.pop(name))
        for name, spec in specs.items():
            if name in self.groups:
                self.groups[name].configure(spec)
            else:
                self.groups[name] = GroupAdapt(self, name, spec)
        if not self.groups:
            self.write_status()
            return
        if not self.tolerant and any(spec.get("preemptible") is True for spec in specs.values()):
            self.client.run_on_scheduler(tolerate, failures=ALLOWED_FAILURES)
            self.tolerant = True
            self.say(f"preemptible groups: a task now survives up to {ALLOWED_FAILURES} lost workers")
        demand = self.client.run_on_scheduler(group_demand, resources=list(self.groups))
        for name, group in self.groups.items():
            group.observe(demand.get(name) or {}, self.marks(name))
            if self.winding_down:
                group.minimum = group.maximum = 0
            group.withdraw_over_maximum()
            asyncio.run(group.adapt())
        self.write_status()

    def release(self, group: GroupAdapt) -> None:
        """Retire a group's workers (data moves) and withdraw its waiting jobs: the loop no longer looks after it."""
        names = [group.worker_name(token) for token in group.observed]
        for token in group.plan - group.observed:
            self.withdraw(group.name, token)
        if names:
            self.say(f"group {group.name} is no longer adaptive: retiring its worker(s) {' '.join(sorted(names))}")
            self.retire(names)

    def wind_down(self) -> None:
        """The session's time limit is near: retire every group's workers now (their data moves to the session's
        own workers) rather than lose them with the job, and say so in the event log."""
        if self.winding_down:
            return
        self.winding_down = True
        names = [g.worker_name(t) for g in self.groups.values() for t in g.observed]
        self.say(
            "the session's time limit is near: worker groups retire now, their data moves to the session's workers"
        )
        for group in self.groups.values():
            for token in group.observed:
                group.jobs[token].state = "retiring"
            for token in group.plan:
                self.withdraw(group.name, token)
                group.jobs[token].state = "withdrawn"
        if names:
            self.retire(names)

    def write_status(self) -> None:
        status = {"groups": {name: group.figures() for name, group in self.groups.items()}}
        if status != self.status:
            self.status = status
            write_private(
                os.path.join(self.dask_dir, ADAPTIVE_STATUS), json.dumps({**status, "time": time.time()}).encode()
            )


def main(argv: list[str]) -> int:
    """python -m adaptive SESSION_DIR: connect to the session's scheduler (DASK_CONFIG) and loop until it goes."""
    import cloudpickle
    from distributed import Client

    # The scheduler has no modules of these names: what runs there (group_demand, tolerate) travels by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(adaptpolicy)
    started = time.monotonic()
    session_dir = argv[0]
    client = Client(timeout="60s")
    loop = Loop(session_dir, client)
    deadline = wind_down_at(started)
    failures = 0
    while True:
        try:
            if deadline is not None and time.monotonic() >= deadline:
                loop.wind_down()
            loop.tick()
            failures = 0
        except Exception:  # the scheduler gone (the session ends) or busy: said, and tried again
            failures += 1
            traceback.print_exc()
            if failures >= 30 or client.status in ("closed", "closing"):
                return 1
        time.sleep(INTERVAL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
