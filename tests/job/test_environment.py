"""The job side reads only the HPCJUP_* variables every adapter's script exports (their names: test_contract.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hpcjup.job
from hpcjup.job import LAUNCHER_PATH

sys.path.insert(0, str(LAUNCHER_PATH.parent))  # the job files import each other from beside themselves
import dasklaunch
import daskscale


def test_no_job_file_reads_a_schedulers_own_variables() -> None:
    for name in hpcjup.job.JOB_FILES:
        text = (LAUNCHER_PATH.parent / name).read_text()
        assert "SLURM" + "_" not in text and "SLURMD" not in text, name


def test_workers_are_spread_over_the_hosts() -> None:
    assert dasklaunch.spread(5, 2) == [3, 2] and dasklaunch.spread(1, 3) == [1, 0, 0] and dasklaunch.spread(0, 1) == [0]


SCALE = "hpcjup+lab+scale"  # the session's scale-out job name (daskscale.ScaleOut.scale_name)


def wrapper(tmp_path: Path, output: str, code: int = 0, scrub: str = "", keep: str = "") -> tuple[Path, Path]:
    """A submit command that prints `output` and the variables it saw, behind the session's wrapper."""
    real = tmp_path / "qsub-real"
    real.write_text(f"#!/bin/sh\nprintf '%s\\n' {output!r}\nenv | grep '^HPCJUP_TEST' | sort >&2\nexit {code}\n")
    real.chmod(0o700)
    jobs = tmp_path / "jobs"
    script = tmp_path / "qsub"
    script.write_text(daskscale.submit_wrapper(str(real), str(jobs), scrub, keep, SCALE))
    script.chmod(0o700)
    return script, jobs


@pytest.mark.parametrize(
    ("output", "job_id"),
    [
        ("Submitted batch job 123", "123"),
        ("123;cluster", "123"),
        ("4567.pbs-server", "4567.pbs-server"),
        ("Job <89> is submitted to queue <normal>.", "89"),
        ('Your job 77 ("name") has been submitted', "77"),
        ('Your job-array 78.1-3:1 ("name") has been submitted', "78"),
    ],
)
def test_the_submit_wrapper_records_each_schedulers_id(tmp_path: Path, output: str, job_id: str) -> None:
    script, jobs = wrapper(tmp_path, output)
    job = job_script(tmp_path, f"#PBS -N {SCALE}")
    result = subprocess.run([str(script), str(job)], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (0, output + "\n")
    assert jobs.read_text() == job_id + "\n"


def job_script(tmp_path: Path, directive: str) -> Path:
    """A job script as dask-jobqueue writes one: its header names the job."""
    path = tmp_path / "job.sh"
    path.write_text(f"#!/usr/bin/env bash\n\n{directive}\n#SBATCH -n 1\n\npython -m distributed.cli.dask_worker\n")
    return path


@pytest.mark.parametrize(
    ("directive", "args"),
    [
        (f"#SBATCH -J {SCALE}", []),
        (f"#PBS -N {SCALE}", ["-V"]),
        (f"#$ -N {SCALE}", ["-q", "batch"]),
        (f"#BSUB -J {SCALE}", []),
    ],
)
def test_the_submit_wrapper_records_the_sessions_scale_out_jobs(
    tmp_path: Path, directive: str, args: list[str]
) -> None:
    script, jobs = wrapper(tmp_path, "Submitted batch job 41")
    result = subprocess.run([str(script), *args, str(job_script(tmp_path, directive))], capture_output=True, text=True)
    assert (result.returncode, jobs.read_text()) == (0, "41\n")


@pytest.mark.parametrize(
    "how",
    [
        "wrap",  # sbatch --wrap 'sleep 300' -J production-run, from a Lab terminal
        "own-script",  # a script of the user's own, named their way
        "renamed",  # the session's script, but another name on the command line (which wins)
        "another-session",  # another session's scale-out script
        "prefix",  # a name that only starts like the session's
    ],
)
def test_the_submit_wrapper_never_records_a_job_of_the_users_own(tmp_path: Path, how: str) -> None:
    """`hpcjup stop` cancels what dask/jobs lists: a job the user submitted by hand must never be in it (issue 23)."""
    script, jobs = wrapper(tmp_path, "Submitted batch job 42")
    argv = {
        "wrap": ["--wrap", "sleep 300", "-J", "production-run"],
        "own-script": [str(job_script(tmp_path, "#SBATCH -J production-run"))],
        "renamed": ["-J", "production-run", str(job_script(tmp_path, f"#SBATCH -J {SCALE}"))],
        "another-session": [str(job_script(tmp_path, "#SBATCH -J hpcjup+other+scale"))],
        "prefix": [str(job_script(tmp_path, f"#SBATCH -J {SCALE}x"))],
    }[how]
    result = subprocess.run([str(script), *argv], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "Submitted batch job 42\n"), "output passes through"
    assert not jobs.exists(), f"recorded: {jobs.read_text()}"


def test_the_submit_wrapper_drops_the_prefix_but_what_it_keeps(tmp_path: Path) -> None:
    script, jobs = wrapper(tmp_path, "", code=3, scrub="HPCJUP_TEST_", keep="HPCJUP_TEST_CONF")
    env = {**os.environ, "HPCJUP_TEST_NODELIST": "n[1-2]", "HPCJUP_TEST_CONF": "/etc/x", "HPCJUP_TESTX": "y"}
    result = subprocess.run([str(script)], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 3, "the command's exit code passes through"
    assert result.stderr.split() == ["HPCJUP_TESTX=y", "HPCJUP_TEST_CONF=/etc/x"]
    assert not jobs.exists(), "a refusal records nothing"


def test_the_shipped_job_files_are_all_the_launcher_needs(tmp_path: Path) -> None:
    """Only what job_files() uploads is on the cluster: the launcher and dasklaunch import nothing else of hpcjup."""
    for name, code in hpcjup.job.job_files().items():
        (tmp_path / name).write_bytes(code)
    # -I: no user site, no current directory, no PYTHONPATH; the launcher puts its own directory on sys.path.
    run = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "launcher.py"), "--help"], capture_output=True, text=True
    )
    assert run.returncode == 0 and "--session-dir" in run.stdout, run.stderr
    check = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import dasklaunch, usage, endings, jupyterenv"
    assert subprocess.run([sys.executable, "-I", "-c", check], capture_output=True).returncode == 0
