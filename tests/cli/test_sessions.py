"""Sessions that survive: detach, ls, attach from anywhere, reconnect, outcomes, time limits, idling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import http_get, port_listening, run, session_jobs, wait_for
from tests.cli.kernel import run_in_kernel

pytestmark = [pytest.mark.cluster, pytest.mark.transport]
HOST = ["--host", "minicluster"]
HOME = Path("/home/hpcuser")


def start_detached(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run(["start", *HOST, "-d", "--json", *args], env, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ls(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    result = run(["ls", *HOST, "--json"], env)
    assert result.returncode == 0, result.stderr
    return {row["session"]: row for row in json.loads(result.stdout)["sessions"]}


def answers(info: dict[str, Any]) -> bool:
    return http_get(f"http://127.0.0.1:{info['local_port']}/api/status", info["token"])[0] == 200


def holder_pid(env: dict[str, str], name: str) -> int:
    result = run(["url", name, "--json"], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["pid"]


def test_detach_ls_kill_holder_attach(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    info = start_detached(laptop_env, "--name", "survivor")
    assert answers(info)
    row = ls(laptop_env)["survivor"]
    assert (row["state"], row["job_id"], row["local_url"]) == ("RUNNING", info["job_id"], info["url"])
    os.kill(holder_pid(laptop_env, "survivor"), signal.SIGKILL)
    wait_for(lambda: not port_listening(info["local_port"]), 10, "the tunnel to go with its holder")
    again = run(["attach", "survivor", *HOST, "-d", "--json"], laptop_env)
    assert again.returncode == 0, again.stderr
    attached = json.loads(again.stdout)
    assert attached["local_port"] == info["local_port"]  # the same port: open browser tabs keep working
    assert answers(attached)
    assert run(["disconnect", "survivor"], laptop_env).returncode == 0
    wait_for(lambda: not port_listening(info["local_port"]), 10, "disconnect to close the tunnel")
    assert ls(laptop_env)["survivor"]["state"] == "RUNNING"  # disconnect leaves the job alone


def test_reconnects_after_the_connection_drops(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    info = start_detached(laptop_env, "--name", "flaky")
    assert answers(info)
    minicluster.restart_sshd()  # kills the server side of every connection, then listens again
    wait_for(lambda: answers(info), 60, "a request through the same local port after the reconnect", interval=1)
    log_path = Path(laptop_env["XDG_STATE_HOME"]) / "hpcjup/logs/minicluster/flaky.log"
    # The holder swaps in the new connection, then says so: a request can get through in between.
    log = wait_for(
        lambda: "Reconnected" in log_path.read_text() and log_path.read_text(), 10, "the holder to report the reconnect"
    )
    assert "reconnecting" in log and "Reconnected" in log


def test_attach_from_another_laptop(
    minicluster: Any, laptop_env: dict[str, str], tmp_path: Path, clean_jobs: None
) -> None:
    from tests.cluster.fixtures import make_laptop_env

    info = start_detached(laptop_env, "--name", "roaming")
    other = make_laptop_env(minicluster, tmp_path / "other-laptop")
    assert ls(other)["roaming"]["state"] == "RUNNING"
    result = run(["attach", "--host", "minicluster", "-d", "--json"], other)  # the only running session
    assert result.returncode == 0, result.stderr
    attached = json.loads(result.stdout)
    assert attached["session"] == "roaming" and attached["token"] == info["token"] and answers(attached)


def test_cancelled_from_outside(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    info = start_detached(laptop_env, "--name", "victim")
    minicluster.slurm("scancel", info["job_id"], check=True)
    wait_for(lambda: ls(laptop_env)["victim"]["state"] == "CANCELLED", 60, "ls to show CANCELLED", interval=1)
    result = run(["attach", "victim", *HOST, "--no-browser"], laptop_env)
    assert result.returncode == ExitCode.JOB_FAILED
    assert "has ended" in result.stderr and "victim" in result.stderr


def test_two_sessions_and_stop_all(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    one = start_detached(laptop_env, "--name", "one")
    two = start_detached(laptop_env, "--name", "two")
    assert one["local_port"] != two["local_port"] and one["job_id"] != two["job_id"]
    assert answers(one) and answers(two) and one["token"] != two["token"]
    duplicate = run(["start", *HOST, "--name", "one", "--no-browser"], laptop_env)
    assert duplicate.returncode == ExitCode.USAGE and "is in use" in duplicate.stderr
    result = run(["stop", *HOST, "--all", "--json"], laptop_env)
    assert result.returncode == 0, result.stderr
    assert sorted(s["name"] for s in json.loads(result.stdout)["stopped"]) == ["one", "two"]
    assert not session_jobs(minicluster, ("one", "two", "one"))
    assert not port_listening(one["local_port"]) and not port_listening(two["local_port"])


def test_saved_notebook_survives_stop(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    import urllib.request

    info = start_detached(laptop_env, "--name", "keeper", "--workdir", "/home/hpcuser")
    notebook = {
        "type": "notebook",
        "content": {
            "cells": [
                {"cell_type": "code", "source": "x = 42", "metadata": {}, "outputs": [], "execution_count": None}
            ],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        },
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{info['local_port']}/api/contents/kept.ipynb",
        data=json.dumps(notebook).encode(),
        method="PUT",
        headers={"Authorization": f"token {info['token']}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=30).close()
    path = HOME / "kept.ipynb"
    saved = path.read_bytes()
    assert run(["stop", "keeper", *HOST], laptop_env).returncode == 0
    assert path.read_bytes() == saved
    assert "".join(json.loads(saved)["cells"][0]["source"]) == "x = 42"
    path.unlink()


def test_walltime_and_idle_end_sessions_by_themselves(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    walltime = start_detached(laptop_env, "--name", "shortlived", "--time", "2")
    idle = start_detached(laptop_env, "--name", "idler", "--idle-timeout", "10s")
    assert run_in_kernel(f"http://127.0.0.1:{walltime['local_port']}", walltime["token"], "print(1)").strip() == "1"

    def ended() -> dict[str, dict[str, Any]] | None:
        rows = ls(laptop_env)
        return rows if all(rows[n]["ended_because"] for n in ("shortlived", "idler")) else None

    rows = wait_for(ended, 200, "both sessions to end by themselves", interval=5)
    assert rows["shortlived"]["ended_because"] == "walltime", rows["shortlived"]
    assert rows["idler"]["ended_because"] == "idle", rows["idler"]
    state = json.loads((HOME / ".hpcjup/sessions/shortlived/state.json").read_text())
    assert (state["reason"], state["exit_code"]) == ("walltime", 0)
    assert not session_jobs(minicluster, ("shortlived", "idler"))
    for name in ("shortlived", "idler"):  # the launchers (and so their Jupyters) are gone
        launcher = json.loads((HOME / f".hpcjup/sessions/{name}/state.json").read_text())["pid"]
        assert subprocess.run(["ps", "-p", str(launcher)], capture_output=True).returncode == 1
    # The detached holders notice the end and let go of their ports.
    wait_for(
        lambda: not port_listening(idle["local_port"]) and not port_listening(walltime["local_port"]),
        30,
        "the holders to exit",
    )
