"""The Slurm adapter's rendering and parsing, against output recorded from Slurm 22.05."""

import pytest

from hpcjup.config.resources import Resources
from hpcjup.errors import RemoteCommandError, SubmitError
from hpcjup.schedulers.base import JobSpec, JobState
from hpcjup.schedulers.slurm import Slurm, _parse_squeue, submit_error

SPEC = JobSpec(
    name="lab-1a2b",
    session_dir="/home/u/.hpcjup/sessions/lab-1a2b",
    command=[
        "python3",
        "/home/u/.hpcjup/sessions/lab-1a2b/launcher.py",
        "--session-dir",
        "/home/u/.hpcjup/sessions/lab-1a2b",
    ],
    resources=Resources(partition="booster", account="proj1", time="2:00:00", nodes=2, cpus=8, mem="16G", gpus="4"),
    warn_seconds=300,
)


def test_render_directives_and_exec() -> None:
    script = Slurm().render(SPEC)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash -l"
    for directive in [
        "#SBATCH --job-name=hpcjup-lab-1a2b",
        "#SBATCH --output=job.out",
        "#SBATCH --partition=booster",
        "#SBATCH --account=proj1",
        "#SBATCH --time=2:00:00",
        "#SBATCH --nodes=2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=16G",
        "#SBATCH --gpus=4",
        "#SBATCH --signal=B:USR1@300",
    ]:
        assert directive in lines
    assert "umask 077" in lines
    assert lines[-1].startswith("exec python3 /home/u/.hpcjup/sessions/lab-1a2b/launcher.py --session-dir")


def test_render_leaves_out_unset_resources() -> None:
    script = Slurm().render(JobSpec(name="x", session_dir="/h/x", command=["python3", "l.py"]))
    assert "--partition" not in script and "--account" not in script and "--time" not in script


def test_render_quotes_the_command() -> None:
    spec = JobSpec(name="x", session_dir="/h/x", command=["python3", "/h/my dir/launcher.py", "--workdir", "$HOME; rm"])
    assert Slurm().render(spec).splitlines()[-1] == "exec python3 '/h/my dir/launcher.py' --workdir '$HOME; rm'"


@pytest.mark.parametrize(
    ("line", "state", "reason", "start", "left"),
    [
        ("PENDING|Resources|2026-11-25T14:03:11|||1:00:00", JobState.PENDING, "Resources", "2026-11-25T14:03:11", None),
        ("PENDING|Priority|N/A||0:00|1:00:00", JobState.PENDING, "Priority", None, 0),
        ("RUNNING|None|2026-11-25T13:00:00|node1|58:12|1:00:00", JobState.RUNNING, None, "2026-11-25T13:00:00", 3492),
        ("COMPLETED|None|2026-11-25T13:00:00|node1|0:00|UNLIMITED", JobState.COMPLETED, None, "2026-11-25T13:00:00", 0),
        (
            "CANCELLED|None|2026-11-25T13:00:00|node[1-2]|INVALID|1-00:00:00",
            JobState.CANCELLED,
            None,
            "2026-11-25T13:00:00",
            None,
        ),
    ],
)
def test_parse_squeue(line: str, state: JobState, reason: str | None, start: str | None, left: int | None) -> None:
    status = _parse_squeue("42", line)
    assert (status.state, status.reason, status.expected_start, status.time_left) == (state, reason, start, left)


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("CANCELLED by 1000", JobState.CANCELLED),
        ("OOM", JobState.OUT_OF_MEMORY),
        ("TO", JobState.TIMEOUT),
        ("REQUEUED", JobState.FAILED),
        ("", JobState.GONE),
    ],
)
def test_state_words(word: str, state: JobState) -> None:
    assert JobState.parse(word) is state


def test_active_states() -> None:
    assert JobState.PENDING.active and JobState.RUNNING.active and JobState.COMPLETING.active
    assert not JobState.COMPLETED.active and not JobState.CANCELLED.active and not JobState.GONE.active


def test_submit_error_keeps_the_schedulers_words_and_hints_sinfo() -> None:
    stderr = "sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid partition name specified\n"
    error = submit_error(RemoteCommandError(["sbatch"], 1, "", stderr))
    assert isinstance(error, SubmitError)
    assert "invalid partition specified: nosuch" in error.message
    assert "sinfo" in (error.hint or "")


def test_submit_error_for_accounts_hints_sacctmgr() -> None:
    stderr = "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n"
    assert "sacctmgr" in (submit_error(RemoteCommandError(["sbatch"], 1, "", stderr)).hint or "")
