"""PBS Pro and LSF end to end, through stand-ins that speak the recorded formats (tests/cluster/standins.py).

Real SSH (the stand-in's own sshd), real Jupyter on this machine as the job, the adapters' real
commands; only the batch system is played, because PBS Pro and LSF cannot be installed here.
The session API drives one lifecycle, the real CLI (`--scheduler pbs|lsf`) another.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.config.resources import Resources
from hpcjup.errors import SubmitError
from hpcjup.schedulers.base import JobState, Scheduler
from hpcjup.schedulers.lsf import LSF
from hpcjup.schedulers.pbs import PBSPro
from hpcjup.session.request import StartRequest
from hpcjup.session.submit import submit
from hpcjup.session.wait import ReadyWaiter
from hpcjup.transport import connect
from hpcjup.tunnel import Tunnel
from tests.cli.helpers import CLUSTER_PYTHON, Foreground, http_get, run
from tests.cluster.fixtures import XDG_DIRS, make_laptop_home
from tests.cluster.standins import Standin, lsf_standin, pbs_standin  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]

SYSTEMS = {"pbs": PBSPro, "lsf": LSF}
REFUSALS = {"pbs": "Unknown queue", "lsf": "nosuch: No such queue. Job not submitted."}
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")


@pytest.fixture(params=sorted(SYSTEMS))
def site(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A laptop whose ~/.ssh/config reaches the PBS (or LSF) login node, and that system's adapter."""
    standin: Standin = request.getfixturevalue(f"{request.param}_standin")
    home = make_laptop_home(tmp_path / "laptop", standin.cluster)
    standin.add_to_laptop(home)
    monkeypatch.setenv("HOME", str(home))
    for key, sub in XDG_DIRS.items():
        monkeypatch.setenv(key, str(home / sub))
    yield {"system": request.param, "standin": standin, "home": home, "scheduler": SYSTEMS[request.param]()}
    standin.cancel_all()
    remove_sessions()


def remove_sessions() -> None:
    """Remove the PBS and LSF sessions from the shared home: on the other test hosts no `qstat`/`bjobs`
    answers for them (the Grid Engine `qstat` would), and `ls` there would report the failure."""
    for record in SESSIONS.glob("*/session.json"):
        try:
            scheduler = json.loads(record.read_text()).get("scheduler")
        except (OSError, ValueError):
            continue
        if scheduler in SYSTEMS:
            shutil.rmtree(record.parent, ignore_errors=True)


def launcher_state(name: str) -> dict[str, Any]:
    path = SESSIONS / name / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def wait_until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_lifecycle_through_the_session_api(site: dict[str, Any]) -> None:
    """start -> pending with a reason -> running -> the URL answers with the token -> graceful stop -> "stopped"."""
    scheduler: Scheduler = site["scheduler"]
    transport = connect(site["standin"].alias)
    try:
        request = StartRequest(
            resources=Resources(partition="workq", time="10"), python=CLUSTER_PYTHON, ready_timeout=120
        )
        record, paths = submit(transport, scheduler, request)
        assert scheduler.is_job_id(record.job_id) and record.scheduler == site["system"]
        first = scheduler.status(transport, record.job_id)
        assert first.state in (JobState.PENDING, JobState.RUNNING)
        if first.state is JobState.PENDING:  # the stand-in queues each job for a moment, with the system's words
            assert first.reason
            assert (first.expected_start is not None) == scheduler.estimates_start
        conn = ReadyWaiter(transport, scheduler, record, paths, ready_timeout=120).wait()
        running = scheduler.status(transport, record.job_id)
        assert running.state is JobState.RUNNING and running.time_limit == 600

        with Tunnel(lambda: transport.open_stream(conn.address, conn.port)) as tunnel:
            base = f"http://127.0.0.1:{tunnel.local_port}"
            assert http_get(f"{base}/api/status", conn.token)[0] == 200
            assert http_get(f"{base}/api/status")[0] == 403

        # The session layer's graceful stop: SIGTERM to the job (qsig / bkill -s TERM), the launcher ends it.
        transport.run(["sh", "-c", scheduler.stop_snippet([record.job_id], [])], check=False)
        state = wait_until("the launcher to record its end", lambda: launcher_state(paths.name).get("reason"), 60)
        assert state == "stopped"

        def ended() -> Any:
            status = scheduler.status(transport, record.job_id)
            return None if status.state.active else status

        done = wait_until("the job to end", ended, 60)
        assert done.state is JobState.COMPLETED, done
        job = site["standin"].jobs()[record.job_id]
        assert job["state"] == "finished" and job["code"] == 0
    finally:
        transport.close()


def test_refused_submission_in_the_schedulers_words(site: dict[str, Any]) -> None:
    transport = connect(site["standin"].alias)
    try:
        with pytest.raises(SubmitError) as raised:
            submit(
                transport,
                site["scheduler"],
                StartRequest(resources=Resources(partition="nosuch"), python=CLUSTER_PYTHON),
            )
    finally:
        transport.close()
    assert REFUSALS[site["system"]] in raised.value.message
    assert raised.value.exit_code == 5
    assert "list the queues" in (raised.value.hint or "")


def test_cli_start_ls_stop(site: dict[str, Any]) -> None:
    """The real CLI with --scheduler: start, ls shows it RUNNING, stop ends it gracefully."""
    system = site["system"]
    from tests.cluster.fixtures import laptop_environ

    env = laptop_environ(site["home"])
    host = ["--host", site["standin"].alias, "--scheduler", system]
    fg = Foreground(
        [
            "start",
            *host,
            "--partition",
            "workq",
            "--time",
            "10",
            "--python",
            CLUSTER_PYTHON,
            "--no-dask",
            "--no-browser",
            "--json",
        ],
        env,
    )
    try:
        info = fg.info
        assert "session" in info, info
        assert http_get(f"http://127.0.0.1:{info['local_port']}/api/status", info["token"])[0] == 200
        listed = run(["ls", "--host", site["standin"].alias, "--json"], env)
        assert listed.returncode == 0, listed.stderr
        assert '"RUNNING"' in listed.stdout
        stopped = run(["stop", info["session"], "--host", site["standin"].alias], env)
        assert stopped.returncode == 0, stopped.stderr
        assert launcher_state(info["session"]).get("reason") == "stopped"
    finally:
        fg.kill()


def test_cli_refusal_exit_5(site: dict[str, Any]) -> None:
    system = site["system"]
    from tests.cluster.fixtures import laptop_environ

    env = laptop_environ(site["home"])
    result = run(
        ["start", "--host", site["standin"].alias, "--scheduler", system, "--partition", "nosuch", "--no-browser"], env
    )
    assert result.returncode == 5, result.stderr
    assert REFUSALS[system] in result.stderr


def start_detached(site: dict[str, Any], name: str, *args: str, timeout: float = 180) -> dict[str, Any]:
    """`hpcjup start -d --json` on the stand-in's login node; the parsed answer (the test fails on an error)."""
    from tests.cluster.fixtures import laptop_environ

    argv = ["start", "--host", site["standin"].alias, "--scheduler", site["system"], "--name", name]
    argv += ["--python", CLUSTER_PYTHON, "--no-browser", "-d", "--json", *args]
    result = run(argv, laptop_environ(site["home"]), timeout=timeout)
    assert result.returncode == 0, result.stderr
    return {**json.loads(result.stdout), "stderr": result.stderr}


def cli(site: dict[str, Any], *args: str, timeout: float = 120) -> Any:
    """Another hpcjup command against the stand-in's host."""
    from tests.cluster.fixtures import laptop_environ

    return run([*args, "--host", site["standin"].alias], laptop_environ(site["home"]), timeout=timeout)


@pytest.mark.parametrize("site", ["pbs"], indirect=True)
def test_pbs_time_min_starts_now_with_the_walltime_that_fits(site: dict[str, Any]) -> None:
    """The queue's nodes are free for 8 minutes before a reservation: a 30-minute job waits (saying why),
    with --time-min 5 PBS's shrink-to-fit starts it now with 8 minutes, and the job's clocks follow that."""
    waiting = cli(site, "start", "--scheduler", "pbs", "-p", "resv", "-t", "30", "--timeout", "8", "--no-browser")
    assert waiting.returncode != 0 and "Job would conflict with reservation or top job" in waiting.stderr
    info = start_detached(site, "shrunk", "-p", "resv", "-t", "30", "--time-min", "5", "--no-dask")
    assert "shortened the time limit to 0:08:00" in info["stderr"]
    assert http_get(f"http://127.0.0.1:{info['local_port']}/api/status", info["token"])[0] == 200
    job = site["standin"].jobs()[info["job_id"]]
    assert (job["min_walltime"], job["max_walltime"], job["walltime"]) == (300, 1800, 480)
    usage = json.loads((SESSIONS / "shrunk" / "usage.json").read_text())
    assert usage["time_limit"] == 480  # HPCJUP_TIME_LIMIT in the job: the granted walltime, from qstat -f
    rows = json.loads(cli(site, "ls", "--json").stdout)["sessions"]
    assert {r["session"]: r for r in rows}["shrunk"]["time_limit"] == 480
    assert cli(site, "stop", "shrunk").returncode == 0


DASK_WORKERS = """
from dask.distributed import Client
client = Client()
client.wait_for_workers({n}, timeout=90)
print(len(client.scheduler_info()["workers"]), sum(client.gather(client.map(lambda x: x * x, range(100)))))
"""


def test_dask_workers_on_every_host_and_a_worker_group(site: dict[str, Any]) -> None:
    """Two nodes: one worker launched on each host of the allocation through the scheduler's own launcher
    (pbsdsh -h HOST / blaunch HOST); `hpcjup scale` adds a worker job rendered by dask-jobqueue (PBSJob /
    LSFJob) that joins the session's scheduler, and takes it away again."""
    from tests.cli.kernel import run_in_kernel

    name = f"{site['system']}-dask"
    info = start_detached(site, name, "-p", "workq", "-t", "20", "-N", "2", "--cpus", "1", "--workers", "2")
    base = f"http://127.0.0.1:{info['local_port']}"
    workers, total = run_in_kernel(base, info["token"], DASK_WORKERS.format(n=2), timeout=150).split()
    assert int(workers) == 2 and int(total) == sum(x * x for x in range(100))
    launched = site["standin"].launches(info["job_id"])
    assert len(launched) == 2 and len(set(launched)) == 2, launched  # one launch per host, every host

    scaled = cli(site, "scale", name, "workq", "1", "--json")
    assert scaled.returncode == 0, scaled.stderr
    [worker_job] = json.loads(scaled.stdout)["jobs"]
    job = site["standin"].jobs()[worker_job]
    assert job["name"].startswith(f"hpcjup+{name}+") and job["queue"] == "workq"
    workers, _ = run_in_kernel(base, info["token"], DASK_WORKERS.format(n=3), timeout=150).split()
    assert int(workers) == 3
    assert cli(site, "scale", name, "workq", "0", "--json").returncode == 0
    wait_until("the worker job to end", lambda: site["standin"].jobs()[worker_job]["state"] == "finished", 60)
    assert cli(site, "stop", name).returncode == 0


def test_walltime_warning_ends_the_session_before_the_limit(site: dict[str, Any]) -> None:
    """PBS sends nothing before the walltime: the launcher's own timer ends the session 30 s into a 1-minute
    job. LSF's warning action (-wa USR1 -wt 1) signals a 2-minute job a minute before its limit. Either way
    the session records "walltime" and the job ends by itself, not killed at the limit."""
    minutes = "1" if site["system"] == "pbs" else "2"
    name = f"{site['system']}-short"
    info = start_detached(site, name, "-p", "workq", "-t", minutes, "--no-dask")
    state = wait_until("the session to end by itself", lambda: launcher_state(name).get("reason"), 100)
    assert state == "walltime"
    job_id = info["job_id"]
    wait_until("the job to end", lambda: site["standin"].jobs()[job_id]["state"] == "finished", 30)
    job = site["standin"].jobs()[job_id]
    assert job["code"] == 0 and not job["timed_out"], job


def test_doctor_checks_the_commands_and_the_queue(site: dict[str, Any]) -> None:
    """`hpcjup doctor` through the stand-in: the scheduler's commands found over SSH, a known queue passes
    (qstat -Q -f -F json / bqueues), an unknown one fails with the command that lists them."""

    def checks(queue: str) -> dict[str, Any]:
        result = cli(site, "doctor", "--scheduler", site["system"], "-p", queue, "--json")
        return {check["name"]: check for check in json.loads(result.stdout)["checks"]}

    good = checks("workq")
    assert good["scheduler"]["status"] == "pass", good["scheduler"]
    assert good["partition"]["status"] == "pass" and "workq" in good["partition"]["summary"]
    bad = checks("nosuch")["partition"]
    assert bad["status"] == "fail" and ("qstat -Q" if site["system"] == "pbs" else "bqueues") in bad["fix"]


@pytest.mark.parametrize("site", ["pbs"], indirect=True)
def test_pbs_job_that_can_never_run_is_not_waited_for(site: dict[str, Any]) -> None:
    """20 CPUs asked of a queue with 16: PBS says "Can Never Run"; start says what is wrong and which flag to
    change within seconds, deletes the job, exit 5."""
    from tests.cluster.fixtures import laptop_environ

    argv = ["start", "--host", site["standin"].alias, "--scheduler", "pbs", "--name", "toobig", "-p", "workq"]
    argv += ["-N", "5", "--cpus", "4", "-t", "10", "--python", CLUSTER_PYTHON, "--no-browser", "--json"]
    started = time.monotonic()
    result = run(argv, laptop_environ(site["home"]), timeout=90)
    assert result.returncode == 5, result.stderr
    error = json.loads(result.stdout)["error"]
    assert "cannot start" in error["message"] and "Can Never Run" in error["message"], error
    assert "--nodes" in error["hint"]
    assert time.monotonic() - started < 45
    job = max((j for j in site["standin"].jobs().values() if j["name"] == "hpcjup-toobig"), key=lambda j: j["qtime"])
    assert job["state"] == "finished" and not (SESSIONS / "toobig").exists()
