"""`start --preemptible` (issue 22): the job is submitted requeueable where the batch system can bring a
preempted job back, not requeueable otherwise, and refused (exit 2) where it cannot come back."""

from __future__ import annotations

import json

import pytest

from hpcjup.errors import ExitCode, UsageError
from hpcjup.schedulers import get_scheduler
from hpcjup.schedulers.base import JobSpec
from tests.cli.helpers import run

pytestmark = pytest.mark.one_backend

#: Each batch system's directive for a requeueable job, and for one that is not.
RERUN = {
    "slurm": ("#SBATCH --requeue", "#SBATCH --no-requeue"),
    "pbs": ("#PBS -r y", "#PBS -r n"),
    "lsf": ("#BSUB -r", "#BSUB -rn"),
}


@pytest.mark.parametrize("name", sorted(RERUN))
def test_a_preemptible_session_is_requeueable_and_only_it(name: str) -> None:
    yes, no = RERUN[name]
    preemptible = get_scheduler(name).render(JobSpec(name="x", session_dir="/s", command=["l"], requeue=True))
    plain = get_scheduler(name).render(JobSpec(name="x", session_dir="/s", command=["l"]))
    assert yes in preemptible.splitlines() and no not in preemptible.splitlines()
    assert no in plain.splitlines() and yes not in plain.splitlines()


def test_slurm_tells_the_launcher_how_often_the_job_ran_before() -> None:
    script = get_scheduler("slurm").render(JobSpec(name="x", session_dir="/s", command=["l"], requeue=True))
    assert 'export HPCJUP_RESTARTS="${SLURM_RESTART_COUNT:-0}"' in script.splitlines()


@pytest.mark.parametrize("name", ["sge", "local", "none"])
def test_where_a_preempted_job_cannot_come_back_preemptible_is_refused(name: str) -> None:
    with pytest.raises(UsageError) as refused:
        get_scheduler(name).check_preemptible()
    assert "cannot run a preemptible session" in refused.value.message
    assert "--preemptible" in (refused.value.hint or "")


def test_sge_says_why() -> None:
    with pytest.raises(UsageError, match="suspended"):
        get_scheduler("sge").check_preemptible()


def test_start_preemptible_on_this_machine_is_a_usage_error(laptop_env: dict[str, str]) -> None:
    result = run(
        ["start", "--local", "--python", "/opt/hpcjup-cluster-env/bin/python", "--preemptible", "--json"], laptop_env
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    error = json.loads(result.stdout or result.stderr)
    assert "cannot run a preemptible session" in json.dumps(error), error
