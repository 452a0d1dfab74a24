"""The mini-cluster itself works: two nodes in two partitions, jobs, ssh as the cluster user."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.hostkeys import HostKeyEntry

from tests.cluster.files import PREEMPTIBLE, URGENT
from tests.cluster.minicluster import CLUSTER_ENV, MiniCluster, wait_until

pytestmark = pytest.mark.cluster


def connect(cluster: MiniCluster) -> paramiko.SSHClient:
    """A paramiko connection as the cluster user, checking the host key like a laptop would."""
    client = paramiko.SSHClient()
    entry = HostKeyEntry.from_line(cluster.host_key_line())
    assert entry is not None and entry.key is not None
    client.get_host_keys().add(entry.hostnames[0], entry.key.get_name(), entry.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        cluster.ssh_port,
        cluster.user,
        key_filename=str(cluster.key_path),
        allow_agent=False,
        look_for_keys=False,
        timeout=20,
    )
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    """Run `command` on an exec channel (no pty, no login shell); (status, stdout, stderr)."""
    _, out, err = client.exec_command(command, timeout=60)
    return out.channel.recv_exit_status(), out.read().decode(), err.read().decode()


@pytest.fixture
def ssh(minicluster: MiniCluster) -> Iterator[paramiko.SSHClient]:
    """One paramiko connection for the test."""
    client = connect(minicluster)
    yield client
    client.close()


def test_two_nodes_in_every_partition(minicluster: MiniCluster) -> None:
    """batch (the default) and booster, and the preemption tiers (issue 22): the low one and the urgent one."""
    minicluster.ensure_preemption()  # a cluster brought up by an older harness gets them now
    out = minicluster.slurm("sinfo", "-h", "-N", "-o", "%N %P %t", check=True).stdout.split("\n")
    rows = {tuple(line.split()[:2]) for line in out if line.strip()}
    partitions = ("batch*", "booster", PREEMPTIBLE, URGENT)
    assert rows == {(n, p) for n in ("node1", "node2") for p in partitions}
    assert minicluster.healthy(), minicluster.problems()


def test_two_node_job_runs_on_both_nodes(minicluster: MiniCluster, clean_jobs: None) -> None:
    output = Path(f"/tmp/hpcjup-mc-test-{uuid.uuid4().hex}.out")
    try:
        result = minicluster.run_as_user(
            [
                "sbatch",
                "--parsable",
                "-N",
                "2",
                "-J",
                "twonodes",
                "-o",
                str(output),
                "--wrap",
                "srun printenv SLURMD_NODENAME",
            ]
        )
        assert result.returncode == 0, result.stderr
        job_id = result.stdout.strip().split(";")[0]
        job = wait_until(
            lambda: next(
                (
                    j
                    for j in minicluster.jobs()
                    if j["id"] == job_id and j["state"] not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")
                ),
                None,
            ),
            60,
            "the job to end",
        )
        assert job["state"] == "COMPLETED" and job["name"] == "twonodes", job
        assert sorted(output.read_text().split()) == ["node1", "node2"]
    finally:
        output.unlink(missing_ok=True)


def test_plain_exec_channel_has_slurm_and_the_cluster_python(minicluster: MiniCluster, ssh: paramiko.SSHClient) -> None:
    status, out, err = run(ssh, "sbatch --version")
    assert status == 0 and out.startswith("slurm"), err
    status, out, err = run(ssh, 'python3 -c "import jupyterlab, sys; print(sys.executable)"')
    assert status == 0 and out.strip() == f"{CLUSTER_ENV}/bin/python3", err
    status, out, _ = run(ssh, "echo $SLURM_CONF")
    assert out.strip() == str(minicluster.conf)


def test_login_shell_has_the_cluster_env(minicluster: MiniCluster, ssh: paramiko.SSHClient) -> None:
    status, out, err = run(ssh, "bash -lc 'command -v python3; echo $SLURM_CONF; squeue -h -u $USER -o %i'")
    assert status == 0, err
    assert out.splitlines()[:2] == [f"{CLUSTER_ENV}/bin/python3", str(minicluster.conf)]


def test_one_accepted_login_per_connection(minicluster: MiniCluster) -> None:
    before = minicluster.auth_count()
    for expected in (before + 1, before + 2):
        client = connect(minicluster)
        run(client, "true")
        run(client, "true")  # more channels on the same connection: no new login
        client.close()
        wait_until(lambda: minicluster.auth_count() >= expected, 5, "sshd to log the login", interval=0.05)  # noqa: B023
        assert minicluster.auth_count() == expected


def test_openssh_client_with_the_laptop_ssh_dir(minicluster: MiniCluster, laptop_home: Path) -> None:
    ssh_dir = laptop_home / ".ssh"
    assert (ssh_dir.stat().st_mode & 0o777, (ssh_dir / "id_minicluster").stat().st_mode & 0o777) == (0o700, 0o600)
    # OpenSSH finds ~ through the password database, not $HOME, hence -F and UserKnownHostsFile.
    cmd = [
        "ssh",
        "-F",
        str(ssh_dir / "config"),
        "-o",
        f"UserKnownHostsFile={ssh_dir / 'known_hosts'}",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "minicluster",
        "hostname",
    ]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_restart_sshd_drops_connections_and_keeps_the_port(minicluster: MiniCluster) -> None:
    port, client = minicluster.ssh_port, connect(minicluster)
    transport = client.get_transport()
    assert transport is not None
    minicluster.restart_sshd()
    assert minicluster.ssh_port == port
    wait_until(lambda: not transport.is_active(), 10, "the old connection to drop", interval=0.1)
    client.close()
    again = connect(minicluster)
    assert run(again, "true")[0] == 0
    again.close()
    assert minicluster.healthy(), minicluster.problems()


def test_up_again_reuses_the_running_cluster(minicluster: MiniCluster) -> None:
    pids = minicluster.pids()
    assert MiniCluster(minicluster.root).up() is False
    assert minicluster.pids() == pids
