"""The CLI lifecycle on a real Grid Engine cell: start, URL, ls, attach, logs, Dask, graceful stop, refusals, doctor.

The cell (tests/cluster/sge.py) runs beside the Slurm mini-cluster on this machine; its user submits
through the mini-cluster's sshd, so every command goes over real SSH to real qsub/qstat/qdel.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import Foreground, http_get, run, wait_for
from tests.cli.kernel import run_in_kernel

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
SGE = ["--scheduler", "sge"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")


@pytest.fixture(scope="module", autouse=True)
def no_grid_engine_sessions_left(sge_cell: Any) -> Iterator[None]:
    """After this module, no Grid Engine session stays in the shared cluster home: the cell goes down with the
    test run, and a session whose job it no longer answers for is UNKNOWN (active) to every later `ls`, which
    then asks Grid Engine too. A later pass's round-trip counts (tests/cli/test_isolation.py) saw that query."""
    yield
    for directory in SESSIONS.iterdir() if SESSIONS.is_dir() else []:
        try:
            scheduler = json.loads((directory / "session.json").read_text()).get("scheduler")
        except (OSError, ValueError, AttributeError):
            continue
        if scheduler == "sge":
            sge_cell.run("qdel", "-u", "hpcuser")  # whatever is left of this module's jobs
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def sge_lab(sge_cell: Any, minicluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One detached session on Grid Engine, shared by the read-only checks; stopped at the end."""
    from tests.cluster.fixtures import make_laptop_env

    env = make_laptop_env(minicluster, tmp_path_factory.mktemp("laptop"))
    started = time.monotonic()
    result = run(["start", *HOST, *SGE, "--name", "sge-lab", "--time", "20", "--cpus", "2", "-d", "--json"], env)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    try:
        yield {**info, "env": env, "seconds": seconds}
    finally:
        run(["stop", "sge-lab", *HOST], env)


def test_start_gives_a_url_that_answers_with_the_token(sge_lab: dict[str, Any], sge_cell: Any) -> None:
    assert sge_lab["url"] == f"http://127.0.0.1:{sge_lab['local_port']}/lab?token={sge_lab['token']}"
    base = f"http://127.0.0.1:{sge_lab['local_port']}"
    assert http_get(f"{base}/api/status", sge_lab["token"])[0] == 200
    assert http_get(f"{base}/api/status")[0] == 403
    assert sge_lab["node"] == sge_cell.host and sge_lab["job_id"] in sge_cell.job_ids("hpcuser")
    record = json.loads((SESSIONS / "sge-lab" / "session.json").read_text())
    assert record["scheduler"] == "sge"
    print(f"start -> URL on Grid Engine: {sge_lab['seconds']:.1f} s")


def test_the_job_asked_grid_engine_for_what_start_was_given(sge_lab: dict[str, Any], sge_cell: Any) -> None:
    shown = sge_cell.run("qstat", "-j", sge_lab["job_id"]).stdout
    assert "h_rt=1200" in shown and "parallel environment:  smp range: 2" in shown
    assert "notify:                     TRUE" in shown


def test_kernel_runs_inside_the_grid_engine_job(sge_lab: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{sge_lab['local_port']}"
    code = "import os; print(os.environ['JOB_ID'], os.environ['NSLOTS'], 'SSH_CONNECTION' in os.environ)"
    # sshd puts SSH_CONNECTION into the environment qsub runs in: without -V it never reaches the job.
    assert run_in_kernel(base, sge_lab["token"], code).split() == [sge_lab["job_id"], "2", "False"]


def test_ls_shows_the_session_running(sge_lab: dict[str, Any]) -> None:
    result = run(["ls", *HOST, "--json"], sge_lab["env"])
    assert result.returncode == 0, result.stderr
    rows = {row["session"]: row for row in json.loads(result.stdout)["sessions"]}
    assert rows["sge-lab"]["state"] == "RUNNING" and rows["sge-lab"]["job_id"] == sge_lab["job_id"]
    assert rows["sge-lab"]["time_limit"] == 1200


def test_logs_show_the_jobs_output_with_the_token_masked(sge_lab: dict[str, Any]) -> None:
    result = run(["logs", "sge-lab", *HOST], sge_lab["env"])
    assert result.returncode == 0, result.stderr
    assert "JupyterLab answers" in result.stdout and sge_lab["token"] not in result.stdout


def test_attach_forwards_a_new_port(sge_lab: dict[str, Any]) -> None:
    fg = Foreground(["attach", "sge-lab", *HOST, "--no-browser", "--json"], sge_lab["env"])
    try:
        assert fg.info["job_id"] == sge_lab["job_id"]
        assert http_get(f"http://127.0.0.1:{fg.info['local_port']}/api/status", sge_lab["token"])[0] == 200
    finally:
        fg.kill()


DASK_CODE = """
from dask.distributed import Client
client = Client()
client.wait_for_workers(1, timeout=60)
print(len(client.scheduler_info()["workers"]), sum(client.gather(client.map(lambda x: x * x, range(100)))))
"""


def test_dask_workers_join_the_sessions_scheduler(sge_lab: dict[str, Any]) -> None:
    assert sge_lab["dask_scheduler"].startswith("tls://")
    base = f"http://127.0.0.1:{sge_lab['local_port']}"
    workers, total = run_in_kernel(base, sge_lab["token"], DASK_CODE, timeout=120).split()
    assert int(workers) >= 1 and int(total) == sum(x * x for x in range(100))


def test_graceful_stop_ends_the_job_and_the_launcher_records_it(sge_cell: Any, laptop_env: dict[str, str]) -> None:
    result = run(["start", *HOST, *SGE, "--name", "sge-stop", "--time", "10", "-d", "--json"], laptop_env)
    assert result.returncode == 0, result.stderr
    job_id = json.loads(result.stdout)["job_id"]
    stopped = run(["stop", "sge-stop", *HOST, "--json"], laptop_env)
    assert stopped.returncode == 0, stopped.stderr
    entry = json.loads(stopped.stdout)["stopped"][0]
    assert (entry["graceful"], entry["reason"]) == (True, "stopped")
    state = json.loads((SESSIONS / "sge-stop" / "state.json").read_text())
    assert (state["reason"], state["exit_code"]) == ("stopped", 0)  # SIGTERM reached the launcher (-notify)
    wait_for(lambda: job_id not in sge_cell.job_ids("hpcuser"), 30, f"Grid Engine job {job_id} to leave qstat")


def test_an_unknown_queue_is_refused_in_grid_engines_words(sge_cell: Any, laptop_env: dict[str, str]) -> None:
    args = ["start", *HOST, *SGE, "--name", "sge-nosuch", "--partition", "nosuch", "-d", "--json"]
    result = run(args, laptop_env)
    assert result.returncode == ExitCode.SUBMIT, result.stderr
    error = json.loads(result.stdout)["error"]
    assert 'job requests unknown queue "nosuch"' in error["message"]
    assert "qconf -sql" in error["hint"]
    assert not (SESSIONS / "sge-nosuch").exists()  # nothing left behind


def test_doctor_checks_the_queue_and_the_request(sge_cell: Any, laptop_env: dict[str, str]) -> None:
    result = run(["doctor", *HOST, *SGE, "--json"], laptop_env)
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert result.returncode == 0, result.stdout
    assert checks["scheduler"]["summary"] == "qsub, qstat and qdel found"
    assert checks["queue"]["status"] == "pass" and sge_cell.queue in checks["queue"]["summary"]
    assert checks["request"]["status"] == "pass" and "found suitable queue" in checks["request"]["summary"]


def test_the_launchers_own_timer_ends_the_session_before_h_rt(sge_cell: Any, laptop_env: dict[str, str]) -> None:
    # --time 1: h_rt=60; Grid Engine sends nothing before it, so the launcher shuts down 30 s in on its own.
    result = run(
        ["start", *HOST, *SGE, "--name", "sge-short", "--time", "1", "--cpus", "1", "-d", "--json"], laptop_env
    )
    assert result.returncode == 0, result.stderr
    job_id = json.loads(result.stdout)["job_id"]
    state_file = SESSIONS / "sge-short" / "state.json"
    wait_for(lambda: json.loads(state_file.read_text())["state"] == "ended", 55, "the session to end by itself")
    state = json.loads(state_file.read_text())
    assert (state["reason"], state["exit_code"]) == ("walltime", 0)
    wait_for(lambda: job_id not in sge_cell.job_ids("hpcuser"), 20, f"Grid Engine job {job_id} to end")
    accounted = wait_for(lambda: sge_cell.run("qacct", "-j", job_id).stdout, 20, f"qacct to know job {job_id}")
    assert "failed       0" in accounted  # ended by the launcher, not killed at h_rt (failed 37)


def test_a_worker_group_runs_as_a_grid_engine_job(sge_lab: dict[str, Any], sge_cell: Any) -> None:
    scaled = run(["scale", "sge-lab", "all.q", "1", *HOST, "--json"], sge_lab["env"])
    assert scaled.returncode == 0, scaled.stderr
    [job_id] = json.loads(scaled.stdout)["jobs"]
    shown = sge_cell.run("qstat", "-j", job_id).stdout
    assert "job_name:                   hpcjup+sge-lab+" in shown and "hard_queue_list:            all.q" in shown
    code = DASK_CODE.replace("wait_for_workers(1", "wait_for_workers(2")
    base = f"http://127.0.0.1:{sge_lab['local_port']}"
    workers, _ = run_in_kernel(base, sge_lab["token"], code, timeout=150).split()
    assert int(workers) >= 2  # the allocation's worker and the worker job's
    assert run(["scale", "sge-lab", "all.q", "0", *HOST, "--json"], sge_lab["env"]).returncode == 0
    wait_for(lambda: job_id not in sge_cell.job_ids("hpcuser"), 60, f"worker job {job_id} to end")


# -- start --dry-run, and jobs in error state ------------------------------------------------------------------
def test_a_dry_run_says_there_is_no_estimate_but_that_the_queue_could_run_it(
    sge_cell: Any, laptop_env: dict[str, str]
) -> None:
    before = set(sge_cell.job_ids())
    args = ["start", *HOST, *SGE, "--partition", sge_cell.queue, "--cpus", "2", "--dry-run", "--json"]
    result = run(args, laptop_env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (
        data["scheduler"] == "sge" and f"#$ -q {sge_cell.queue}" in data["script"] and "#$ -pe smp 2" in data["script"]
    )
    [queue] = data["partitions"]
    assert queue["name"] == sge_cell.queue and queue["refusal"] is None and queue["estimate"] is None
    assert "no start estimate on Grid Engine" in queue["note"] and queue["total_slots"] >= 2
    assert set(sge_cell.job_ids()) <= before, "qsub -w v submits nothing"
    text = run(["start", *HOST, *SGE, "--dry-run"], laptop_env)
    assert text.returncode == 0 and "the default partition: " in text.stdout and "no start estimate" in text.stdout


def test_a_dry_run_that_no_queue_could_ever_run_exits_5_in_grid_engines_words(
    sge_cell: Any, laptop_env: dict[str, str]
) -> None:
    result = run(["start", *HOST, *SGE, "--cpus", "64", "--dry-run", "--json"], laptop_env)
    assert result.returncode == ExitCode.SUBMIT, result.stderr
    [queue] = json.loads(result.stdout)["partitions"]
    assert "no suitable queues" in queue["refusal"] and "qstat -g c" in queue["hint"]


BROKEN = "--directive=-o /nonexistent/hpcjup/job.out"  # the later -o wins: the job cannot open its log, Eqw


def test_a_job_in_error_state_is_not_waited_for_and_is_deleted(sge_cell: Any, laptop_env: dict[str, str]) -> None:
    """Grid Engine keeps a job in Eqw for ever: start says why (qstat -j's error reason), deletes it, exit 5."""
    result = run(["start", *HOST, *SGE, "--name", "sge-eqw", BROKEN, "--no-dask", "-d", "--json"], laptop_env)
    assert result.returncode == ExitCode.SUBMIT, result.stderr
    error = json.loads(result.stdout)["error"]
    assert "cannot start: Grid Engine put it in error state" in error["message"] and "(Eqw)" in error["message"]
    assert 'can\'t open output file "/nonexistent/hpcjup/job.out"' in error["message"] and "qstat -j" in error["hint"]
    assert not [j for j in sge_cell.job_ids("hpcuser") if "sge-eqw" in sge_cell.run("qstat", "-j", j).stdout]
    assert not (SESSIONS / "sge-eqw").exists()


def test_stop_deletes_a_session_whose_job_is_in_error_state(sge_cell: Any, laptop_env: dict[str, str]) -> None:
    """A session left in Eqw (its `start` killed before it looked): `stop` deletes the job, it is not 'ended'."""
    import subprocess

    from tests.cli.helpers import hpcjup_argv

    args = ["start", *HOST, *SGE, "--name", "sge-eqw-stop", BROKEN, "--no-dask", "--no-browser"]
    start = subprocess.Popen(hpcjup_argv() + args, env=laptop_env, stderr=subprocess.PIPE, text=True)
    assert start.stderr is not None
    try:
        line = ""
        while "Submitted job" not in line:
            line = start.stderr.readline()
            assert line, "start ended before it submitted"
    finally:
        start.kill()  # SIGKILL: nothing of start's own cleanup runs
        start.communicate()
    job_id = line.split("Submitted job ", 1)[1].split()[0]

    def in_error_state() -> bool:
        return any(
            row.split()[:1] == [job_id] and "E" in row.split()[4]
            for row in sge_cell.run("qstat", "-u", "hpcuser").stdout.splitlines()[2:]
        )

    wait_for(in_error_state, 30, f"job {job_id} to enter Eqw")
    stopped = run(["stop", "sge-eqw-stop", *HOST, "--json"], laptop_env)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["stopped"][0]["was_active"] is True
    wait_for(lambda: job_id not in sge_cell.job_ids("hpcuser"), 30, f"job {job_id} to be deleted")
    # The job never ran, so no state.json says it ended: left behind, every later `ls` on the shared cluster
    # would ask Grid Engine about it (and the round-trip budgets of other tests count one scheduler).
    assert run(["prune", *HOST, "--json"], laptop_env).returncode == 0
    assert not (SESSIONS / "sge-eqw-stop").exists()
