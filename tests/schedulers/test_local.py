"""The local "scheduler" (`--local`): a real `hpcjup start --local`, then its cancel, on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.schedulers.base import JobState
from hpcjup.schedulers.local import LocalProcess
from hpcjup.transport.local import LocalTransport
from tests.cli.helpers import CLUSTER_PYTHON, local_env, run, wait_for
from tests.cluster.procs import alive, all_pids, cmdline, descendants, kill_outright


@pytest.fixture
def local_session(laptop_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A detached `hpcjup start --local` session with Dask; stopped (and its tree killed) afterwards."""
    if not Path(CLUSTER_PYTHON).exists():
        pytest.skip(f"{CLUSTER_PYTHON} missing (tests/cluster/install.sh creates it)")
    env = local_env(laptop_env)
    result = run(["start", "--local", "--name", "tree", "--workdir", str(tmp_path), "-d", "--json"], env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    pid = int(info["job_id"].split(".")[0])
    tree = [pid, *descendants(pid)]
    try:
        yield {**info, "env": env}
    finally:
        run(["stop", "tree", "--local"], env)
        kill_outright(p for p in [*tree, *descendants(pid)] if alive(p))


def start_kernel(info: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{info['local_port']}/api/kernels",
        data=b"{}",
        headers={"Authorization": f"token {info['token']}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201


def test_cancel_outright_ends_the_whole_tree(local_session: dict[str, Any]) -> None:
    launcher = int(local_session["job_id"].split(".")[0])
    start_kernel(local_session)
    wait_for(lambda: any("ipykernel" in cmdline(p) for p in descendants(launcher)), 60, "the kernel to start")
    tree = [launcher, *descendants(launcher)]
    names = " ".join(cmdline(p) for p in tree)
    for part in ("launcher.py", "jupyterboot.py", "ipykernel", "dask_scheduler", "dask_worker"):
        assert part in names, f"{part} runs under the launcher"
    scheduler, transport = LocalProcess(), LocalTransport()
    assert scheduler.status(transport, local_session["job_id"]).state is JobState.RUNNING

    # Jupyter, its kernels and Dask lead their own sessions: a KILL to the launcher alone leaves them all.
    scheduler.cancel(transport, local_session["job_id"], graceful=False)
    assert [(p, cmdline(p)) for p in tree if alive(p)] == []
    assert scheduler.status(transport, local_session["job_id"]).state is JobState.GONE


@pytest.mark.parametrize(
    "job_id",
    ["-1", "0 1", "1;true", "", "--all", "\u0663", f"{os.getpid()}\n"],
    # ids without the pid: pytest-xdist's workers must collect the same test names
    ids=["negative", "two-words", "shell", "empty", "option", "arabic-digit", "own-pid-newline"],
)
def test_no_pid_of_another_shape_reaches_a_command(job_id: str) -> None:
    scheduler, transport = LocalProcess(), LocalTransport()
    assert scheduler.status(transport, job_id).state is JobState.GONE
    scheduler.cancel(transport, job_id, graceful=False)  # nothing to do, and nothing happens
    assert alive(os.getpid())


def test_a_job_script_not_yet_the_launcher_is_running(tmp_path: Path) -> None:
    """Before job.sh execs the launcher (it first exports the job's environment), ps shows `sh job.sh`:
    that is the job running, not gone (a start used to fail now and then in that moment)."""
    import subprocess

    from hpcjup.schedulers.local import LocalProcess
    from hpcjup.transport.local import LocalTransport

    (tmp_path / "job.sh").write_text("sleep 5\n")
    proc = subprocess.Popen(["sh", "job.sh"], cwd=tmp_path)
    try:
        assert LocalProcess().status(LocalTransport(), str(proc.pid)).state.value == "RUNNING"
    finally:
        proc.kill()
        proc.wait()


def start_local(env: dict[str, str], name: str, *extra: str) -> dict[str, Any]:
    result = run(["start", "--local", "--name", name, "-d", "--json", "--no-browser", *extra], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def session_dir(env: dict[str, str], name: str) -> Path:
    return Path(env["HOME"], ".hpcjup", "sessions", name)


@pytest.fixture
def env(laptop_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A laptop whose `--local` sessions are all stopped afterwards (their trees killed)."""
    if not Path(CLUSTER_PYTHON).exists():
        pytest.skip(f"{CLUSTER_PYTHON} missing (tests/cluster/install.sh creates it)")
    env = local_env(laptop_env)
    yield env
    sessions = Path(env["HOME"], ".hpcjup", "sessions")
    for directory in sessions.iterdir() if sessions.is_dir() else []:
        run(["stop", directory.name, "--local"], env)
    kill_outright(p for p in all_pids() if str(sessions) in cmdline(p) and alive(p))


def an_impostor(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A process whose command line is that of another session's launcher (as after a reboot, when the
    recorded pid went to whatever started next, e.g. the launcher of a session started since)."""
    other = tmp_path / "other-session"
    other.mkdir()
    (other / "launcher.py").write_text("import time\ntime.sleep(600)\n")
    return subprocess.Popen([sys.executable, str(other / "launcher.py"), "--session-dir", str(other)])


def test_a_pid_taken_by_another_process_is_not_the_session(env: dict[str, str], tmp_path: Path) -> None:
    """After a reboot the recorded pid can name another process, even another launcher: `ls` must not call the
    session running, and `stop` must not signal that process."""
    info = start_local(env, "rebooted", "--no-dask")
    launcher = int(info["job_id"].split(".")[0])
    kill_outright([launcher, *descendants(launcher)])  # the machine goes down: every process of the session ends
    wait_for(lambda: not alive(launcher), 10, "the launcher to end")
    impostor = an_impostor(tmp_path)
    try:
        # ... and the pid comes back as another process: the record now names that pid, and nothing else changed.
        record_path = session_dir(env, "rebooted") / "session.json"
        record = json.loads(record_path.read_text())
        record["job_id"] = str(impostor.pid) + record["job_id"][len(str(launcher)) :]
        record_path.write_text(json.dumps(record))
        listed = json.loads(run(["ls", "--local", "--json"], env).stdout)
        state = {s["session"]: s["state"] for s in listed["sessions"]}["rebooted"]
        assert state != "RUNNING", listed
        stopped = run(["stop", "rebooted", "--local"], env)
        assert stopped.returncode == 0, stopped.stderr
        assert impostor.poll() is None, "stop signalled a process that is not the session's"
    finally:
        impostor.kill()
        impostor.wait()


def test_the_job_id_names_the_launcher_and_its_start(env: dict[str, str]) -> None:
    """The id the submission printed is the one the job itself reports (connection.json), and it is the
    launcher's pid with its start time."""
    info = start_local(env, "named", "--no-dask")
    pid, start = info["job_id"].split(".")
    assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == start
    assert json.loads((session_dir(env, "named") / "connection.json").read_text())["job_id"] == info["job_id"]
    assert LocalProcess().status(LocalTransport(), info["job_id"]).state is JobState.RUNNING
    assert LocalProcess().status(LocalTransport(), f"{pid}.{int(start) + 1}").state is JobState.GONE


def test_the_start_time_without_proc_comes_from_ps(tmp_path: Path) -> None:
    """Where there is no /proc (macOS), `ps -o lstart` gives the start time: a word that stays the same."""
    from hpcjup.schedulers.local import _START_TIME

    script = _START_TIME.replace("/proc/", "/nonexistent/") + '\nhpcjup_start "$1"'
    proc = subprocess.Popen(["sleep", "30"])
    try:
        first = LocalTransport().run(["sh", "-c", script, "sh", str(proc.pid)]).stdout.strip()
        again = LocalTransport().run(["sh", "-c", script, "sh", str(proc.pid)]).stdout.strip()
        assert len(first) == 14 and first.isdigit() and first == again, first
    finally:
        proc.kill()
        proc.wait()
    assert LocalTransport().run(["sh", "-c", script, "sh", str(proc.pid)]).stdout.strip() == ""


@pytest.mark.parametrize("command", ["stop", "prune"])
def test_what_a_killed_launcher_left_is_ended(env: dict[str, str], command: str) -> None:
    """The launcher killed outright (kill -9, the OOM killer): its JupyterLab, kernel and Dask processes lead
    sessions of their own and live on. `stop` and `prune` end them, found by the session's directory."""
    name = f"orphans-{command}"
    info = start_local(env, name)
    start_kernel(info)
    launcher = int(info["job_id"].split(".")[0])
    wait_for(lambda: any("ipykernel" in cmdline(p) for p in descendants(launcher)), 60, "the kernel to start")
    left = descendants(launcher)
    names = " ".join(cmdline(p) for p in left)
    for part in ("jupyterboot.py", "ipykernel", "dask_scheduler", "dask_worker"):
        assert part in names, f"{part} runs under the launcher"
    bystander = subprocess.Popen(["sleep", "600"])  # the user's own process: never touched
    try:
        os.kill(launcher, signal.SIGKILL)
        wait_for(lambda: not alive(launcher), 10, "the launcher to end")
        result = run([command, *([name] if command == "stop" else []), "--local"], env)
        assert result.returncode == 0, result.stderr
        assert [(p, cmdline(p)) for p in left if alive(p)] == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
