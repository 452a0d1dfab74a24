"""A failure after Jupyter answered but before the URL reached the user cancels the job: nobody can have used it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import hpcjup_argv, local_env
from tests.cluster.procs import free_port

pytestmark = pytest.mark.one_backend  # --local: no SSH at all


def alive(pid: str) -> bool:
    """Whether the process runs (a zombie waiting for this sandbox's init to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_port_taken_before_the_url_cancels_the_session(laptop_env: dict[str, str], laptop_home: Path) -> None:
    """The local port is free when `start` checks it, taken by someone else before the tunnel binds it."""
    port = free_port()
    argv = [
        *hpcjup_argv(),
        "start",
        "--local",
        "--no-dask",
        "--idle-timeout",
        "0",
        "--no-browser",
        "--local-port",
        str(port),
        "-n",
        "unseen",
        "--json",
    ]
    proc = subprocess.Popen(argv, env=local_env(laptop_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    blocker = socket.socket()
    try:
        line = proc.stderr.readline()
        deadline = time.monotonic() + 60
        while "Submitted job" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "Submitted job" in line, line
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))  # Jupyter needs seconds to start: this comes first
        blocker.listen(1)
        out, err = proc.communicate(timeout=120)
    finally:
        blocker.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.PORT_BUSY, err
    assert "url" not in out and json.loads(out)["error"]["exit_code"] == ExitCode.PORT_BUSY
    assert "Cancelled job" in err and "nothing was lost" in err
    job = line.split("Submitted job ")[1].split()[0]
    assert not alive(job)  # the local "job" is the launcher's pid: gone
    assert not (laptop_home / ".hpcjup" / "sessions" / "unseen").exists()
