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


def ended(env: dict[str, str], name: str) -> dict[str, Any] | None:
    """The session's `ls` row once it has ended by itself (it says why), else None."""
    row = ls(env)[name]
    return row if row["ended_because"] else None


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


def test_an_idle_session_ends_by_itself_and_its_holder_lets_go(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """The idle end, and the detached holder that notices an end it did not cause, on each SSH backend (the end by
    walltime, a wait of a minute or more that nothing of SSH changes, is test_walltime.py's, on one)."""
    idle = start_detached(laptop_env, "--name", "idler", "--idle-timeout", "10s")
    row = wait_for(lambda: ended(laptop_env, "idler"), 120, "the idle end", 1)
    assert row["ended_because"] == "idle", row
    assert not session_jobs(minicluster, ("idler",))
    launcher = json.loads((HOME / ".hpcjup/sessions/idler/state.json").read_text())["pid"]
    assert subprocess.run(["ps", "-p", str(launcher)], capture_output=True).returncode == 1  # Jupyter went with it
    wait_for(lambda: not port_listening(idle["local_port"]), 30, "the holder to exit")
