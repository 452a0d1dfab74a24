"""A session whose kernel is a user environment, through Slurm: the kernel and the Dask workers on both nodes run
that environment's Python, `Client()` in the notebook connects with no arguments.

The laptop's `--kernel` is another part of issue 20 (phase 2); until it is merged, the launcher gets its
`--kernel`/`--dask-python` from a `--python` wrapper that inserts them: the job, the launcher, Jupyter, the
kernel, Dask and the tunnel are the real ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import CLUSTER_PYTHON, http_get, run
from tests.cli.kernel import run_in_kernel

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]

WRAPPER = """#!/bin/sh
# The launcher's own options for this session, before the batch script's (and its `-- Jupyter options`).
case $1 in
*/launcher.py) script=$1; shift; exec {server} "$script" --kernel analysis={kernel} --dask-python {kernel} "$@" ;;
esac
exec {server} "$@"
"""
CODE = """
import sys
from distributed import Client
client = Client()
client.wait_for_workers(2, timeout=60)
print(sys.executable)
print(sorted(set(client.run(lambda: sys.executable).values())))
print(sorted(set(client.run(lambda: __import__("os").environ["SLURMD_NODENAME"]).values())))
"""


@pytest.fixture
def user_env() -> Iterator[Path]:
    """A user environment with ipykernel and distributed (uv), readable by the cluster user, and a `--python`
    wrapper that gives the launcher `--kernel analysis=ITS_PYTHON --dask-python ITS_PYTHON`."""
    uv = Path(sys.executable).with_name("uv")
    root = Path(tempfile.mkdtemp(prefix="hpcjup-kernels-"))
    os.chmod(root, 0o755)
    try:
        subprocess.run([str(uv), "venv", "-q", "--python", "/usr/bin/python3", str(root / "env")], check=True)
        python = root / "env" / "bin" / "python"
        subprocess.run(
            [str(uv), "pip", "install", "-q", "--python", str(python), "ipykernel", "distributed"], check=True
        )
        wrapper = root / "python"
        wrapper.write_text(WRAPPER.format(server=CLUSTER_PYTHON, kernel=python))
        wrapper.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_default_kernel_and_dask_run_the_users_environment(
    minicluster: Any, laptop_env: dict[str, str], user_env: Path
) -> None:
    name = f"kern-{uuid.uuid4().hex[:6]}"
    kernel = str(user_env / "env" / "bin" / "python")
    args = ["start", *HOST, "--name", name, "--python", str(user_env / "python"), "--nodes", "2", "--cpus", "1"]
    started = run([*args, "-d", "--json"], laptop_env, timeout=180)
    assert started.returncode == 0, started.stderr
    try:
        info = json.loads(started.stdout)
        base = f"http://127.0.0.1:{info['local_port']}"
        status, body = http_get(f"{base}/api/kernelspecs", info["token"])
        specs = json.loads(body)
        assert status == 200 and specs["default"] == "analysis" and set(specs["kernelspecs"]) == {"analysis"}
        lines = run_in_kernel(base, info["token"], CODE, timeout=180).splitlines()  # the default kernel
        assert lines == [kernel, str([kernel]), "['node1', 'node2']"]
    finally:
        stopped = run(["stop", name, *HOST], laptop_env)
    assert stopped.returncode == 0, stopped.stderr
