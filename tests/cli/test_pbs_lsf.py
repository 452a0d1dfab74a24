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
from hpcjup.session.submit import StartRequest, submit
from hpcjup.session.wait import ReadyWaiter
from hpcjup.transport import connect
from hpcjup.tunnel import Tunnel
from tests.cli.helpers import CLUSTER_PYTHON, Foreground, http_get, run
from tests.cluster.fixtures import XDG_DIRS, make_laptop_home
from tests.cluster.standins import Standin, lsf_standin, pbs_standin  # noqa: F401  (fixtures)

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
