"""The build job's script for every batch system that can submit (Slurm and Grid Engine also run for real in
test_build_job.py; PBS Pro and LSF cannot be installed here: their rendered scripts are checked), and doctor
--node's reading of whatever its job printed."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.config.resources import Resources
from hpcjup.envs.buildjob import ENV_JOB, follow_argv, job_command, place
from hpcjup.schedulers import get_scheduler
from hpcjup.schedulers.base import JobSpec


@pytest.mark.parametrize(("name", "word"), [("slurm", "#SBATCH"), ("sge", "#$"), ("pbs", "#PBS"), ("lsf", "#BSUB")])
def test_each_scheduler_renders_the_build_job_through_its_own_template(name: str, word: str) -> None:
    scheduler = get_scheduler(name)
    where = place(scheduler, Resources(partition="batch", account="proj1", time="8:00:00", nodes=4, gpus="2"))
    # One node, no GPUs, at most an hour: a build needs no more of the session's request.
    assert (where.resources.nodes, where.resources.gpus, where.resources.time) == (1, None, "60")
    argv = job_command(["sh", "-c", "SCRIPT", "hpcjup-env", "build", "/r", "env-1"])
    script = scheduler.render(
        JobSpec(name="env-env-1", session_dir="/r/.job-x", command=argv, resources=where.resources)
    )
    assert any(line.startswith(word) and "hpcjup-env-env-1" in line for line in script.splitlines()), script
    assert script.rstrip().splitlines()[-1] == "exec " + shlex.join(argv)
    assert f"{ENV_JOB}=1" in script.rstrip().splitlines()[-1]


def test_a_shorter_session_limit_shortens_the_build_job() -> None:
    assert place(get_scheduler("slurm"), Resources(time="20")).resources.time == "20"


def test_the_follower_cancels_only_a_job_id() -> None:
    slurm = get_scheduler("slurm")
    assert follow_argv("/r/.job-x", "/r/.stage-x", slurm, "123")[-3:] == ["scancel", "--", "123"]
    with pytest.raises(Exception, match="not a Slurm job id"):
        follow_argv("/r/.job-x", "/r/.stage-x", slurm, "123; rm -rf ~")


@given(st.lists(st.text(max_size=60), max_size=12))
def test_any_output_of_the_node_job_is_judged(lines: list[str]) -> None:
    """Whatever the compute node printed (its shell, a site's profile), doctor --node reports one check."""
    from hpcjup.schedulers.checks import Status
    from hpcjup.session.nodecheck import _Lines, judge

    seen = _Lines()
    for text in lines:
        seen.line("hpcjup-node " + text)
    check = judge(seen.found, "/r", "1", "fix")
    assert check.name == "env-root-node" and check.status in (Status.PASS, Status.FAIL)
    if (seen.found.get("root") or ["?"])[0] != "ok":
        assert check.status is Status.FAIL
