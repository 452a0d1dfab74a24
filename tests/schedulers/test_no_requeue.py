"""Every batch system gets the session's job as not rerunnable: a requeued job would start again later and
write into a session directory that `prune` may have removed, or that a new session of the same name holds."""

from __future__ import annotations

import pytest

from hpcjup.config.resources import Resources
from hpcjup.schedulers import get_scheduler
from hpcjup.schedulers.base import JobSpec

NO_RERUN = {"slurm": "#SBATCH --no-requeue", "pbs": "#PBS -r n", "lsf": "#BSUB -rn", "sge": "#$ -r n"}


@pytest.mark.parametrize("name", sorted(NO_RERUN))
def test_the_job_is_never_requeued_unless_a_directive_asks(name: str) -> None:
    scheduler = get_scheduler(name)
    asked = {"slurm": "--requeue", "pbs": "-r y", "lsf": "-r", "sge": "-r y"}[name]
    spec = JobSpec(name="x", session_dir="/s", command=["l"], resources=Resources(directives=(asked,)))
    lines = scheduler.render(spec).splitlines()
    assert NO_RERUN[name] in lines
    # The user's own directive comes after hpcjup's, so it is the one the batch system keeps.
    assert lines.index(f"{scheduler.directive} {asked}") > lines.index(NO_RERUN[name])
