"""Dask on the allocation: TLS scheduler beside Jupyter, workers on every node, Client() with no arguments."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import CLUSTER_PYTHON, http_get, run, wait_for
from tests.cli.kernel import run_in_kernel

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")


def session_jobs(cluster: Any, name: str) -> list[dict[str, str]]:
    """Active jobs of the session: its own (hpcjup-NAME) and its worker jobs (hpcjup+NAME+GROUP)."""
    return [
        j for j in cluster.active_jobs() if j["name"] == f"hpcjup-{name}" or j["name"].startswith(f"hpcjup+{name}+")
    ]


def assert_all_gone(cluster: Any, name: str) -> None:
    wait_for(lambda: not session_jobs(cluster, name), 60, f"every job of {name} to end")


CLIENT_CODE = """
import os
from dask.distributed import Client
client = Client()
client.wait_for_workers(2, timeout=60)
print(sorted(set(client.run(lambda: os.environ["SLURMD_NODENAME"]).values())))
print(sum(client.gather(client.map(lambda x: x * x, range(100)))))
"""

OUTSIDER_CODE = """
import sys
from distributed import Client
from distributed.security import Security
addr = sys.argv[1]
for label, kwargs in (("tcp", {"address": addr.replace("tls://", "tcp://")}), ("tls-other-cert", {"address": addr, "security": Security.temporary()})):
    try:
        Client(timeout=5, **kwargs)
        print(label, "CONNECTED")
    except Exception:
        print(label, "refused")
"""


def test_two_node_session_with_dask(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    result = run(["start", *HOST, "--name", "dasky", "--nodes", "2", "--cpus", "1", "-d", "--json"], laptop_env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    base = f"http://127.0.0.1:{info['local_port']}"
    lines = run_in_kernel(base, info["token"], CLIENT_CODE, timeout=120).split("\n")
    assert lines[0] == "['node1', 'node2']" and lines[1] == str(sum(x * x for x in range(100)))

    # Without the session's credentials, nobody on the cluster gets in: not in plain TCP, not with another certificate.
    outsider = subprocess.run(
        [str(CLUSTER_PYTHON), "-c", OUTSIDER_CODE, info["dask_scheduler"]], capture_output=True, text=True, timeout=120
    )
    assert outsider.stdout.split("\n")[:2] == ["tcp refused", "tls-other-cert refused"], outsider.stderr

    # The dashboard answers through the laptop URL (Jupyter's proxy, with the token) and not without it.
    assert info["dashboard_url"].startswith(base)
    assert http_get(info["dashboard_url"])[0] == 200
    anonymous = urllib.request.urlopen(info["dashboard_url"].split("?")[0], timeout=20)
    assert "/login" in anonymous.geturl()  # redirected to Jupyter's login page: no dashboard without the token

    assert run(["stop", "dasky", *HOST], laptop_env).returncode == 0
    assert_all_gone(minicluster, "dasky")


def test_more_workers_than_the_allocation_is_refused_before_submitting(
    minicluster: Any, laptop_env: dict[str, str]
) -> None:
    result = run(
        ["start", *HOST, "--name", "greedy", "--nodes", "2", "--cpus", "2", "--workers", "5", "--worker-cores", "1"],
        laptop_env,
    )
    assert result.returncode == ExitCode.USAGE
    assert "5 workers x 1 cores = 5 cores" in result.stderr and "2 node(s) x 2 CPUs = 4" in result.stderr
    assert not [j for j in minicluster.active_jobs() if j["name"] == "hpcjup-greedy"]


GROUP_CODE = """
from dask.distributed import Client
client = Client()
client.wait_for_workers(2, timeout=90)  # the session's own worker and the group's
future = client.submit(lambda: __import__("os").environ["SLURM_JOB_NAME"], resources={"batch": 1}, pure=False)
print(future.result(timeout=60))
"""

SCALE_OUT_CODE = """
from dask.distributed import Client
from dask_jobqueue import SLURMCluster
cluster = SLURMCluster()
cluster.scale(1)
client = Client(cluster)
client.wait_for_workers(1, timeout=90)
print(client.submit(lambda: __import__("os").environ["SLURM_JOB_NAME"]).result(timeout=60))
cluster.close()
"""


def test_worker_group_joins_and_scales_to_zero(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    result = run(
        ["start", *HOST, "--name", "grouped", "--partition", "booster", "--worker-group", "batch:1", "-d", "--json"],
        laptop_env,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    base = f"http://127.0.0.1:{info['local_port']}"
    assert run_in_kernel(base, info["token"], GROUP_CODE, timeout=180).strip() == "hpcjup+grouped+batch"
    assert [j for j in minicluster.active_jobs() if j["name"] == "hpcjup+grouped+batch"]
    scaled = run(["scale", "grouped", "batch", "0", *HOST, "--json"], laptop_env)
    assert scaled.returncode == 0, scaled.stderr
    assert json.loads(scaled.stdout)["jobs"] == []
    wait_for(
        lambda: not [j for j in minicluster.active_jobs() if j["name"] == "hpcjup+grouped+batch"],
        60,
        "the group's jobs to go",
    )

    refused = run(["scale", "grouped", "nosuch", "1", *HOST], laptop_env)
    assert refused.returncode == ExitCode.SUBMIT and "invalid partition" in refused.stderr.lower()
    assert [j for j in minicluster.active_jobs() if j["id"] == info["job_id"]], (
        "a refused group must leave the session running"
    )

    assert run(["stop", "grouped", *HOST], laptop_env).returncode == 0
    assert_all_gone(minicluster, "grouped")


def test_slurmcluster_from_the_notebook(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    result = run(["start", *HOST, "--name", "scaler", "--workers", "0", "-d", "--json"], laptop_env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    setup = SESSIONS / "scaler/setup.sh"  # the profile's environment: the notebook's worker jobs source it too
    setup.write_text('echo "hpcjup-setup-sourced"\n')
    shutil.chown(setup, "hpcuser", "hpcuser")
    printed = run_in_kernel(f"http://127.0.0.1:{info['local_port']}", info["token"], SCALE_OUT_CODE, timeout=240)
    assert printed.strip() == "hpcjup+scaler+scale"
    # The session's sbatch wrapper recorded the job (so `stop` can end it), and the job sourced setup.sh.
    [job_id] = (SESSIONS / "scaler/dask/jobs").read_text().split()
    [log] = (SESSIONS / "scaler/dask/logs").glob(f"*-{job_id}.out")
    assert "hpcjup-setup-sourced" in log.read_text()
    assert run(["stop", "scaler", *HOST], laptop_env).returncode == 0
    assert_all_gone(minicluster, "scaler")
