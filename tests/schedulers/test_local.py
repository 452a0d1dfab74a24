"""The local "scheduler" (`--local`): a real `hpcjup start --local`, then its cancel, on this machine."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.schedulers.base import JobState
from hpcjup.schedulers.local import LocalProcess
from hpcjup.transport.local import LocalTransport
from tests.cli.helpers import CLUSTER_PYTHON, local_env, run, wait_for


def alive(pid: int) -> bool:
    """Running (a zombie only waits to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def args_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def local_session(laptop_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A detached `hpcjup start --local` session with Dask; stopped (and its tree killed) afterwards."""
    if not Path(CLUSTER_PYTHON).exists():
        pytest.skip(f"{CLUSTER_PYTHON} missing (tests/cluster/install.sh creates it)")
    env = local_env(laptop_env)
    result = run(["start", "--local", "--name", "tree", "--workdir", str(tmp_path), "-d", "--json"], env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    pid = int(info["job_id"])
    tree = [pid, *descendants(pid)]
    try:
        yield {**info, "env": env}
    finally:
        run(["stop", "tree", "--local"], env)
        for p in [*tree, *descendants(pid)]:
            if alive(p):
                os.kill(p, signal.SIGKILL)


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
    launcher = int(local_session["job_id"])
    start_kernel(local_session)
    wait_for(lambda: any("ipykernel" in args_of(p) for p in descendants(launcher)), 60, "the kernel to start")
    tree = [launcher, *descendants(launcher)]
    names = " ".join(args_of(p) for p in tree)
    for part in ("launcher.py", "jupyterboot.py", "ipykernel", "dask_scheduler", "dask_worker"):
        assert part in names, f"{part} runs under the launcher"
    scheduler, transport = LocalProcess(), LocalTransport()
    assert scheduler.status(transport, str(launcher)).state is JobState.RUNNING

    # Jupyter, its kernels and Dask lead their own sessions: a KILL to the launcher alone leaves them all.
    scheduler.cancel(transport, str(launcher), graceful=False)
    assert [(p, args_of(p)) for p in tree if alive(p)] == []
    assert scheduler.status(transport, str(launcher)).state is JobState.GONE


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
