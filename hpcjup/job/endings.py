"""How a session ends: the launcher's reasons, the signals that stop it, its exit codes (standard library only).

Shipped beside launcher.py. The reasons and their exit codes are contract.py's.
"""

from __future__ import annotations

import os
import signal

from contract import (  # beside this file (the launcher puts its directory on sys.path)
    ENV_TIME_LIMIT,
    ENV_WARN_SECONDS,
    ENV_WARN_SIGNAL,
    EXIT_CODES,
    REASON_STOPPED,
    REASON_WALLTIME,
)

STOP_SIGNALS = {
    signal.SIGTERM: REASON_STOPPED,
    signal.SIGINT: REASON_STOPPED,
    signal.SIGHUP: REASON_STOPPED,
    signal.SIGUSR1: REASON_WALLTIME,  # sent by the scheduler before the limit
}
WAKE_SIGNALS = (*STOP_SIGNALS, signal.SIGCHLD)  # SIGCHLD: Jupyter exited


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
    return Ended(REASON_WALLTIME, f"the job's time limit is near ({limit} s granted; stopping {warn} s before it)")
