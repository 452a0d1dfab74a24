"""The launcher run for real on this machine with the cluster-side JupyterLab (no scheduler)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcjup.job import LAUNCHER_PATH

CLUSTER_PYTHON = Path("/opt/hpcjup-cluster-env/bin/python")


@pytest.fixture(scope="module")
def python() -> str:
    if not CLUSTER_PYTHON.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CLUSTER_PYTHON} is required in CI (tests/cluster/install.sh)")
        pytest.skip(f"{CLUSTER_PYTHON} missing (tests/cluster/install.sh creates it)")
    return str(CLUSTER_PYTHON)


class Run:
    def __init__(self, python: str, directory: Path, *extra: str) -> None:
        directory.mkdir(mode=0o700)
        self.dir = directory
        self.log = open(directory / "job.out", "wb")  # noqa: SIM115
        argv = [python, str(LAUNCHER_PATH), "--session-dir", str(directory), "--bind", "127.0.0.1", "--workdir", str(directory.parent), *extra]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "HPCJUP_JOB_ID": "4242"})

    def json(self, name: str) -> dict:
        return json.loads((self.dir / name).read_text())

    def wait_file(self, name: str, timeout: float = 60) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (self.dir / name).exists():
                return self.json(name)
            assert self.proc.poll() is None, (self.dir / "job.out").read_text()
            time.sleep(0.1)
        raise AssertionError(f"{name} did not appear")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.log.close()
        return code


def _status(conn: dict, token: str | None) -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{conn['port']}/api/status", headers=headers), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def running(python: str, tmp_path: Path) -> Iterator[Run]:
    run = Run(python, tmp_path / "session")
    yield run
    if run.proc.poll() is None:
        run.proc.kill()


def test_rendezvous_files_and_token(running: Run) -> None:
    conn = running.wait_file("connection.json")
    assert conn["schema"] == 1 and conn["job_id"] == "4242" and conn["address"] == "127.0.0.1"
    assert conn["url"] == f"http://127.0.0.1:{conn['port']}/lab" and conn["token"] not in conn["url"]
    token = (running.dir / "token").read_bytes()
    assert token == conn["token"].encode() and len(token) == 64 and not token.endswith(b"\n")
    for name in ("connection.json", "token", "state.json"):
        assert stat.S_IMODE((running.dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((running.dir / "runtime").stat().st_mode) == 0o700
    assert running.json("state.json")["state"] == "running"
    assert _status(conn, conn["token"]) == 200
    assert _status(conn, None) == 403
    assert _status(conn, "0" * 64) == 403


def test_sigterm_stops_cleanly_and_removes_secrets(running: Run) -> None:
    conn = running.wait_file("connection.json")
    assert running.stop(signal.SIGTERM) == 0
    state = running.json("state.json")
    assert (state["state"], state["reason"], state["exit_code"]) == ("ended", "stopped", 0)
    assert not (running.dir / "connection.json").exists() and not (running.dir / "token").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(conn["pid"], 0)
    log = (running.dir / "job.out").read_text()
    assert conn["token"] not in log
    assert "received signal 15" in log  # Jupyter's own clean-shutdown path ran


def test_walltime_signal_is_recorded(running: Run) -> None:
    running.wait_file("connection.json")
    assert running.stop(signal.SIGUSR1) == 0
    assert running.json("state.json")["reason"] == "walltime"


def test_no_jupyter_is_a_clear_failure(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    run = Run(str(bare / "bin" / "python"), tmp_path / "session")
    assert run.proc.wait(30) == 2
    state = run.json("state.json")
    assert (state["state"], state["reason"]) == ("ended", "no-jupyter")
    assert "pip install jupyterlab" in state["message"] and str(bare) in state["message"]
    assert not (run.dir / "token").exists()


def test_jupyter_exiting_by_itself_is_recorded(python: str, tmp_path: Path) -> None:
    run = Run(python, tmp_path / "session", "--", "--ServerApp.no_such_option_value=1", "--ServerApp.port_retries=not-a-number")
    code = run.proc.wait(60)
    assert code != 0
    state = run.json("state.json")
    assert (state["state"], state["reason"]) == ("ended", "jupyter-exited")
