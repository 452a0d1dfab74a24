"""What each adapter renders and runs, recorded: the job scripts for a few representative requests, the sh
snippets that end jobs, the dry-run query, the worker-job options, and the commands `status`, `statuses` and
`cancel` send. Recorded from the adapters as they were before `Scheduler` became a template (issue 24), so a
refactoring that changes a byte of what reaches a cluster fails here; a change on purpose re-records
(`HPCJUP_RECORD=1 pytest tests/schedulers/test_transcripts.py`) and says why in its commit.
"""

from __future__ import annotations

import copy
import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from hpcjup.config.resources import Resources
from hpcjup.errors import HpcjupError
from hpcjup.schedulers import get_scheduler
from hpcjup.schedulers.base import JobSpec, JobState, JobStatus, Scheduler
from hpcjup.transport.base import CommandResult

DATA = Path(__file__).parent / "data" / "transcripts"
ADAPTERS = ("slurm", "pbs", "pbs-nci", "lsf", "sge", "local", "none")
#: A job id of each adapter's form (local: PID.START).
IDS = {"slurm": ("123", "124"), "pbs": ("123.pbs01", "124.pbs01"), "lsf": ("123", "124"), "sge": ("123", "124")}
LAUNCHER = ("python3", "/home/u/.hpcjup/sessions/lab/launcher.py", "--session-dir", "/home/u/.hpcjup/sessions/lab")
SPECS = {
    "bare": JobSpec(name="lab", session_dir="/home/u/.hpcjup/sessions/lab", command=LAUNCHER),
    "full": JobSpec(
        name="lab",
        session_dir="/home/u/.hpcjup/sessions/lab",
        command=LAUNCHER,
        resources=Resources(
            partition="main",
            account="proj1",
            time="2:00:00",
            nodes=2,
            cpus=8,
            mem="16G",
            gpus="4",
            directives=("--extra one", "-l two"),
        ),
        warn_seconds=300,
        setup=(". /home/u/.hpcjup/sessions/lab/setup.sh",),
    ),
    "one-node": JobSpec(
        name="one",
        session_dir="/s/one dir",
        command=LAUNCHER,
        resources=Resources(time="30", cpus=4, mem="4000M", gpus="a100:2"),
        warn_seconds=30,
    ),
    "shrink": JobSpec(
        name="shrink",
        session_dir="/s/shrink",
        command=LAUNCHER,
        resources=Resources(partition="a", account="b", time="4:00:00", time_min="1:00:00", nodes=1),
        warn_seconds=120,
    ),
}


class Recorder:
    """Answers every command with one exit code and nothing printed, and writes down each argv it was given."""

    name = "recorder"
    destination = "recorder"

    def __init__(self, returncode: int = 0) -> None:
        self.returncode = returncode
        self.commands: list[str] = []

    def run(self, argv: Sequence[str], *, check: bool = True, **_: object) -> CommandResult:
        self.commands.append(shlex.join(argv))
        return CommandResult(tuple(argv), self.returncode, "", "")


def outcome(what: Callable[[], object]) -> str:
    """What `what` returns, or the error it raises (its class and message), as text."""
    try:
        return str(what())
    except HpcjupError as exc:
        return f"{type(exc).__name__}: {exc}"


def commands(scheduler: Scheduler, act: Callable[[Recorder], object], returncode: int = 0) -> str:
    """The commands `act` sends through a transport that answers each with `returncode` and no output."""
    recorder = Recorder(returncode)
    result = outcome(lambda: act(recorder))
    return "\n".join([*recorder.commands, f"-> {result}"])


def transcript(name: str) -> str:
    """Everything recorded of the adapter `name`, as one text."""
    scheduler = get_scheduler(name)
    first, second = IDS.get(name, ("123.456", "124.789"))
    parts: dict[str, str] = {}
    for label, spec in SPECS.items():
        parts[f"render {label}"] = outcome(lambda: scheduler.render(spec))  # noqa: B023 (called at once)
    parts["submit_command"] = scheduler.submit_command
    parts["stop_snippet"] = scheduler.stop_snippet([first], [second])
    parts["stop_snippet running"] = scheduler.stop_snippet([first, "bad id"], [])
    parts["kill_snippet"] = scheduler.kill_snippet([first, second])
    parts["leftovers_snippet"] = scheduler.leftovers_snippet("/home/u/.hpcjup/sessions/lab/")
    parts["cancel_own_snippet"] = scheduler.cancel_own_snippet({first: "hpcjup+lab+", second: "hpcjup+lab+"})
    parts["preview_snippet"] = scheduler.preview_snippet("#!/bin/sh\ntrue\n", [None, "main"])
    parts["worker_job_options"] = outcome(
        lambda: sorted(
            scheduler.worker_job_options(
                "main", "proj1", "1:30:00", directives=["--mine"], cores=4, memory="8G"
            ).items()
        )
    )
    parts["status"] = commands(scheduler, lambda t: scheduler.status(t, first))  # type: ignore[arg-type]
    parts["status bad id"] = commands(scheduler, lambda t: scheduler.status(t, "1; rm"))  # type: ignore[arg-type]
    parts["statuses"] = commands(scheduler, lambda t: scheduler.statuses(t, [first, "x y", second]))  # type: ignore[arg-type]
    parts["cancel graceful"] = commands(scheduler, lambda t: scheduler.cancel(t, first))  # type: ignore[arg-type]
    running = copy.copy(scheduler)  # the same adapter, told that its job runs
    running.status = lambda _t, job_id: JobStatus(job_id, JobState.RUNNING)  # type: ignore[method-assign]
    parts["cancel graceful running"] = commands(running, lambda t: running.cancel(t, first))  # type: ignore[arg-type]
    parts["cancel outright"] = commands(scheduler, lambda t: scheduler.cancel(t, first, graceful=False))  # type: ignore[arg-type]
    return "".join(f"=== {label}\n{text}\n" for label, text in parts.items())


@pytest.mark.parametrize("name", ADAPTERS)
def test_the_adapter_renders_and_runs_what_was_recorded(name: str) -> None:
    path = DATA / f"{name}.txt"
    got = transcript(name)
    if os.environ.get("HPCJUP_RECORD") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    assert got == path.read_text()
