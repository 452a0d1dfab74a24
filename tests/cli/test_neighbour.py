"""What another user of the same compute node can reach of a session, and what `stop` may end (issue 23).

A second cluster user (tests/cluster/neighbour.py) probes every TCP port the session's processes
listen on, as anyone on a shared node could after reading /proc/net/tcp: it must read no kernel
output and no Dask dashboard. A job the user submits by hand from inside the session must survive
`hpcjup stop`. Killing the launcher outright must not leave Jupyter, kernels or Dask running.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import http_get, run, wait_for
from tests.cli.kernel import run_in_kernel
from tests.cluster import neighbour

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")


@pytest.fixture(scope="module")
def neighbour_user(minicluster: Any) -> str:
    return neighbour.ensure_neighbour(minicluster.conf)


@pytest.fixture
def session(minicluster: Any, laptop_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A running session with Dask (one local worker), named uniquely: other sessions share the cluster user."""
    name = f"nbr-{secrets.token_hex(3)}"
    result = run(["start", *HOST, "--name", name, "--time", "10", "--idle-timeout", "0", "-d", "--json"], laptop_env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    try:
        yield {**info, "env": laptop_env, "dir": SESSIONS / name}
    finally:
        run(["stop", name, *HOST], laptop_env)


def session_pids(info: dict[str, Any]) -> set[int]:
    """Every process of the session on this machine: below its launcher, and anything carrying its directory."""
    connection = json.loads((info["dir"] / "connection.json").read_text())
    return neighbour.process_tree(int(connection["launcher_pid"])) | neighbour.environ_pids(str(info["dir"]))


SECRET_CELL = """
import time
for _ in range(60):
    print({secret!r}, flush=True)
    time.sleep(0.5)
"""


def test_a_neighbour_reads_no_kernel_output_and_no_dashboard(
    minicluster: Any, neighbour_user: str, session: dict[str, Any]
) -> None:
    secret = "hpcjup-secret-" + secrets.token_hex(8)
    base = f"http://127.0.0.1:{session['local_port']}"
    printed: list[str] = []
    cell = threading.Thread(
        target=lambda: printed.append(run_in_kernel(base, session["token"], SECRET_CELL.format(secret=secret), 120))
    )
    cell.start()
    try:
        wait_for(lambda: kernel_sockets(session) >= 5, 60, "the kernel to open its five channels")
        ports = neighbour.listening_ports(session_pids(session))
        assert ports, "the session listens on nothing?"
        seen = neighbour.probe(ports, seconds=12)
    finally:
        cell.join(150)
    assert printed and secret in printed[0], "the cell did not run"
    print(f"ports {ports}; {len(seen['zmq'])} ZeroMQ messages")
    leaked = [message for message in seen["zmq"] if secret in message]
    assert not leaked, f"a neighbour read {len(leaked)} kernel messages with the secret from {ports}"
    dashboards = {
        url: status
        for url, (status, body) in seen["http"].items()
        if status == 200 and ("dask" in body.lower() or '"type"' in body or "# HELP" in body)
    }
    assert not dashboards, f"a neighbour read Dask's HTTP endpoints: {dashboards}"
    # The user still has the dashboard, through Jupyter's authenticated proxy, and only with the token.
    assert session["dashboard_url"] and http_get(session["dashboard_url"])[0] == 200
    anonymous = urllib.request.urlopen(session["dashboard_url"].split("?")[0], timeout=20)
    assert "/login" in anonymous.geturl()


def kernel_sockets(info: dict[str, Any]) -> int:
    """How many sockets the session's kernel holds (its channels, TCP or IPC, once it has bound them)."""
    for pid in session_pids(info):
        if b"ipykernel" in _cmdline(pid):
            try:
                return sum(
                    os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd")
                )
            except OSError:
                return 0
    return 0


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_stop_leaves_a_job_the_user_submitted_by_hand(minicluster: Any, session: dict[str, Any]) -> None:
    # What a Lab terminal or a notebook cell runs: the session's sbatch (its wrapper comes first on PATH there).
    wrapper = str(session["dir"] / "dask/bin/sbatch")
    submitted = minicluster.run_as_user([wrapper, "-t", "5", "-J", "production-run", "--wrap", "sleep 300"])
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[-1]
    try:
        assert job_id not in _recorded(session)
        stopped = run(["stop", session["session"], *HOST], session["env"])
        assert stopped.returncode == 0, stopped.stderr
        wait_for(lambda: session["job_id"] not in _active(minicluster), 60, "the session's job to end")
        assert job_id in _active(minicluster), "hpcjup stop cancelled the user's own job"
    finally:
        minicluster.slurm("scancel", job_id)


def _recorded(info: dict[str, Any]) -> list[str]:
    jobs = info["dir"] / "dask/jobs"
    return jobs.read_text().split() if jobs.exists() else []


def _active(minicluster: Any) -> set[str]:
    return {job["id"] for job in minicluster.active_jobs()}


def test_killing_the_launcher_ends_jupyter_kernels_and_dask(minicluster: Any, session: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{session['local_port']}"
    assert run_in_kernel(base, session["token"], "print('up')").strip() == "up"
    headers = {"Authorization": f"token {session['token']}", "Content-Type": "application/json"}
    request = urllib.request.Request(f"{base}/api/kernels", data=b"{}", headers=headers, method="POST")
    urllib.request.urlopen(request, timeout=60).close()  # a kernel that stays
    wait_for(lambda: any(b"ipykernel" in _cmdline(pid) for pid in session_pids(session)), 60, "the kernel")
    pids = session_pids(session)
    kinds = {
        kind for pid in pids for kind in (b"jupyterboot", b"ipykernel", b"dask_scheduler") if kind in _cmdline(pid)
    }
    assert kinds == {b"jupyterboot", b"ipykernel", b"dask_scheduler"}, kinds
    launcher = int(json.loads((session["dir"] / "connection.json").read_text())["launcher_pid"])
    os.kill(launcher, signal.SIGKILL)
    start = time.monotonic()
    wait_for(lambda: not [pid for pid in pids if _alive(pid)], 30, "the session's processes to end")
    assert time.monotonic() - start < 30


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
