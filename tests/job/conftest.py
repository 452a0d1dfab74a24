"""The job side's tests run the job files under the cluster environment's Python, as a job would."""

from __future__ import annotations

import os
from pathlib import Path

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
