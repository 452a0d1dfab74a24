"""Bad input and failures of `hpcjup start`: a clear message, a documented exit code, nothing left behind."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import run

pytestmark = [pytest.mark.cluster, pytest.mark.transport]
HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")


def _no_trace(minicluster: Any, name: str) -> None:
    assert not (SESSIONS / name).exists(), f"session directory {name} left behind"
    assert not [job for job in minicluster.active_jobs() if job["name"] == f"hpcjup-{name}"], "job left behind"


def test_unknown_partition(minicluster: Any, laptop_env: dict[str, str]) -> None:
    result = run(["start", *HOST, "--name", "badpart", "--partition", "nosuch", "--no-browser"], laptop_env)
    assert result.returncode == ExitCode.SUBMIT, result.stderr
    assert "invalid partition" in result.stderr.lower()
    assert "sinfo" in result.stderr
    _no_trace(minicluster, "badpart")


def test_bad_time_is_refused_before_connecting(laptop_env: dict[str, str]) -> None:
    result = run(["start", *HOST, "--time", "2 hours", "--no-browser"], laptop_env)
    assert result.returncode == ExitCode.USAGE
    assert "--time" in result.stderr and "HH:MM:SS" in result.stderr


def test_unreachable_host(laptop_env: dict[str, str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run(["start", "--host", f"hpcuser@127.0.0.1:{port}", "--no-browser"], laptop_env)
    assert result.returncode == ExitCode.CONNECT
    assert f"127.0.0.1:{port}" in result.stderr and "hint:" in result.stderr


def test_unknown_host_key_is_refused_with_how_to_accept(minicluster: Any, laptop_env: dict[str, str]) -> None:
    (Path(laptop_env["HOME"]) / ".ssh/known_hosts").write_text("")
    result = run(["start", *HOST, "--no-browser"], laptop_env)
    assert result.returncode == ExitCode.AUTH
    assert "SHA256:" in result.stderr
    assert "accept" in result.stderr and f"ssh -p {minicluster.ssh_port}" in result.stderr


def test_refused_key(minicluster: Any, laptop_env: dict[str, str], tmp_path: Path) -> None:
    import subprocess

    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    config = Path(laptop_env["HOME"]) / ".ssh/config"
    config.write_text(config.read_text().replace(str(Path(laptop_env["HOME"]) / ".ssh/id_minicluster"), str(stranger)))
    assert str(stranger) in config.read_text()
    result = run(["start", *HOST, "--no-browser"], laptop_env)
    assert result.returncode == ExitCode.AUTH, result.stderr
    assert "Authentication as hpcuser" in result.stderr


def test_no_jupyter_in_the_cluster_python_is_found_before_anything_is_queued(
    minicluster: Any, laptop_env: dict[str, str]
) -> None:
    """A bare start (nothing set but a Python without JupyterLab) is caught by the upload's own command: no job
    waits in the queue only to fail on the node; without a terminal and --yes nothing is built either."""
    started = time.monotonic()
    result = run(["start", *HOST, "--name", "nojup", "--python", "/usr/bin/python3", "--no-browser"], laptop_env)
    elapsed = time.monotonic() - started
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "no JupyterLab" in result.stderr and "--yes" in result.stderr and "env build --server" in result.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s to notice"
    assert not [job for job in minicluster.jobs() if job["name"] == "hpcjup-nojup"]
    _no_trace(minicluster, "nojup")


def test_no_jupyter_on_the_node_ends_the_job_with_a_hint(minicluster: Any, laptop_env: dict[str, str]) -> None:
    """Where the environment comes from the job's own setup (modules, setup lines: not known before the job runs),
    a Python without JupyterLab is found on the node: the job ends at once, with what to do."""
    config = Path(laptop_env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[profiles.nojup]\npython = "/usr/bin/python3"\nsetup = ["export HPCJUP_TEST_SETUP=1"]\n')
    started = time.monotonic()
    result = run(["start", *HOST, "--profile", "nojup", "--name", "nojup-node", "--no-browser"], laptop_env)
    elapsed = time.monotonic() - started
    assert result.returncode == ExitCode.JOB_FAILED, result.stderr
    assert "jupyter" in result.stderr.lower() and "hint:" in result.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s to notice"
    assert not [
        job
        for job in minicluster.jobs()
        if job["name"] == "hpcjup-nojup-node" and job["state"] in ("PENDING", "RUNNING")
    ]
    assert not (SESSIONS / "nojup-node" / "token").exists()


def test_busy_local_port_fails_before_submitting(minicluster: Any, laptop_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["start", *HOST, "--name", "busyport", "--local-port", str(port), "--no-browser"], laptop_env)
    assert result.returncode == ExitCode.PORT_BUSY
    assert str(port) in result.stderr and "--local-port" in result.stderr
    _no_trace(minicluster, "busyport")


def test_bad_session_name(laptop_env: dict[str, str]) -> None:
    result = run(["start", "--local", "--name", "../escape", "--no-browser"], laptop_env)
    assert result.returncode == ExitCode.USAGE
    assert "not valid" in result.stderr
