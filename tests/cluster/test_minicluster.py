"""The mini-cluster itself works: two nodes, two partitions, ssh as the cluster user."""

from __future__ import annotations

import time

import pytest

from tests.cluster.minicluster import MiniCluster

pytestmark = pytest.mark.cluster


def test_two_nodes_in_both_partitions(minicluster: MiniCluster) -> None:
    out = minicluster.slurm("sinfo", "-h", "-o", "%P %D %N").stdout
    assert "batch* 2 node[1-2]" in out and "booster 2 node[1-2]" in out


def test_two_node_job_sees_both_nodes(minicluster: MiniCluster, clean_jobs: None) -> None:
    result = minicluster.run_as_user(["sbatch", "--parsable", "-N", "2", "-o", "/tmp/hpcjup-mc-%j.out", "--wrap", "srun printenv SLURMD_NODENAME"])
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip()
    end = time.monotonic() + 60
    while time.monotonic() < end and any(j["id"] == job for j in minicluster.active_jobs()):
        time.sleep(0.3)
    with open(f"/tmp/hpcjup-mc-{job}.out") as fh:
        assert sorted(fh.read().split()) == ["node1", "node2"]


def test_ssh_login_runs_slurm_and_the_cluster_python(minicluster: MiniCluster, tmp_path) -> None:  # noqa: ANN001
    import subprocess

    minicluster.write_laptop_ssh(tmp_path)
    before = minicluster.auth_count()
    cmd = ["ssh", "-F", str(tmp_path / ".ssh/config"), "-o", f"UserKnownHostsFile={tmp_path / '.ssh/known_hosts'}", "-o", "BatchMode=yes",
           "minicluster", "sbatch --version && python3 -c 'import jupyterlab; print(jupyterlab.__version__)'"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "slurm-wlm" in result.stdout
    assert minicluster.auth_count() == before + 1
