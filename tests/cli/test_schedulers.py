"""Choosing the batch system: detected on the host, `--scheduler NAME`, recorded and read back; `none`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import CLUSTER_PYTHON, hpcjup_argv, http_get, run, session_jobs, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
QUICK = ["--no-dask", "--idle-timeout", "0", "--no-browser"]


def jupyter_pids(cluster: Any) -> set[str]:
    """The cluster user's processes that are a launcher or a Jupyter server."""
    ps = cluster.run_as_user(["ps", "-ww", "-u", "hpcuser", "-o", "pid=,args="]).stdout
    return {line.split()[0] for line in ps.splitlines() if "launcher.py" in line or "jupyterlab" in line}


def test_unknown_scheduler_lists_the_known_ones(laptop_env: dict[str, str]) -> None:
    result = run(["start", *HOST, "--scheduler", "moab", "--json"], laptop_env)
    assert result.returncode == ExitCode.USAGE
    error = json.loads(result.stdout)["error"]
    assert "moab" in error["message"] and "slurm" in error["hint"] and "none" in error["hint"]


def test_detected_scheduler_is_recorded(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    result = run(["start", *HOST, "-d", "--json", *QUICK, "-n", "detected"], laptop_env, timeout=150)
    assert result.returncode == 0, result.stderr
    assert json.loads((SESSIONS / "detected" / "session.json").read_text())["scheduler"] == "slurm"
    assert run(["stop", "detected", *HOST], laptop_env).returncode == 0


def test_no_scheduler_on_a_plain_ssh_host(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    """`--scheduler none`: the launcher runs detached on the SSH host itself; same lifecycle; nothing after stop."""
    before = jupyter_pids(minicluster)
    args = ["start", *HOST, "--scheduler", "none", "-d", "--json", *QUICK, "-n", "plain", "--python", CLUSTER_PYTHON]
    result = run(args, laptop_env, timeout=150)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert http_get(f"http://127.0.0.1:{info['local_port']}/api/status", info["token"])[0] == 200
    record = json.loads((SESSIONS / "plain" / "session.json").read_text())
    assert record["scheduler"] == "none" and not session_jobs(minicluster, ("plain",))  # no batch job at all
    rows = {r["session"]: r for r in json.loads(run(["ls", *HOST, "--json"], laptop_env).stdout)["sessions"]}
    assert rows["plain"]["state"] == "RUNNING"
    stopped = run(["stop", "plain", *HOST, "--json"], laptop_env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["stopped"][0]["graceful"] is True
    assert jupyter_pids(minicluster) <= before  # launcher, Jupyter and its kernels are gone
    state = json.loads((SESSIONS / "plain" / "state.json").read_text())
    assert (state["state"], state["reason"]) == ("ended", "stopped")


def test_a_job_that_cannot_start_is_not_waited_for(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """`-N 5` on a 2-node partition pends with PartitionConfig for ever: said in words within seconds, exit 5,
    the job cancelled and nothing left."""
    result = run(["start", *HOST, *QUICK, "-N", "5", "-p", "booster", "-n", "toobig", "--json"], laptop_env, timeout=90)
    assert result.returncode == ExitCode.SUBMIT, result.stderr
    error = json.loads(result.stdout)["error"]
    assert "cannot start" in error["message"] and "--nodes" in error["hint"]
    assert not session_jobs(minicluster, ("toobig",)) and not (SESSIONS / "toobig").exists()


def test_prune_cancels_a_job_that_can_never_start(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """A start killed outright (kill -9) while its job waits, and an administrator's hold on the job
    (JobHeldAdmin, a reason waiting will not clear): `prune` cancels it and removes the session, in one
    remote command, and keeps its figures for `hpcjup stats`."""
    blocker = minicluster.run_as_user(
        ["sbatch", "--parsable", "-p", "booster", "-N2", "--exclusive", "--wrap", "sleep 300"]
    )
    assert blocker.returncode == 0, blocker.stderr
    args = [*hpcjup_argv(), "start", *HOST, *QUICK, "-p", "booster", "-n", "forever"]
    start = subprocess.Popen(args, env=laptop_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # the session's job pends behind the blocker, so start keeps waiting
        wait_for(lambda: (SESSIONS / "forever" / "session.json").exists(), 60, "the session to be recorded")
    finally:
        start.kill()
        start.wait()
    job = json.loads((SESSIONS / "forever" / "session.json").read_text())["job_id"]
    assert minicluster.slurm("scontrol", "hold", job).returncode == 0  # as root: an administrator's hold
    reason = ["squeue", "-h", "-j", job, "-o", "%r"]
    wait_for(lambda: minicluster.slurm(*reason).stdout.strip() == "JobHeldAdmin", 30, "Slurm to say why it waits")
    minicluster.slurm("scancel", blocker.stdout.strip())
    assert run(["prune", *HOST, "--dry-run", "--json"], laptop_env).returncode == 0
    assert session_jobs(minicluster, ("forever",)), "a dry run cancels nothing"
    pruned = run(["prune", *HOST, "--json"], laptop_env)
    assert pruned.returncode == 0, pruned.stderr
    [gone] = [r for r in json.loads(pruned.stdout)["removed"] if r["name"] == "forever"]
    assert gone["why"].startswith("never starts") and gone["job_id"] == job
    wait_for(lambda: not session_jobs(minicluster, ("forever",)), 30, "the job to be cancelled")
    assert not (SESSIONS / "forever").exists()
    archive = Path(laptop_env["XDG_STATE_HOME"]) / "hpcjup" / "usage" / "minicluster.json"
    assert job in archive.read_text()


def test_time_min_starts_a_job_that_backfill_would_leave_waiting(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """One node busy for 10 minutes, a 2-node job queued behind it: a 30-minute session would wait for
    both; with --time-min 5 Slurm's backfill starts it now with a shorter limit, and start says so."""
    blocker = ["sbatch", "--parsable", "-p", "batch", "-t", "10", "--exclusive", "--wrap", "sleep 600"]
    first = minicluster.run_as_user([*blocker, "-N1", "-w", "node1"])
    second = minicluster.run_as_user([*blocker, "-N2"])  # pends, holding a reservation on both nodes
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    wait_for(
        lambda: {j["id"]: j["state"] for j in minicluster.active_jobs()}.get(first.stdout.strip()) == "RUNNING",
        30,
        "the blocker to run",
    )
    args = ["start", *HOST, *QUICK, "-p", "batch", "-t", "30", "--time-min", "5", "-d", "--json", "-n", "sooner"]
    result = run(args, laptop_env, timeout=240)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert http_get(f"http://127.0.0.1:{info['local_port']}/api/status", info["token"])[0] == 200
    assert "shortened the time limit" in result.stderr
    rows = {r["session"]: r for r in json.loads(run(["ls", *HOST, "--json"], laptop_env).stdout)["sessions"]}
    assert rows["sooner"]["time_limit"] < 30 * 60
    assert run(["stop", "sooner", *HOST], laptop_env).returncode == 0
