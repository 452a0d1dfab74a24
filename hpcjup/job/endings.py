"""How a session ends: the launcher's reasons, the signals that stop it, its exit codes (standard library only).

Shipped beside launcher.py. The reasons are state.json's words (hpcjup.job.REASON_*).
"""

from __future__ import annotations

import os
import signal

# The job's environment (hpcjup.job.ENV_*; a test checks the names).
ENV_TIME_LIMIT = "HPCJUP_TIME_LIMIT"
ENV_WARN_SIGNAL = "HPCJUP_WARN_SIGNAL"
ENV_WARN_SECONDS = "HPCJUP_WARN_SECONDS"

STOP_SIGNALS = {
    signal.SIGTERM: "stopped",
    signal.SIGINT: "stopped",
    signal.SIGHUP: "stopped",
    signal.SIGUSR1: "walltime",  # sent by the scheduler before the limit
}
WAKE_SIGNALS = (*STOP_SIGNALS, signal.SIGCHLD)  # SIGCHLD: Jupyter exited
EXIT_CODES = {
    "stopped": 0,
    "walltime": 0,
    "idle": 0,
    "shutdown": 0,
    "no-jupyter": 2,
    "jupyter-too-old": 2,
    "auth-config": 2,
    "no-dask": 2,
    "no-ipykernel": 2,  # a --kernel Python that cannot run a kernel (kernels.py)
    "ready-timeout": 3,
    "dask-failed": 4,
}


class Ended(Exception):
    """The session ends, for `reason` (a state.json reason) explained by `message`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def exit_code(reason: str, returncode: int | None) -> int:
    """The launcher's exit code for `reason`; jupyter-exited passes on Jupyter's (`returncode`, None if it never ran)."""
    code = EXIT_CODES.get(reason)
    if code is not None:
        return code
    if returncode is None:
        return 1
    return 128 - returncode if returncode < 0 else returncode or 1


def signalled(signum: int) -> Ended | None:
    """The end a signal number read from the wakeup pipe asks for, or None (SIGCHLD and the like)."""
    if signum not in STOP_SIGNALS:
        return None
    sig = signal.Signals(signum)
    what = "the job's time limit is near" if sig == signal.SIGUSR1 else "stopped on request"
    return Ended(STOP_SIGNALS[sig], f"{what} ({sig.name})")


def env_seconds(name: str) -> int:
    """A whole number of seconds from the job's environment; 0 when unset or not a number."""
    try:
        return max(0, int(os.environ.get(name, "")))
    except ValueError:
        return 0


def walltime_deadline(started: float) -> float | None:
    """When the launcher's own timer ends the session (monotonic clock): WARN_SECONDS before TIME_LIMIT,
    counted from `started`; None when the scheduler warns with SIGUSR1 itself, or no limit is known."""
    limit = env_seconds(ENV_TIME_LIMIT)
    if os.environ.get(ENV_WARN_SIGNAL) == "1" or limit <= 0:
        return None
    return started + max(0, limit - env_seconds(ENV_WARN_SECONDS))


def walltime_end() -> Ended:
    """The end the own timer brings."""
    limit, warn = env_seconds(ENV_TIME_LIMIT), env_seconds(ENV_WARN_SECONDS)
    return Ended("walltime", f"the job's time limit is near ({limit} s granted; stopping {warn} s before it)")
