"""Adaptive worker groups on the real mini-cluster: the session's job grows a group from nothing while its tasks
wait, replaces a worker job that is cancelled mid-computation (as a preemption would), and gives the nodes back
once the workers have idled for adapt_idle."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
GROUP_JOB = "hpcjup+elastic+batch"

# A notebook's computation, run as the cluster user with the session's Dask config (TLS, the scheduler's address):
# tasks that need the group's resource, so only the group's workers can run them. Each waits until the file named
# by argv[1] exists, which the test creates once it has seen the lost job replaced: the work needs the group until
# then, however slow the machine (fixed 2-second tasks kept the test waiting ~50 s after the replacement).
NOTEBOOK = """
import os, sys, time
from dask.distributed import Client
client = Client(timeout=30)
def slow(x, go=sys.argv[1]):
    while not os.path.exists(go):
        time.sleep(0.2)
    return x * x
futs = client.map(slow, range(48), resources={"batch": 1}, pure=False)
print(sum(client.gather(futs)))
print(client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures))
"""


def group_jobs(minicluster: Any) -> dict[str, str]:
    return {job["id"]: job["state"] for job in minicluster.active_jobs() if job["name"] == GROUP_JOB}


def status() -> dict[str, Any]:
    try:
        return json.loads((SESSIONS / "elastic/dask/adaptive.json").read_text())["groups"]["batch"]
    except (OSError, ValueError, KeyError):
        return {}


def test_an_adaptive_group_grows_replaces_a_lost_job_and_shrinks_to_zero(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    env = {**laptop_env, "HPCJUP_ADAPT_IDLE": "6s"}
    options = ["--partition", "booster", "--workers", "1", "--time", "10", "--idle-timeout", "0"]
    started = run(
        ["start", *HOST, "--name", "elastic", *options, "--worker-group", "batch:0-2x1:preemptible", "-d"], env
    )
    assert started.returncode == 0, started.stderr
    group = json.loads((SESSIONS / "elastic/groups.json").read_text())["batch"]
    assert (group["min"], group["max"], group["adapt_idle"], group["preemptible"]) == (0, 2, 6, True)
    assert not group_jobs(minicluster), "an adaptive group of minimum 0 starts with no job"

    config = SESSIONS / "elastic/dask/config"
    go = Path("/home/hpcuser") / f".hpcjup-test-adaptive-{uuid.uuid4().hex[:8]}"
    try:
        with ThreadPoolExecutor(1) as pool:
            argv = ["env", f"DASK_CONFIG={config}", "python", "-c", NOTEBOOK, str(go)]
            notebook = pool.submit(minicluster.run_as_user, argv, timeout=240)
            replaced_and_done(minicluster, notebook, laptop_env)
            go.touch()  # the tasks may finish now
        done = notebook.result()
    finally:
        go.unlink(missing_ok=True)
    assert done.returncode == 0, done.stderr[-2000:]
    total, allowed = done.stdout.split()
    assert int(total) == sum(x * x for x in range(48)), "the result is correct despite the lost worker job"
    assert int(allowed) == 1000, "preemptible groups raise Dask's allowed-failures"
    assert status()["lost"] >= 1

    wait_for(lambda: not group_jobs(minicluster), 90, "the idle group to give its nodes back")
    wait_for(lambda: status().get("running") == 0 and status().get("pending") == 0, 30, "the status to say so")

    # `scale` from the laptop changes the bounds; the loop picks them up (a minimum of 1: a job at once), and
    # `stop` ends the jobs the loop submitted (recorded in dask/jobs).
    scaled = run(["scale", "elastic", "batch", "1-2", *HOST, "--json"], laptop_env)
    assert scaled.returncode == 0, scaled.stderr
    assert (json.loads(scaled.stdout)["min"], json.loads(scaled.stdout)["max"]) == (1, 2)
    (new,) = wait_for(lambda: group_jobs(minicluster), 30, "the new minimum's job")
    assert new in (SESSIONS / "elastic/dask/jobs").read_text().split(), "recorded for `stop`"
    stopped = run(["stop", "elastic", *HOST, "--json"], laptop_env)
    assert stopped.returncode == 0, stopped.stderr
    # stop cancels it, unless its worker, just starting as the scheduler went, ended it first (seen once: then its
    # log says the worker ended, and stop had nothing left to cancel).
    logs = "".join(p.read_text(errors="replace") for p in (SESSIONS / "elastic/dask/logs").glob(f"*-{new}.*"))
    cancelled = json.loads(stopped.stdout)["stopped"][0]["workers_cancelled"]
    assert new in cancelled or "End worker" in logs, "stop ends the loop's jobs"
    wait_for(lambda: not group_jobs(minicluster), 30, "the loop's job to go")


def replaced_and_done(minicluster: Any, notebook: Any, laptop_env: dict[str, str]) -> None:
    """The group grows to its maximum; one running job is cancelled (as a preemption would end it) and replaced."""
    wait_for(lambda: len(group_jobs(minicluster)) == 2, 60, "the group to grow to its maximum, 2 jobs")
    originals = set(group_jobs(minicluster))
    wait_for(lambda: "RUNNING" in group_jobs(minicluster).values(), 60, "a group job to run")
    # The victim is a job whose worker has joined: one that Slurm runs but whose worker is still starting would be
    # seen lost only after the loop's start timeout (180 s), as it was once in CI under load.
    joined = wait_for(
        lambda: sorted(j for j, state in status().get("jobs", {}).items() if state == "running"), 60, "a worker to join"
    )
    victim = joined[0]
    assert minicluster.run_as_user(["scancel", victim]).returncode == 0  # a preemption, as far as Dask can tell
    # The loop sees it at its next round after Dask has lost the worker; 60 s ran out once in CI under load.
    wait_for(lambda: status().get("lost", 0) >= 1, 120, "the loop to see the job lost")
    listed = run(["ls", *HOST, "--json"], laptop_env)
    assert listed.returncode == 0, listed.stderr
    (row,) = [s for s in json.loads(listed.stdout)["sessions"] if s["session"] == "elastic"]
    figures = row["worker_groups"]["batch"]
    assert (figures["min"], figures["max"], figures["target"]) == (0, 2, 2) and figures["lost"] >= 1
    wait_for(lambda: set(group_jobs(minicluster)) - originals, 60, "a replacement job")
    assert not notebook.done(), "the job was replaced while the work still needed it"


def test_a_group_whose_partition_refuses_its_jobs_is_shown_and_the_session_goes_on(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    options = ["--partition", "booster", "--workers", "1", "--time", "10", "--idle-timeout", "0", "-d"]
    started = run(["start", *HOST, "--name", "refused", *options, "--worker-group", "nosuch:1-2"], laptop_env)
    assert started.returncode == 0, started.stderr

    def refusal() -> str:
        listed = run(["ls", *HOST], laptop_env)
        return listed.stdout if "refused:" in listed.stdout else ""

    text = wait_for(refusal, 60, "ls to show the scheduler's refusal")
    assert "refused/nosuch: 0 running, 0 pending, target 1 (1-2 jobs); refused:" in text
    assert "invalid partition" in text.lower(), "the scheduler's own words"
    logs = run(["logs", "refused", *HOST], laptop_env)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.count("the scheduler refused a job") == 1, "in the job's log, once: the next try waits"
    assert [j for j in minicluster.active_jobs() if j["name"] == "hpcjup-refused"], "the session keeps running"
    assert run(["stop", "refused", *HOST], laptop_env).returncode == 0


def test_a_fixed_group_of_two_jobs_has_two_workers(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """Each job's worker has a name of its own: Dask refused the second of one name, so a group of 2 had 1 worker."""
    options = ["--partition", "booster", "--workers", "1", "--time", "10", "--idle-timeout", "0", "-d"]
    started = run(["start", *HOST, "--name", "twice", *options, "--worker-group", "batch:2"], laptop_env)
    assert started.returncode == 0, started.stderr
    code = "from dask.distributed import Client\nc = Client(timeout=30)\nc.wait_for_workers(3, timeout=90)\n"
    code += "print(sorted(w['name'] for w in c.scheduler_info()['workers'].values()))"
    config = SESSIONS / "twice/dask/config"
    done = minicluster.run_as_user(["env", f"DASK_CONFIG={config}", "python", "-c", code], timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("hpcjup+twice+batch+") == 2, done.stdout
    assert run(["stop", "twice", *HOST], laptop_env).returncode == 0


@pytest.fixture
def limited_partition(minicluster: Any) -> Any:
    """A partition whose time limit every group job exceeds (created for the test, deleted after it): Slurm
    (EnforcePartLimits=NO, its default) queues such a job and gives PartitionTimeLimit as its reason."""
    name = "limited"
    minicluster.slurm("scontrol", "delete", f"PartitionName={name}")  # one a killed run left behind
    nodes = ",".join(minicluster.slurm("sinfo", "-h", "-N", "-o", "%N").stdout.split())
    created = ["scontrol", "create", f"PartitionName={name}", f"Nodes={nodes}", "MaxTime=1", "State=UP"]
    minicluster.slurm(*created, check=True)
    try:
        yield name
    finally:
        minicluster.cancel_all()
        minicluster.slurm("scontrol", "delete", f"PartitionName={name}")


def test_a_group_beyond_the_partitions_limit_shows_the_reason_and_is_not_resubmitted(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None, limited_partition: str
) -> None:
    options = ["--partition", "booster", "--workers", "1", "--time", "10", "--idle-timeout", "0", "-d"]
    group = f"{limited_partition}:2-3x1"
    started = run(["start", *HOST, "--name", "limited", *options, "--worker-group", group], laptop_env)
    assert started.returncode == 0, started.stderr

    def shown() -> dict[str, Any]:
        listed = run(["ls", *HOST, "--json"], laptop_env)
        assert listed.returncode == 0, listed.stderr
        (row,) = [s for s in json.loads(listed.stdout)["sessions"] if s["session"] == "limited"]
        figures = row["worker_groups"].get(limited_partition) or {}
        return figures if figures.get("pending_reasons") == {"PartitionTimeLimit": 2} else {}

    figures = wait_for(shown, 60, "ls --json to show the scheduler's reason for the group's 2 waiting jobs")
    assert figures["never_starts"] == "a longer time than the partition allows"
    text = run(["ls", *HOST], laptop_env).stdout
    assert "limited/limited: 0 running, 2 pending, target 2 (2-3 jobs); pending: 2 PartitionTimeLimit" in text
    # The loop keeps the jobs it has (they wait) instead of submitting more: after several of its rounds (2 s each)
    # the queue and the session's record still hold the same 2.
    waiting = {j["id"] for j in minicluster.active_jobs() if j["name"] == "hpcjup+limited+limited"}
    time.sleep(10)
    assert {j["id"] for j in minicluster.active_jobs() if j["name"] == "hpcjup+limited+limited"} == waiting
    assert len(waiting) == 2 and len((SESSIONS / "limited/dask/jobs").read_text().split()) == 2
    assert [j for j in minicluster.active_jobs() if j["name"] == "hpcjup-limited"], "the session keeps running"
    assert run(["stop", "limited", *HOST], laptop_env).returncode == 0
