"""The Dask processes of a session: their configuration, as Dask itself reads it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from pathlib import Path

import pytest

import hpcjup.job
from tests.cli.helpers import CLUSTER_PYTHON


@pytest.fixture
def dasklaunch(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(hpcjup.job.LAUNCHER_PATH.parent))  # the job files import each other from there
    return importlib.import_module("dasklaunch")


@pytest.mark.parametrize("tmpdir", [None, "/local/job-42"])
def test_workers_spill_into_a_scratch_directory_of_their_own(
    dasklaunch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmpdir: str | None
) -> None:  # type: ignore[no-untyped-def]
    """Not /tmp/dask-scratch-space, which whoever made it first owns (0700 under the job's umask): another user's
    workers on the same node failed there with PermissionError on its lock files (seen on the mini-cluster)."""
    if tmpdir is None:
        monkeypatch.delenv("TMPDIR", raising=False)
    else:
        monkeypatch.setenv("TMPDIR", tmpdir)
    session = tmp_path / "lab-1"
    session.mkdir()
    cluster = dasklaunch.DaskCluster(str(session), "127.0.0.1", 1, 1, "auto", 0)
    cluster.write_config()
    expected = os.path.join(tmpdir or "/tmp", f"hpcjup-{os.getuid()}-lab-1")
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


def test_the_scratch_directory_goes_when_the_cluster_stops(dasklaunch, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    session = tmp_path / "lab-2"
    session.mkdir()
    cluster = dasklaunch.DaskCluster(str(session), "127.0.0.1", 1, 1, "auto", 0)
    Path(cluster.scratch, "dask-scratch-space").mkdir(parents=True)
    cluster.stop(grace=0.1)
    assert not Path(cluster.scratch).exists()
