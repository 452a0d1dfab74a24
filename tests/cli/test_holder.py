"""A detached holder lets go by itself: when its job is killed outright, and when a reconnect is refused."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import http_get, port_listening, run, wait_for
from tests.cluster import procs

pytestmark = [pytest.mark.cluster, pytest.mark.transport]
HOST = ["--host", "minicluster"]


def start_detached(env: dict[str, str], name: str) -> dict[str, Any]:
    result = run(["start", *HOST, "-d", "--json", "--no-dask", "--name", name], env, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def held_pid(env: dict[str, str], name: str) -> int | None:
    """The holder's pid as `hpcjup url` reports it, None once nothing holds the session here."""
    result = run(["url", name, "--json"], env)
    return json.loads(result.stdout)["pid"] if result.returncode == 0 else None


def state_file(env: dict[str, str], *parts: str) -> Path:
    return Path(env["XDG_STATE_HOME"], "hpcjup", *parts)


def test_holder_ends_when_its_job_is_killed_outright(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    env = {**laptop_env, "HPCJUP_HOLDER_CHECK_EVERY": "2"}  # the scheduler is asked every 2 s instead of 60 s
    name = f"killed-{uuid.uuid4().hex[:6]}"  # names of ended sessions stay taken while their directory exists
    info = start_detached(env, name)
    pid = held_pid(env, name)
    assert pid is not None
    # kill -9 of the launcher and everything below it (as a node failure would): nothing gets to write the end.
    # (`scancel -s KILL` would not do: Slurm turns it into a plain cancel, SIGTERM first, which the launcher records.)
    launcher = json.loads(Path(f"/home/hpcuser/.hpcjup/sessions/{name}/state.json").read_text())["pid"]
    tree = [launcher, *procs.descendants(launcher)]
    killed = minicluster.run_as_user(["kill", "-KILL", *map(str, tree)])
    assert killed.returncode == 0, killed.stderr
    wait_for(lambda: not procs.alive(pid), 30, "the holder to exit after its job was killed", interval=0.5)
    assert not port_listening(info["local_port"]) and held_pid(env, name) is None
    log = state_file(env, "logs", "minicluster", f"{name}.log").read_text()
    assert f"job {info['job_id']} is over (the scheduler says it is" in log, log
    state = json.loads(Path(f"/home/hpcuser/.hpcjup/sessions/{name}/state.json").read_text())
    assert not state.get("ended"), state  # the case at hand: the launcher never recorded the end


def test_reconnect_stops_at_a_changed_host_key(
    minicluster: Any, laptop_env: dict[str, str], laptop_home: Path, tmp_path: Path, clean_jobs: None
) -> None:
    name = f"rekeyed-{uuid.uuid4().hex[:6]}"
    info = start_detached(laptop_env, name)
    pid = held_pid(laptop_env, name)
    assert pid is not None
    # The server now shows a key other than the one known_hosts holds (as after a reinstall, or an attack).
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()[:2]
    host_field = minicluster.host_key_line().split()[0]
    (laptop_home / ".ssh" / "known_hosts").write_text(f"{host_field} {other[0]} {other[1]}\n")
    minicluster.restart_sshd()  # drops the holder's connection: it reconnects, and meets the changed key
    wait_for(lambda: not procs.alive(pid), 60, "the holder to give up after a refused reconnect", interval=0.5)
    log = state_file(laptop_env, "logs", "minicluster", f"{name}.log").read_text()
    assert "Not retrying" in log and log.count("reconnect failed") == 0, log
    entry = json.loads(state_file(laptop_env, "sessions", "minicluster", f"{name}.json").read_text())
    assert "tunnel" not in entry, entry
    error = entry["tunnel_error"]
    assert "host key" in error["message"].lower() and error["at"], error
    assert not port_listening(info["local_port"])
    refused = run(["url", name], laptop_env)
    assert refused.returncode != 0 and "Its tunnel closed" in refused.stderr, refused.stderr
    assert info["job_id"] in {job["id"] for job in minicluster.active_jobs()}  # the job is left alone
    minicluster.write_laptop_ssh(laptop_home)  # the right key again: attach works and clears the error
    again = run(["attach", name, *HOST, "-d", "--json"], laptop_env)
    assert again.returncode == 0, again.stderr
    attached = json.loads(again.stdout)
    assert http_get(f"http://127.0.0.1:{attached['local_port']}/api/status", attached["token"])[0] == 200
    entry = json.loads(state_file(laptop_env, "sessions", "minicluster", f"{name}.json").read_text())
    assert "tunnel_error" not in entry
    assert run(["stop", name, *HOST], laptop_env).returncode == 0


def test_attach_on_another_port_moves_the_tunnel(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    import socket

    name = f"moved-{uuid.uuid4().hex[:6]}"
    info = start_detached(laptop_env, name)
    first = held_pid(laptop_env, name)
    with socket.socket() as probe:  # a free port for the new tunnel
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moved = run(["attach", name, *HOST, "-d", "--json", "--local-port", str(port)], laptop_env)
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["local_port"] == port
    assert first is not None
    wait_for(lambda: not procs.alive(first), 10, "the old holder to exit")  # one holder per session
    assert not port_listening(info["local_port"])
    assert http_get(f"http://127.0.0.1:{port}/api/status", info["token"])[0] == 200
    assert held_pid(laptop_env, name) not in (None, first)
    assert run(["stop", name, *HOST], laptop_env).returncode == 0
