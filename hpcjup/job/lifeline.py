"""The launcher's children end with it, even when it dies outright (kill -9, the OOM killer).

Standard library only, shipped beside launcher.py. Without this, a launcher killed with SIGKILL
leaves JupyterLab (with a valid token), its kernels and Dask running wherever no batch system's
cgroup ends them (--local, --scheduler none, clusters that track jobs by process tree): they lead
their own sessions, so nothing signals them. Two layers, both SIGTERM first (Jupyter then shuts its
kernels down, Dask its workers), SIGKILL if that has not ended the process after GRACE seconds:
- Linux: PR_SET_PDEATHSIG (`preexec`, in each child between fork and exec): the kernel sends SIGTERM
  the moment the launcher dies.
- Everywhere (macOS has no parent-death signal): a pipe. The launcher holds its only write end; each
  child gets the read end (HPCJUP_LAUNCHER_FD) and a thread there (`arm`, run by jupyterboot.py and by
  `python lifeline.py -m MODULE ...` for Dask) waits on it: end of file means the launcher is gone.
"""

from __future__ import annotations

import os
import runpy
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable

ENV_FD = "HPCJUP_LAUNCHER_FD"
GRACE = 20.0  # seconds between SIGTERM and SIGKILL (the launcher's own --stop-grace default)
_PR_SET_PDEATHSIG = 1


def preexec(launcher: int) -> Callable[[], None]:
    """A Popen preexec_fn: on Linux, SIGTERM this child when the launcher (pid `launcher`) dies."""

    def set_death_signal() -> None:
        if not sys.platform.startswith("linux"):
            return
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # no prctl: the pipe still watches
            return
        if os.getppid() != launcher:  # it died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


def arm(grace: float = GRACE) -> None:
    """In a child of the launcher: end this process (SIGTERM, then SIGKILL after `grace` s) once the launcher's
    pipe reaches end of file. Nothing without HPCJUP_LAUNCHER_FD; the variable is removed (grandchildren,
    such as kernels, do not inherit the descriptor)."""
    value = os.environ.pop(ENV_FD, "")
    if not value.isdigit():
        return
    fd = int(value)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):  # not the launcher's pipe (a variable that travelled too far)
            return
    except OSError:
        return

    def watch() -> None:
        try:
            while os.read(fd, 512):  # the launcher never writes: only end of file (or an error) comes
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="hpcjup-lifeline", daemon=True).start()


def main(argv: list[str]) -> None:
    """`python lifeline.py -m MODULE [ARGS...]`: arm, then run MODULE as `python -m MODULE ARGS...` would."""
    if len(argv) < 2 or argv[0] != "-m":
        sys.exit("usage: lifeline.py -m MODULE [ARGS...]")
    arm()
    sys.argv = [argv[1], *argv[2:]]
    if not getattr(sys.flags, "safe_path", False):  # as `python -m` has it (see jupyterboot.py)
        sys.path[0] = os.getcwd()
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
