"""The job side's tests run the job files under the cluster environment's Python, as a job would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CLUSTER_PYTHON = Path("/opt/hpcjup-cluster-env/bin/python")  # tests/cluster/install.sh makes it


@pytest.fixture(scope="session")
def python() -> str:
    """The cluster-side Python with JupyterLab and Dask; required in CI, else the test is skipped."""
    if not CLUSTER_PYTHON.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CLUSTER_PYTHON} is required in CI (tests/cluster/install.sh)")
        pytest.skip(f"{CLUSTER_PYTHON} missing (tests/cluster/install.sh creates it)")
    return str(CLUSTER_PYTHON)


@pytest.fixture
def run(python: str, tmp_path: Path) -> Iterator[Any]:
    """`run(*launcher_args, env=, python=, files=)` starts the real launcher in tmp_path (test_launcher.Run); any
    still running at the end are killed with their Jupyter."""
    from tests.job.test_launcher import launcher_runs

    yield from launcher_runs(python, tmp_path)
