"""`--detach`: hand the tunnel to a background process once the URL answers.

The command forks *before* it connects (no threads exist yet, so forking is safe).
The child does all the work with the terminal still attached, so a passphrase or 2FA
prompt is asked once, by the process that keeps the connection. When the URL answers
and the result is printed, the child starts its own session, moves its output to a
0600 log file in the state directory and tells the parent, which exits 0. If the child
fails first, the parent exits with the child's exit code (its error is already shown).
The child also takes the session's holder lock itself (in SessionHolder.serve): flock locks are
shared by forked processes, so a lock taken before the fork would be the parent's as well.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from hpcjup.errors import UsageError


class Detacher:
    """The fork, and the moment the child lets go of the terminal."""

    def __init__(self) -> None:
        self._ready_fd: int | None = None

    @classmethod
    def prepare(cls, local_port: int | None, detach: bool) -> Detacher:
        """Check the requested local port, then fork if detaching: the steps before connecting."""
        from hpcjup.cli.app import check_local_port

        check_local_port(local_port)
        detacher = cls()
        if detach:
            detacher.fork()
        return detacher

    def fork(self) -> None:
        """Fork; only the child returns. The parent waits for ready() or the child's exit."""
        if not hasattr(os, "fork"):
            raise UsageError(
                "--detach needs a POSIX system (fork).", hint="Run without --detach and keep the terminal open."
            )
        sys.stdout.flush()
        sys.stderr.flush()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            self._ready_fd = write_fd
            return
        os.close(write_fd)
        # Ctrl-C reaches the child as well (same process group); it cleans up and reports.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with os.fdopen(read_fd, "rb") as pipe:
            ready = pipe.read(2) == b"ok"
        if ready:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code > 0 else 1)

    def ready(self, log_path: Path) -> None:
        """In the child, once the result is printed: detach from the terminal and release the parent."""
        if self._ready_fd is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os.setsid()  # no more SIGINT/SIGHUP from the terminal
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.write(self._ready_fd, b"ok")
        os.close(self._ready_fd)
        self._ready_fd = None
