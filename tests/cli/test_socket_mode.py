"""`hpcjup start --socket`: Jupyter on a private Unix socket on the node, reached by SSH to the node."""

from __future__ import annotations

import json
import pwd
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import http_get, port_listening, run, wait_for
from tests.cli.kernel import run_in_kernel

pytestmark = [pytest.mark.cluster, pytest.mark.transport]
HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")


def tcp_listeners(pid: int) -> list[str]:
    """The TCP addresses process `pid` listens on."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_socket_mode_on_each_ssh_backend(
    backend: str, minicluster: Any, node_sshd: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    node_sshd.add_to_laptop(Path(laptop_env["HOME"]))
    name, login_auths, node_logins = f"sock-{backend}", minicluster.auth_count(), node_sshd.logins()
    started = run(
        ["start", *HOST, "--ssh", backend, "--socket", "--name", name, "--no-dask", "-d", "--json"], laptop_env
    )
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    sock = Path(info["remote_socket"])
    assert info["remote_port"] == 0 and info["node"] in ("node1", "node2")
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert sock.stat().st_uid == sock.parent.stat().st_uid == pwd.getpwnam(minicluster.user).pw_uid
    jupyter_pid = json.loads((SESSIONS / name / "connection.json").read_text())["pid"]
    assert tcp_listeners(jupyter_pid) == [], "Jupyter listens on nothing but its socket"
    base = f"http://127.0.0.1:{info['local_port']}"
    assert http_get(f"{base}/api/status", info["token"])[0] == 200
    assert http_get(f"{base}/api/status")[0] == 403
    assert run_in_kernel(base, info["token"], "import os; print(os.environ['SLURMD_NODENAME'])").strip() == info["node"]
    assert minicluster.auth_count() - login_auths == 1  # the login node: once
    assert node_sshd.logins() - node_logins == 1  # the node, through it: once
    assert node_sshd.socket_forwards(str(sock)) >= 3  # status, the kernel's REST call and its websocket

    assert run(["disconnect", name], laptop_env).returncode == 0
    attached = run(["attach", name, *HOST, "--ssh", backend, "-d", "--json"], laptop_env)
    assert attached.returncode == 0, attached.stderr
    again = json.loads(attached.stdout)
    assert http_get(f"http://127.0.0.1:{again['local_port']}/api/status", again["token"])[0] == 200

    stopped = run(["stop", name, *HOST, "--ssh", backend], laptop_env)
    assert stopped.returncode == 0, stopped.stderr
    assert info["job_id"] not in {job["id"] for job in minicluster.active_jobs()}
    assert not port_listening(again["local_port"])
    assert not sock.parent.exists(), "the socket's directory goes with the job"


def test_socket_mode_where_nodes_refuse_ssh(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    # No `Host node1 node2` block: port 22 on the nodes' addresses, where nothing listens.
    started = run(["start", *HOST, "--socket", "--name", "refused", "--no-dask", "-d", "--json"], laptop_env)
    assert started.returncode == ExitCode.CONNECT, started.stderr
    assert "Cannot SSH to compute node" in started.stderr and "without --socket" in started.stderr
    assert json.loads(started.stdout)["error"]["exit_code"] == ExitCode.CONNECT
    # The job ran (its node is known only then) and is cancelled, not left running.
    job = next(job["id"] for job in minicluster.jobs() if job["name"] == "hpcjup-refused")
    wait_for(
        lambda: [j["state"] for j in minicluster.jobs() if j["id"] == job] == ["CANCELLED"], 30, f"job {job} cancelled"
    )
    assert not (SESSIONS / "refused").exists()


def test_socket_mode_with_an_unknown_node_host_key(
    minicluster: Any, node_sshd: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    home = Path(laptop_env["HOME"])
    node_sshd.add_to_laptop(home)
    known = home / ".ssh/known_hosts"
    known.write_text("".join(line + "\n" for line in known.read_text().splitlines() if "node1" not in line))
    started = run(["start", *HOST, "--socket", "--name", "nodekey", "--no-dask", "-d"], laptop_env)
    assert started.returncode == ExitCode.AUTH, started.stderr
    assert "SSH to compute node" in started.stderr and "--accept-new-host-key" in started.stderr
    job = next(job["id"] for job in minicluster.jobs() if job["name"] == "hpcjup-nodekey")
    wait_for(
        lambda: [j["state"] for j in minicluster.jobs() if j["id"] == job] == ["CANCELLED"], 30, f"job {job} cancelled"
    )
    assert not (SESSIONS / "nodekey").exists()
