"""One exception root and the documented exit codes.

Every user-facing failure is an `HpcjupError` subclass carrying a message, a hint
that says what to do, and the exit code the CLI returns. Only the CLI's entry
point turns these into output; nothing below it calls `sys.exit`.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every hpcjup command (documented in docs/commands.md, "Exit codes")."""

    OK = 0
    ERROR = 1  # an unexpected failure (a bug, or something we do not classify)
    USAGE = 2  # bad flag, bad value, bad configuration
    CONNECT = 3  # host unreachable, DNS, refused, timed out
    AUTH = 4  # authentication failed, host key unknown or changed
    SUBMIT = 5  # the scheduler refused the job (partition, account, limits)
    JOB_FAILED = 6  # the job ended before Jupyter answered
    TIMEOUT = 7  # a wait ran past its deadline (job pending too long, Jupyter too slow)
    NOT_FOUND = 8  # no such session
    PORT_BUSY = 9  # the requested local port is in use
    REMOTE = 10  # a command on the cluster failed unexpectedly
    ENV_BUILD = 11  # an environment did not build (a spec that does not resolve, postBuild failed)
    INTERRUPTED = 130  # Ctrl-C before anything was submitted


class HpcjupError(Exception):
    """Root of every error a user can see; carries a hint and an exit code."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details  # e.g. the tail of a job log, shown below the message

    def to_dict(self) -> dict[str, object]:
        """The JSON form of this error, for `--json` output."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "details": self.details,
            "exit_code": int(self.exit_code),
        }


class UsageError(HpcjupError):
    """A bad option value or configuration."""

    exit_code = ExitCode.USAGE


class ConnectError(HpcjupError):
    """The SSH host could not be reached."""

    exit_code = ExitCode.CONNECT


class AuthError(HpcjupError):
    """Authentication failed, or the host key is unknown or changed."""

    exit_code = ExitCode.AUTH


class SubmitError(HpcjupError):
    """The scheduler refused the job."""

    exit_code = ExitCode.SUBMIT


class JobFailedError(HpcjupError):
    """The job ended before Jupyter was reachable."""

    exit_code = ExitCode.JOB_FAILED


class JobCannotStart(HpcjupError):
    """The job pends for a reason that waiting will not clear (too many nodes for the partition, ...)."""

    exit_code = ExitCode.SUBMIT


class WaitTimeout(HpcjupError):
    """A wait ran past its deadline."""

    exit_code = ExitCode.TIMEOUT


class SchedulerUnavailable(HpcjupError):
    """The scheduler did not answer, so what a command would change cannot be confirmed: nothing was changed."""

    exit_code = ExitCode.REMOTE


class UnsafeSessionRoot(HpcjupError):
    """The cluster's ~/.hpcjup (or its sessions directory) belongs to someone else, or others may write to it."""

    exit_code = ExitCode.REMOTE


class SessionNotFound(HpcjupError):
    """No session by that name."""

    exit_code = ExitCode.NOT_FOUND


class PortBusyError(HpcjupError):
    """The requested local port is already in use."""

    exit_code = ExitCode.PORT_BUSY


class RemoteCommandError(HpcjupError):
    """A command on the cluster exited non-zero; carries its argv, exit code and output."""

    exit_code = ExitCode.REMOTE

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str, *, hint: str | None = None) -> None:
        import shlex

        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        first = (stderr.strip() or stdout.strip() or "no output").splitlines()[0]
        super().__init__(f"`{shlex.join(argv)}` failed with exit code {returncode}: {first}", hint=hint)


class DamagedDocument(HpcjupError):
    """A session's file on the cluster is not what hpcjup wrote (truncated, hand-edited, hostile)."""

    exit_code = ExitCode.REMOTE

    def __init__(self, what: str, problem: str) -> None:
        self.what, self.problem = what, problem
        super().__init__(
            f"{what} {problem}.",
            hint="The session is damaged: `hpcjup ls` shows it, and `hpcjup prune` removes it once its job has ended.",
        )


class Interrupted(HpcjupError):
    """The user interrupted a command (Ctrl-C, SIGTERM) before it finished."""

    exit_code = ExitCode.INTERRUPTED
