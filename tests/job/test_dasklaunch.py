"""The Dask processes of a session: their configuration, as Dask itself reads it."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import hpcjup.job
from tests.cli.helpers import CLUSTER_PYTHON


@pytest.fixture
def dasklaunch(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(hpcjup.job.LAUNCHER_PATH.parent))  # the job files import each other from there
    return importlib.import_module("dasklaunch")


def private_module():  # type: ignore[no-untyped-def]
    return importlib.import_module("private")


@pytest.mark.parametrize("tmpdir", [None, "short", "x" * 60])
def test_workers_spill_into_the_sessions_private_directory(
    dasklaunch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmpdir: str | None
) -> None:  # type: ignore[no-untyped-def]
    """Not /tmp/dask-scratch-space, which whoever made it first owns, nor a predictable name of our own
    (/tmp/hpcjup-UID-SESSION, which another user of the node can make first, issue 23): a fresh 0700 directory
    with an unguessable name, under $TMPDIR when a socket path there still fits in sun_path, else /tmp."""
    base = None if tmpdir is None else Path(tempfile.mkdtemp(dir="/tmp")) if tmpdir == "short" else tmp_path / tmpdir
    if base is None:
        monkeypatch.delenv("TMPDIR", raising=False)
    else:
        base.mkdir(exist_ok=True)
        monkeypatch.setenv("TMPDIR", str(base))
    session = tmp_path / "lab-1"
    session.mkdir()
    squatted = Path(base or "/tmp", f"hpcjup-{os.getuid()}-lab-1")  # what the old code used: someone made it first
    squatted.mkdir(mode=0o777, exist_ok=True)
    try:
        private = private_module().make_private_dir()
        cluster = dasklaunch.DaskCluster(str(session), "127.0.0.1", 1, 1, "auto", 0, private)
        cluster.write_config()
        expected = os.path.join(private, "dask-scratch")
        assert not expected.startswith(str(squatted))
        wanted_base = str(base) if tmpdir == "short" else "/tmp"
        assert os.path.dirname(private) == wanted_base and os.path.basename(private).startswith("hpcjup-")
        info = os.lstat(private)
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, os.getuid())
        assert json.loads((session / "dask/config/distributed.yaml").read_text())["temporary-directory"] == expected
        # Dask reads it so: the workers' local directory is under it (distributed puts dask-scratch-space inside).
        if not Path(CLUSTER_PYTHON).exists():
            pytest.skip("the cluster's Python with Dask is installed by tests/cluster/install.sh")
        asked = subprocess.run(
            [CLUSTER_PYTHON, "-c", "import dask; print(dask.config.get('temporary-directory'))"],
            env={**os.environ, "DASK_CONFIG": str(session / "dask/config")},
            capture_output=True,
            text=True,
            check=True,
        )
        assert asked.stdout.strip() == expected
    finally:
        squatted.rmdir()
        shutil.rmtree(private, ignore_errors=True)
        if tmpdir == "short" and base is not None:
            shutil.rmtree(base, ignore_errors=True)


def test_a_directory_that_is_not_ours_alone_is_refused(dasklaunch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    private = private_module()
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)  # nobody's
    for path in (loose, link, theirs):
        with pytest.raises(private.NotPrivate):
            private.check_private(str(path))


def test_the_scratch_directory_goes_when_the_cluster_stops(dasklaunch, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    session = tmp_path / "lab-2"
    session.mkdir()
    cluster = dasklaunch.DaskCluster(str(session), "127.0.0.1", 1, 1, "auto", 0, str(tmp_path / "private"))
    Path(cluster.scratch, "dask-scratch-space").mkdir(parents=True)
    cluster.stop(grace=0.1)
    assert not Path(cluster.scratch).exists()


def test_scale_out_jobs_run_python_as_the_session_does(dasklaunch, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """In a container, the notebook's SLURMCluster workers run through the container runtime, as the launcher did
    (issue 23: they ran the container's Python path on the bare node)."""
    monkeypatch.setenv("HPCJUP_JOBQUEUE", "slurm")
    session = tmp_path / "lab-3"
    session.mkdir()
    args = argparse.Namespace(
        workers=1, worker_cores=1, worker_memory="auto", lifetime=0, python_command="ch-run -b /h /img -- python3"
    )
    cluster = dasklaunch.DaskCluster.from_args(str(session), "127.0.0.1", args, str(tmp_path / "private"))
    assert cluster.jobqueue_config()["jobqueue"]["slurm"]["python"] == "ch-run -b /h /img -- python3"
    args.python_command = ""  # a plain Python: this one, as before
    plain = dasklaunch.DaskCluster.from_args(str(session), "127.0.0.1", args, str(tmp_path / "private"))
    assert plain.jobqueue_config()["jobqueue"]["slurm"]["python"] == dasklaunch.sys.executable
