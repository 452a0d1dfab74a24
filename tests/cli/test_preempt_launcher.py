"""The launcher of a preemptible session (issue 22), run for real on this machine: SIGTERM (what the batch system
sends at a preemption) shuts Jupyter down cleanly and keeps the token for the job's next run; the next run of the
same job id counts itself, writes a new connection.json with the same token, and Jupyter answers to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hpcjup.job import LAUNCHER_PATH
from tests.job.conftest import CLUSTER_PYTHON

pytestmark = pytest.mark.one_backend


def launch(directory: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The launcher of job 4242 in `directory` (made 0700 if missing), logging beside it."""
    directory.mkdir(mode=0o700, exist_ok=True)
    log = open(directory.parent / "job.out", "ab")
    argv = [str(CLUSTER_PYTHON), str(LAUNCHER_PATH), "--session-dir", str(directory), "--bind", "127.0.0.1"]
    argv += ["--workdir", str(directory.parent), *extra]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("HPCJUP_")}
    return subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env={**child_env, "HPCJUP_JOB_ID": "4242", **(env or {})}
    )


def connection(directory: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while not (directory / "connection.json").exists():
        assert proc.poll() is None, (directory.parent / "job.out").read_text()
        assert time.monotonic() < end, "connection.json did not appear"
        time.sleep(0.05)
    return json.loads((directory / "connection.json").read_text())


def status(conn: dict[str, Any], token: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{conn['port']}/api/status")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def python() -> str:
    if not CLUSTER_PYTHON.exists():
        pytest.skip(f"{CLUSTER_PYTHON} missing (tests/cluster/install.sh creates it)")
    return str(CLUSTER_PYTHON)


def test_a_preempted_run_keeps_its_token_and_the_next_run_serves_with_it(python: str, tmp_path: Path) -> None:
    session = tmp_path / "session"
    first = launch(session, "--preemptible")
    try:
        before = connection(session, first)
        (tmp_path / "notebook.txt").write_text("saved")  # a file saved on disk: the next run finds it
        assert (before["preemptible"], before["restarts"]) == (True, 0)
        first.send_signal(signal.SIGTERM)
        assert first.wait(40) == 0
    finally:
        first.kill()
    state = json.loads((session / "state.json").read_text())
    assert (state["state"], state["reason"], state["preemptible"], state["restarts"]) == ("ended", "stopped", True, 0)
    # The rendezvous goes (nothing answers there now); the token stays, 0600, for the next run.
    assert not (session / "connection.json").exists()
    assert (session / "token").read_text() == before["token"]
    assert oct((session / "token").stat().st_mode & 0o777) == "0o600"
    # The job runs again (the batch system says nothing of its restarts here: state.json counts them).
    second = launch(session, "--preemptible")
    try:
        after = connection(session, second)
        assert after["job_id"] == before["job_id"] and after["restarts"] == 1
        assert after["token"] == before["token"] and after["pid"] != before["pid"]
        assert status(after, after["token"]) == 200 and status(after, None) == 403
        assert json.loads((session / "state.json").read_text())["restarts"] == 1
        assert (tmp_path / "notebook.txt").read_text() == "saved"
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(40)
    log = (tmp_path / "job.out").read_text()
    assert before["token"] not in log


def test_the_batch_systems_count_wins_and_a_plain_session_keeps_nothing(python: str, tmp_path: Path) -> None:
    session = tmp_path / "session"
    first = launch(session)
    try:
        before = connection(session, first)
        assert (before["preemptible"], before["restarts"]) == (False, 0)
        first.send_signal(signal.SIGTERM)
        assert first.wait(40) == 0
    finally:
        first.kill()
    assert not (session / "token").exists()  # not preemptible: every secret goes at the end, as before
    second = launch(session, env={"HPCJUP_RESTARTS": "3"})
    try:
        after = connection(session, second)
        assert after["restarts"] == 3 and after["token"] != before["token"]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(40)
