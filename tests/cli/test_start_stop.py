"""`hpcjup start` and `stop` end to end: the real CLI, real sshd, real Slurm, real JupyterLab."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import Foreground, http_get, port_listening, run, wait_for
from tests.cli.kernel import run_in_kernel

pytestmark = [pytest.mark.cluster, pytest.mark.transport]
HOST = ["--host", "minicluster"]


def session_dir(name: str) -> Path:
    return Path("/home/hpcuser/.hpcjup/sessions") / name


def test_json_result_has_the_promised_keys(lab: dict[str, Any]) -> None:
    for key in ("session", "job_id", "host", "node", "remote_port", "local_port", "url", "token"):
        assert lab[key], key
    assert lab["url"] == f"http://127.0.0.1:{lab['local_port']}/lab?token={lab['token']}"
    assert lab["node"] in ("node1", "node2")


def test_api_status_needs_the_token(lab: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{lab['local_port']}"
    assert http_get(f"{base}/api/status", lab["token"])[0] == 200
    assert http_get(f"{base}/api/status")[0] == 403


def test_kernel_runs_on_the_compute_node(lab: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{lab['local_port']}"
    printed = run_in_kernel(base, lab["token"], "import os; print(os.environ['SLURMD_NODENAME'])")
    assert printed.strip() == lab["node"]


def test_job_runs_on_the_requested_partition(lab: dict[str, Any], minicluster: Any) -> None:
    jobs = {job["id"]: job for job in minicluster.active_jobs()}
    assert jobs[lab["job_id"]]["state"] == "RUNNING"
    out = minicluster.slurm("squeue", "-h", "-j", lab["job_id"], "-o", "%P").stdout.strip()
    assert out == "booster"


def test_one_ssh_authentication_per_start(lab: dict[str, Any]) -> None:
    assert lab["auths"] == 1


def test_secrets_stay_private(lab: dict[str, Any], minicluster: Any) -> None:
    directory = session_dir(lab["session"])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("connection.json", "token", "session.json", "state.json", "job.out"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    token = lab["token"]
    assert token not in (directory / "job.out").read_text()
    assert token not in subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout
    assert token not in minicluster.sshd_log()
    state_dir = Path(lab["env"]["XDG_STATE_HOME"])
    for path in state_dir.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_stop_ends_job_tunnel_and_secrets(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    fg = Foreground(["start", *HOST, "--name", "tostop", "--no-browser", "--json"], laptop_env)
    try:
        port = fg.info["local_port"]
        assert port_listening(port)
        result = run(["stop", "tostop", *HOST, "--json"], laptop_env)
        assert result.returncode == 0, result.stderr
        assert '"graceful": true' in result.stdout
        assert fg.info["job_id"] not in {job["id"] for job in minicluster.active_jobs()}
        _code, _, _err = fg.finish(timeout=15)  # stop ends the tunnel holder
        assert not port_listening(port)
        directory = session_dir("tostop")
        assert not (directory / "connection.json").exists() and not (directory / "token").exists()
        assert '"reason": "stopped"' in (directory / "state.json").read_text()
    finally:
        fg.kill()


def test_ctrl_c_detaches_and_the_job_keeps_running(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    fg = Foreground(["start", *HOST, "--name", "detach", "--no-browser", "--json"], laptop_env)
    code, _, err = fg.detach()
    assert code == 0, err
    assert "hpcjup attach detach" in err and "hpcjup stop detach" in err
    assert not port_listening(fg.info["local_port"])
    assert fg.info["job_id"] in {job["id"] for job in minicluster.active_jobs() if job["state"] == "RUNNING"}
    assert run(["stop", "detach", *HOST], laptop_env).returncode == 0


def test_stop_without_a_name_picks_the_only_running_session(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    fg = Foreground(["start", *HOST, "--no-browser", "--json"], laptop_env)
    fg.detach()
    result = run(["stop"], laptop_env)  # the host comes from the laptop's cache
    assert result.returncode == 0, result.stderr
    assert fg.info["session"] in result.stdout
    wait_for(
        lambda: fg.info["job_id"] not in {job["id"] for job in minicluster.active_jobs()}, 30, "the job to leave squeue"
    )


def test_local_mode_works_the_same_way(laptop_env: dict[str, str], tmp_path: Path) -> None:
    from tests.cli.helpers import local_env

    env = local_env(laptop_env)
    fg = Foreground(
        ["start", "--local", "--name", "here", "--workdir", str(tmp_path), "--no-browser", "--json"], env, timeout=60
    )
    try:
        base = f"http://127.0.0.1:{fg.info['local_port']}"
        assert http_get(f"{base}/api/status", fg.info["token"])[0] == 200
        assert http_get(f"{base}/api/status")[0] == 403
        printed = run_in_kernel(base, fg.info["token"], "import os; print(os.getcwd())")
        assert printed.strip() == str(tmp_path)
        remote_port = fg.info["remote_port"]
        result = run(["stop", "here", "--local", "--json"], env)
        assert result.returncode == 0, result.stderr
        fg.finish(timeout=15)
        assert not port_listening(fg.info["local_port"]) and not port_listening(remote_port)
        state = Path(env["HOME"]) / ".hpcjup/sessions/here/state.json"
        assert '"stopped"' in state.read_text()
    finally:
        fg.kill()
        run(["stop", "here", "--local"], env)  # after a failure above: no Jupyter left running on this machine


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_start_attach_stop_on_each_ssh_backend(
    backend: str, minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    import json

    name = f"via-{backend}"
    auths = minicluster.auth_count()
    started = run(["start", *HOST, "--ssh", backend, "--name", name, "--no-dask", "-d", "--json"], laptop_env)
    assert started.returncode == 0, started.stderr
    assert minicluster.auth_count() - auths == 1  # one authentication for the whole start
    info = json.loads(started.stdout)
    assert http_get(f"http://127.0.0.1:{info['local_port']}/api/status", info["token"])[0] == 200
    assert run(["disconnect", name], laptop_env).returncode == 0
    attached = run(["attach", name, *HOST, "--ssh", backend, "-d", "--json"], laptop_env)
    assert attached.returncode == 0, attached.stderr
    again = json.loads(attached.stdout)
    assert http_get(f"http://127.0.0.1:{again['local_port']}/api/status", again["token"])[0] == 200
    stopped = run(["stop", name, *HOST, "--ssh", backend, "--json"], laptop_env)
    assert stopped.returncode == 0, stopped.stderr
    assert info["job_id"] not in {job["id"] for job in minicluster.active_jobs()}
    assert not port_listening(again["local_port"])
