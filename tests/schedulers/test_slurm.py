"""The Slurm adapter's rendering and parsing, against output recorded from Slurm 22.05."""

import subprocess
from pathlib import Path

import pytest

from hpcjup import job
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


def exported(lines: list[str], env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The HPCJUP_* variables the script's environment lines export, run by the real sh."""
    script = "\n".join([*lines, "env"])
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("HPCJUP_"))


def test_job_environment_from_slurms_variables(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    scontrol = bindir / "scontrol"  # as Slurm 22.05 prints `scontrol show hostnames node[1-3]`
    scontrol.write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames node[1-3]" ] && printf "node1\\nnode2\\nnode3\\n"\n')
    scontrol.chmod(0o755)
    slurm = {"SLURM_JOB_ID": "77", "SLURMD_NODENAME": "node2", "SLURM_JOB_NODELIST": "node[1-3]"}
    env = {"PATH": f"{bindir}:/usr/bin:/bin", **slurm, "SLURM_CPUS_ON_NODE": "8", "SLURM_JOB_ACCOUNT": "acct"}
    spec = JobSpec(name="x", session_dir="/h/x", command=["true"], resources=Resources(partition="booster", time="90"))
    got = exported(Slurm().job_environment(spec), env, tmp_path)
    assert set(got) == {getattr(job, name) for name in dir(job) if name.startswith("ENV_")}
    assert (got["HPCJUP_JOB_SCHEDULER"], got["HPCJUP_JOB_ID"], got["HPCJUP_NODE"]) == ("slurm", "77", "node2")
    assert got["HPCJUP_NODELIST"].split() == ["node2", "node1", "node3"], "each host once, this one first"
    assert got["HPCJUP_CPUS"] == "8" and got["HPCJUP_TIME_LIMIT"] == "5400" and got["HPCJUP_WARN_SIGNAL"] == "1"
    assert (got["HPCJUP_JOB_PARTITION"], got["HPCJUP_JOB_ACCOUNT"]) == ("booster", "acct"), (
        "the request, else Slurm's choice"
    )
    assert (got["HPCJUP_JOBQUEUE"], got["HPCJUP_SUBMIT"], got["HPCJUP_SCRUB"]) == ("slurm", "sbatch", "SLURM_")
    assert got["HPCJUP_SCRUB_KEEP"] == "SLURM_CONF"
    launch = got["HPCJUP_LAUNCH"].replace("{host}", "node3").replace("{cpus}", "4")
    assert launch.split()[:2] == ["srun", "--overlap"] and "-w node3" in launch and "--cpus-per-task=4" in launch


def test_render_exports_the_job_environment_before_the_launcher() -> None:
    lines = Slurm().render(SPEC).splitlines()
    exports = [i for i, line in enumerate(lines) if line.startswith("export HPCJUP_")]
    assert exports and max(i for i, line in enumerate(lines) if line.startswith("#SBATCH")) < exports[0]
    assert exports[-1] < lines.index("umask 077")


def test_local_job_environment_is_this_host(tmp_path: Path) -> None:
    from hpcjup.schedulers.local import LocalProcess

    spec = JobSpec(name="x", session_dir="/h/x", command=["true"], resources=Resources(time="1:00:00"), warn_seconds=60)
    got = exported(LocalProcess().job_environment(spec), {"PATH": "/usr/bin:/bin"}, tmp_path)
    assert got["HPCJUP_NODELIST"] == got["HPCJUP_NODE"] and got["HPCJUP_LAUNCH"] == "" and got["HPCJUP_SUBMIT"] == ""
    assert int(got["HPCJUP_CPUS"]) >= 1 and got["HPCJUP_JOB_ID"].isdigit()
    assert (got["HPCJUP_TIME_LIMIT"], got["HPCJUP_WARN_SIGNAL"], got["HPCJUP_WARN_SECONDS"]) == ("3600", "0", "60")


def test_worker_jobs_use_dask_jobqueues_slurm_job() -> None:
    assert Slurm().jobqueue == ("slurm", "SLURMJob")
    assert Slurm().worker_job_options("batch", None, "30") == {"queue": "batch", "account": None, "walltime": "30"}
