"""The Jupyter a job runs: whether this Python can serve, the culling options, its processes (standard library only).

Shipped beside launcher.py.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable

from contract import MIN_SERVER, REASON_JUPYTER_TOO_OLD, REASON_NO_JUPYTER
from endings import Ended

UPGRADE = "pip install -U 'jupyter_server>=2.20' jupyterlab"


def check_environment() -> tuple[str, str]:
    """(jupyter_server version, jupyterlab version) of this Python, or Ended if it cannot serve."""
    python = sys.executable
    fix = f"Install it there ({python} -m pip install jupyterlab 'jupyter_server>=2.20') or choose a Python that has it (hpcjup start --python)."
    try:
        import jupyter_server
    except ImportError as exc:
        raise Ended(REASON_NO_JUPYTER, f"No JupyterLab in {python} ({exc}). {fix}") from None
    version = jupyter_server.__version__
    found = re.match(r"(\d+)\.(\d+)", version)
    if found and (int(found.group(1)), int(found.group(2))) < MIN_SERVER:
        old_python = (
            f" Recent jupyter_server releases need Python >= 3.10; this is {sys.version.split()[0]}."
            if sys.version_info < (3, 10)
            else ""
        )
        raise Ended(
            REASON_JUPYTER_TOO_OLD,
            f"jupyter_server {version} in {python} is too old: hpcjup needs >= 2.20 "
            f"(which fixed a token-stealing XSS). Upgrade: {python} -m {UPGRADE}.{old_python}",
        )
    # find_spec, not import: importing jupyterlab costs ~1.5 s and 65 MB that this process never needs.
    if importlib.util.find_spec("jupyterlab") is None:
        raise Ended(REASON_NO_JUPYTER, f"{python} has jupyter_server {version} but no JupyterLab. {fix}")
    try:
        return version, importlib.metadata.version("jupyterlab")
    except importlib.metadata.PackageNotFoundError:  # an unusual install without metadata still runs
        return version, "unknown"


def culling_args(idle: int, every: int) -> list[str]:
    """Jupyter's options that cull kernels and terminals idle for `idle` seconds, checked every `every`."""
    return [
        f"--MappingKernelManager.cull_idle_timeout={idle}",
        f"--MappingKernelManager.cull_interval={every}",
        # An open notebook tab holds a websocket to its kernel; without this it is never culled.
        "--MappingKernelManager.cull_connected=True",
        f"--TerminalManager.cull_inactive_timeout={idle}",
        f"--TerminalManager.cull_interval={every}",
    ]


def descendants(pid: int) -> list[int]:
    """Processes below `pid` (Linux /proc; empty elsewhere). Kernels lead their own sessions."""
    children: dict[int, list[int]] = {}
    for entry in [e for e in os.listdir("/proc") if e.isdigit()] if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def stop_group(proc: subprocess.Popen, grace: float, log: Callable[[str], None]) -> None:
    """SIGTERM the process group `proc` leads, SIGKILL it and its descendants after `grace` s; sweep the group."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"Jupyter did not stop within {grace} s (--stop-grace); killing it and its kernels")
            for pid in descendants(proc.pid):  # kernels lead their own sessions, outside Jupyter's group
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    _signal_group(
        proc.pid, signal.SIGKILL
    )  # whatever is left in its group, e.g. jupyter-lsp's short-lived `npm prefix`


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(OSError):  # nobody left
        os.killpg(pgid, sig)
