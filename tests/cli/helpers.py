"""Running the real `hpcjup` CLI as a subprocess, as a user or a script would."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.cluster.minicluster import wait_until as wait_for  # noqa: F401  (re-exported for the tests)

CLUSTER_PYTHON = "/opt/hpcjup-cluster-env/bin/python"


def hpcjup_argv() -> list[str]:
    """The installed console script, or `python -m hpcjup` from this interpreter."""
    script = Path(sys.executable).parent / "hpcjup"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hpcjup"]


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one hpcjup command to completion."""
    return subprocess.run(hpcjup_argv() + args, env=env, capture_output=True, text=True, timeout=timeout)


class Foreground:
    """`hpcjup start/attach --json` holding its tunnel in the foreground."""

    def __init__(self, args: list[str], env: dict[str, str], timeout: float = 120) -> None:
        self.proc = subprocess.Popen(
            hpcjup_argv() + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.info = self._first_json(timeout)

    def _first_json(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"no JSON from hpcjup within {timeout} s (exit {self.proc.returncode}):\n{err}")
        return json.loads(line)

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        """Wait for the process to end by itself (e.g. after `stop`); (exit code, rest of stdout, stderr)."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def detach(self, timeout: float = 30) -> tuple[int, str, str]:
        """Send SIGINT, as Ctrl-C would, and wait."""
        self.proc.send_signal(2)
        return self.finish(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def http_get(url: str, token: str | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """(status, body) of a GET, with the token in the Authorization header if given."""
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:  # refused, reset, timed out: nothing answered
        return 0, b""


def port_listening(port: int) -> bool:
    """Whether anything accepts connections on 127.0.0.1:port."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def local_env(laptop_env: dict[str, str]) -> dict[str, str]:
    """The laptop environment with the cluster env's Python first on PATH (for --local)."""
    env = dict(laptop_env)
    env["PATH"] = f"{os.path.dirname(CLUSTER_PYTHON)}:{env.get('PATH', '')}"
    return env


def have_chromium() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def session_jobs(cluster, names: tuple[str, ...]) -> list[dict]:
    """Active jobs belonging to the named sessions (their own job and their worker jobs)."""
    return [
        j
        for j in cluster.active_jobs()
        if any(j["name"] == f"hpcjup-{n}" or j["name"].startswith(f"hpcjup+{n}+") for n in names)
    ]
