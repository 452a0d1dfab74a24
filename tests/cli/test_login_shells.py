"""Cluster users whose login shell is tcsh or fish: every command works, on both SSH backends.

sshd runs each remote command as `LOGIN_SHELL -c COMMAND`; hpcjup's commands are POSIX sh. These
users are real (tests/cluster/fixtures.py: shell_users), their cluster environment set in
~/.cshrc or config.fish, and the real CLI reaches them through their own Host alias.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import http_get, run, wait_for
from tests.cluster.fixtures import SHELL_USERS, add_shell_hosts, make_laptop_env

pytestmark = [pytest.mark.cluster, pytest.mark.transport]
# The job's shell is `bash -l`, which reads neither ~/.cshrc nor config.fish: a tcsh or fish user
# names the Python that has JupyterLab, as they would in their profile.
PYTHON = ["--python", "/opt/hpcjup-cluster-env/bin/python"]


@pytest.fixture(params=sorted(SHELL_USERS))
def shell(request: pytest.FixtureRequest, shell_users: dict[str, str]) -> str:
    return str(request.param)


@pytest.fixture(params=("openssh", "paramiko"))
def env(request: pytest.FixtureRequest, minicluster: Any, shell: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh laptop that reaches the `shell` user as Host minicluster-SHELL, over one SSH backend."""
    laptop = make_laptop_env(minicluster, tmp_path / "laptop")
    add_shell_hosts(Path(laptop["HOME"]), minicluster)
    yield {**laptop, "HPCJUP_SSH": str(request.param)}
    minicluster.cancel_all(SHELL_USERS[shell])


def test_the_login_shell_is_really_not_sh(minicluster: Any, shell: str, env: dict[str, str]) -> None:
    """The harness is what the test claims: sshd runs the user's commands through tcsh or fish."""
    import subprocess

    variable = "$tcsh" if shell == "tcsh" else "$FISH_VERSION"  # each shell's own version variable
    out = subprocess.run(
        [
            *("ssh", "-F", f"{env['HOME']}/.ssh/config", "-o", f"UserKnownHostsFile={env['HOME']}/.ssh/known_hosts"),
            *("-o", "BatchMode=yes", f"minicluster-{shell}", f"echo {variable}"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()[:1].isdigit(), out.stdout


def test_start_ls_logs_stop_and_doctor(minicluster: Any, shell: str, env: dict[str, str]) -> None:
    host = ["--host", f"minicluster-{shell}"]
    user = SHELL_USERS[shell]
    name = f"sh-{shell}-{env['HPCJUP_SSH']}"
    doctor = run(["doctor", *host, *PYTHON, "--json"], env, timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    checks = {check["name"]: check["status"] for check in json.loads(doctor.stdout)["checks"]}
    assert set(checks.values()) == {"pass"}, doctor.stdout

    started = run(["start", *host, *PYTHON, "-d", "--json", "--name", name, "--time", "20"], env, timeout=180)
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    status, body = http_get(f"http://127.0.0.1:{info['local_port']}/api/status", info["token"])
    assert status == 200, body
    assert info["job_id"] in {job["id"] for job in minicluster.active_jobs(user)}

    listed = run(["ls", *host, "--json"], env)
    assert listed.returncode == 0, listed.stderr
    rows = {row["session"]: row for row in json.loads(listed.stdout)["sessions"]}
    assert rows[name]["state"] == "RUNNING" and rows[name]["job_id"] == info["job_id"]

    logs = run(["logs", name, *host], env)
    assert logs.returncode == 0 and "[hpcjup launcher]" in logs.stdout, logs.stdout + logs.stderr
    assert info["token"] not in logs.stdout

    stopped = run(["stop", name, *host, "--json"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert '"graceful": true' in stopped.stdout
    wait_for(lambda: info["job_id"] not in {job["id"] for job in minicluster.active_jobs(user)}, 30, "the job to end")
    assert not (Path(f"/home/{user}/.hpcjup/sessions") / name / "token").exists()
