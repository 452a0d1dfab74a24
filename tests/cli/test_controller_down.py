"""A stopped Slurm controller: every command answers within 30 s, shows UNKNOWN in Slurm's words, and changes
nothing it cannot confirm (issue 23). The real slurmctld of the mini-cluster is stopped for a few seconds
(tests/cluster/minicluster.py `controller_stopped`: the harness lock held, restarted in a `finally`), while
two real sessions run; the commands under test run side by side, so the outage stays short for the other
test runs sharing the cluster."""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import run
from tests.cluster.minicluster import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]

HOST = ["--host", "minicluster"]
LIMIT = 30.0  # seconds: DESIGN.md's "every command when a scheduler does not answer"
SLURM_SAYS = "Unable to contact slurm controller"


def _session_dir(name: str) -> Path:
    return Path("/home/hpcuser/.hpcjup/sessions") / name


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, Any]:
    started = time.monotonic()
    done = run(args, env, timeout=90)
    return time.monotonic() - started, done


def test_every_command_answers_and_changes_nothing_while_the_controller_is_down(
    minicluster: Any, laptop_env: dict[str, str]
) -> None:
    names = [f"ctl-{secrets.token_hex(2)}-{i}" for i in range(2)]
    try:
        for name in names:
            started = run(["start", *HOST, "--name", name, "--no-dask", "--time", "10", "-d", "--json"], laptop_env)
            assert started.returncode == 0, started.stderr
        assert run(["disconnect", "--all"], laptop_env).returncode == 0  # attach below opens its own tunnel
        first = names[0]
        secrets_before = {p.name for p in _session_dir(first).iterdir() if p.name in ("token", "connection.json")}
        assert secrets_before == {"token", "connection.json"}
        cache = next(Path(laptop_env["XDG_STATE_HOME"]).rglob(f"{first}.json"))

        with minicluster.controller_stopped():
            commands = {
                "ls": ["ls", *HOST, "--json"],
                "stop": ["stop", first, *HOST, "--json"],
                "prune": ["prune", *HOST, "--json"],
                "attach": ["attach", names[1], *HOST, "--no-browser", "-d", "--json"],
            }
            with ThreadPoolExecutor(len(commands)) as pool:
                results = dict(zip(commands, pool.map(lambda a: _timed(a, laptop_env), commands.values()), strict=True))
            # Seen before the controller is back (other test runs on the cluster may cancel jobs once it is).
            files_after = {p.name for p in _session_dir(first).iterdir()}
            launchers = {name: json.loads(_session_dir(name).joinpath("state.json").read_text()) for name in names}
            cached = cache.exists()

        for what, (seconds, done) in results.items():
            assert seconds < LIMIT, f"{what} took {seconds:.1f} s: {done.stderr}"

        seconds, listed = results["ls"]
        assert listed.returncode == 0, listed.stderr
        rows = {row["session"]: row for row in json.loads(listed.stdout)["sessions"] if row["session"] in names}
        assert {row["state"] for row in rows.values()} == {"UNKNOWN"}
        assert all(SLURM_SAYS in row["unknown_because"] for row in rows.values()), rows

        _, stopped = results["stop"]
        assert stopped.returncode == ExitCode.REMOTE, stopped.stderr
        error = json.loads(stopped.stdout)["error"]
        assert "nothing was stopped" in error["message"] and SLURM_SAYS in error["message"]
        assert "shut down cleanly" not in stopped.stdout + stopped.stderr

        _, pruned = results["prune"]
        assert pruned.returncode == 0, pruned.stderr
        assert not {r["name"] for r in json.loads(pruned.stdout)["removed"]} & set(names)

        _, attached = results["attach"]
        assert attached.returncode == 0, attached.stderr  # the job runs on: its tunnel works without the controller
        assert json.loads(attached.stdout)["session"] == names[1]

        # Nothing was changed that could not be confirmed: the secrets, the record and this laptop's entry stay,
        # and the jobs run on.
        assert secrets_before <= files_after and cached
        assert {name: state["state"] for name, state in launchers.items()} == dict.fromkeys(names, "running")
    finally:
        for name in names:
            run(["stop", name, *HOST], laptop_env)
    # Once the controller answers again, stop does its work.
    wait_until(lambda: not any(_session_dir(name).joinpath("token").exists() for name in names), 30, "the secrets go")
