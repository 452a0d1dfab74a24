"""The notebook's own Dask jobs (job/daskscale.py): how their workers run the session's Python."""

from __future__ import annotations

import argparse
import importlib
import shlex
from pathlib import Path
from typing import Any

import pytest

import hpcjup.job
from hpcjup.job.contract import WRAP_VARIABLE

COPY = "/tmp/hpcjup-1001/envs/0123456789abcdef/env/bin/python"  # this node's copy of the env's image
WRAP = "sh /home/u/.hpcjup/sessions/lab/envlocal.sh auto /home/u/.hpcjup/envs/env-1 --"


def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_command: str = "") -> Any:
    monkeypatch.syspath_prepend(str(hpcjup.job.LAUNCHER_PATH.parent))  # the job files import each other from there
    dasklaunch = importlib.import_module("dasklaunch")
    monkeypatch.setenv("HPCJUP_JOBQUEUE", "slurm")
    session = tmp_path / "lab"
    session.mkdir(exist_ok=True)
    args = argparse.Namespace(
        workers=1, worker_cores=1, worker_memory="auto", lifetime=0, dask_python=COPY, python_command=python_command
    )
    return dasklaunch.DaskCluster.from_args(str(session), "127.0.0.1", args, str(tmp_path / "private"))


def scale_python(c: Any) -> str:
    return str(c.jobqueue_config()["jobqueue"]["slurm"]["python"])


def test_a_scale_out_job_makes_its_own_nodes_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From node-local copies, the Dask Python's path is this node's copy: another node's job lacks it, so it runs
    through the same wrapper (envlocal.sh renames the path to that node's copy). It ran the path bare."""
    monkeypatch.setenv(WRAP_VARIABLE, WRAP)
    words = shlex.split(scale_python(cluster(tmp_path, monkeypatch)))
    assert words == [*shlex.split(WRAP), COPY]


def test_without_copies_the_command_is_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WRAP_VARIABLE, raising=False)
    assert scale_python(cluster(tmp_path, monkeypatch)) == COPY
    assert (
        scale_python(cluster(tmp_path, monkeypatch, "ch-run -b /h /img -- python3")) == "ch-run -b /h /img -- python3"
    )


def test_a_container_image_mounted_on_this_node_is_mounted_on_the_scale_out_jobs_node_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Charliecloud SquashFS image runs from this node's mount (envlocal.sh `image:`): the scale-out job goes
    through the wrapper, which mounts it on its node and renames the mount in the runtime's command. It ran the
    command bare: ch-run of a directory that node lacks."""
    wrap = "sh /home/u/.hpcjup/sessions/lab/envlocal.sh auto image:/home/u/.hpcjup/envs/images/sha256-ab.sqfs --"
    monkeypatch.setenv(WRAP_VARIABLE, wrap)
    mounted = "ch-run -b /h /tmp/hpcjup-1001/envs/0123456789abcdef/env -- python3"
    assert shlex.split(scale_python(cluster(tmp_path, monkeypatch, mounted))) == [
        *shlex.split(wrap),
        *shlex.split(mounted),
    ]
