"""Sessions that come back (issue 22), on the mini-cluster's real Slurm preemption: the neighbour's urgent job
takes the nodes; a `--preemptible` session's job is requeued, runs again, and its detached holder forwards the
same local URL to it without any command (test_preempt_stop.py: a session without `--preemptible` is not requeued).
Its old node is gone meanwhile (taken out of service, as an administrator would, and resumed at the end): the job
runs again on the other node.

Slurm holds a requeued job for cred_expire seconds (BeginTime; 120 by default, 10 in the mini-cluster, whose
scheduler also looks every 5 s: see tests/cluster/files.py) before it may run again: about 20 s here. Still these
tests are slow, so there are few of them."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import hpcjup_argv, http_get, run, wait_for
from tests.cluster import neighbour, procs
from tests.cluster.files import PREEMPTIBLE
from tests.cluster.fixtures import make_laptop_env

pytestmark = [pytest.mark.cluster, pytest.mark.transport]
HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")


@pytest.fixture
def preemption(minicluster: Any) -> Any:
    """The cluster with its preemption partitions (added to a running cluster that lacks them)."""
    minicluster.ensure_preemption()
    return minicluster


def start(env: dict[str, str], name: str, *extra: str) -> dict[str, Any]:
    argv = ["start", *HOST, "-d", "--json", "--no-dask", "--name", name, "-p", PREEMPTIBLE, "--time", "30", *extra]
    result = run(argv, env, timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def job_state(cluster: Any, job_id: str) -> str:
    return cluster.slurm("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").stdout.strip()


def job_node(cluster: Any, job_id: str) -> str:
    return cluster.slurm("squeue", "-h", "-j", job_id, "-o", "%N").stdout.strip()


@contextlib.contextmanager
def node_down(cluster: Any, node: str) -> Iterator[None]:
    """The node out of service for the block (an administrator's `scontrol update`, as root), resumed after it.
    DRAIN, not DOWN: with the harness's ReturnToService=2, Slurm returns a DOWN node to service at its next ping
    (seen here: the requeued job then ran on it again); a drained node takes no job until resumed."""

    def drained() -> bool:
        cluster.slurm("scontrol", "update", f"nodename={node}", "state=drain", "reason=hpcjup-test-gone", check=True)
        return cluster.slurm("sinfo", "-h", "-n", node, "-o", "%T").stdout.split()[:1] in (["drained"], ["draining"])

    wait_for(drained, 30, f"{node} to be out of service")
    try:
        yield
    finally:
        cluster.slurm("scontrol", "update", f"nodename={node}", "state=resume")


def state(name: str) -> dict[str, Any]:
    return json.loads((SESSIONS / name / "state.json").read_text())


def listed(env: dict[str, str], name: str) -> dict[str, Any]:
    result = run(["ls", *HOST, "--json"], env)
    assert result.returncode == 0, result.stderr
    return next(row for row in json.loads(result.stdout)["sessions"] if row["session"] == name)


def test_a_preemptible_session_comes_back_at_the_same_url(
    preemption: Any, laptop_env: dict[str, str], tmp_path: Path, clean_jobs: None
) -> None:
    name = f"back-{uuid.uuid4().hex[:6]}"
    info = start(laptop_env, name, "--preemptible")
    url = f"http://127.0.0.1:{info['local_port']}/api/status"
    assert http_get(url, info["token"])[0] == 200
    holder = json.loads(run(["url", name, "--json"], laptop_env).stdout)["pid"]
    old_node = job_node(preemption, info["job_id"])
    assert old_node, "the job runs on a node"
    with neighbour.urgent_job(preemption.conf):
        # GraceTime, then Slurm's kill (SIGTERM): the launcher shuts Jupyter down and records the run's end.
        wait_for(lambda: state(name)["state"] == "ended", 120, "the launcher to record the preempted run's end")
        ended = state(name)
        assert (ended["reason"], ended["preemptible"], ended["restarts"]) == ("stopped", True, 0), ended
        wait_for(lambda: job_state(preemption, info["job_id"]) == "PENDING", 60, "the job to be requeued")
    with node_down(preemption, old_node):
        came_back(preemption, laptop_env, tmp_path, name, info, holder, old_node)
    assert run(["stop", name, *HOST], laptop_env).returncode == 0


def came_back(
    preemption: Any, laptop_env: dict[str, str], tmp_path: Path, name: str, info: dict[str, Any], holder: int, old: str
) -> None:
    """The requeued job, while its old node is down: listed as preempted, run again elsewhere, and the same URL."""
    url = f"http://127.0.0.1:{info['local_port']}/api/status"
    row = listed(laptop_env, name)
    assert (row["state"], row["preemptions"], row["preemptible"]) == ("PREEMPTED", 1, True), row
    assert http_get(url, info["token"])[0] != 200  # nothing answers while the job waits
    assert procs.alive(holder)  # the holder waits for the job's next run
    # Another laptop attaches meanwhile: it waits for the next run too (the run before's end is not the session's).
    other = make_laptop_env(preemption, tmp_path / "other")
    attach = subprocess.Popen(
        [*hpcjup_argv(), "attach", name, *HOST, "-d", "--json"], env=other, stdout=subprocess.PIPE, text=True
    )
    # Slurm holds a requeued job cred_expire seconds (BeginTime) before it may run again.
    wait_for(lambda: job_state(preemption, info["job_id"]) == "RUNNING", 300, "the requeued job to run again", 2)
    running = time.monotonic()
    assert job_node(preemption, info["job_id"]) not in ("", old), "it runs again on the node that is left"
    wait_for(lambda: http_get(url, info["token"])[0] == 200, 120, "the same local URL to answer again", 0.2)
    took = time.monotonic() - running
    assert http_get(url)[0] == 403  # still the token's: the same one, which an open tab sends
    conn = json.loads((SESSIONS / name / "connection.json").read_text())
    assert (conn["job_id"], conn["restarts"], conn["token"]) == (info["job_id"], 1, info["token"])
    assert json.loads(run(["url", name, "--json"], laptop_env).stdout)["pid"] == holder  # no command needed
    row = listed(laptop_env, name)
    assert (row["state"], row["preemptions"]) == ("RUNNING", 1), row
    out, _ = attach.communicate(timeout=120)
    assert attach.returncode == 0, out
    attached = json.loads(out)
    assert attached["token"] == info["token"] and attached["local_port"] != info["local_port"]
    assert http_get(f"http://127.0.0.1:{attached['local_port']}/api/status", info["token"])[0] == 200
    log = Path(laptop_env["XDG_STATE_HOME"], "hpcjup", "logs", "minicluster", f"{name}.log").read_text()
    assert "preempted and requeued" in log and "works again" in log, log
    print(f"the job ran again; the local URL answered {took:.1f} s later")
