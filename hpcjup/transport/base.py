"""The transport interface: one authenticated connection to the login node.

Every remote command goes through `Transport.run`, which takes an argument list,
quotes it with `shlex.join`, logs it at debug level with its timing, and raises
`RemoteCommandError` (command, exit code, stdout, stderr) when asked to check.
Backends implement the primitives: executing a command string, file access,
and opening a byte stream to a host:port reachable from the login node.
"""

from __future__ import annotations

import logging
import shlex
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hpcjup.errors import RemoteCommandError

log = logging.getLogger("hpcjup.remote")

# Asks the user a question (a passphrase, a 2FA code); `echo` says whether the answer may be shown.
Prompter = Callable[[str, bool], str]


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class FileInfo:
    """Name, size and modification time of a remote file."""

    name: str
    size: int
    mtime: float


class Stream(Protocol):
    """A bidirectional byte stream: a socket, or an SSH channel."""

    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class Transport(ABC):
    """One connection to the login node (or to this machine, for `--local`)."""

    #: How the host is shown to the user and keyed in the local state, e.g. "juwels" or "local".
    name: str

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float = 120.0,
        check: bool = True,
    ) -> CommandResult:
        """Run one command on the remote side; the single call point for remote commands."""
        argv = tuple(str(a) for a in argv)
        command = shlex.join(argv)
        started = time.monotonic()
        returncode, stdout, stderr = self._exec(command, input, timeout)
        log.debug("%s -> %d (%.0f ms) on %s", command, returncode, (time.monotonic() - started) * 1000, self.name)
        if check and returncode != 0:
            raise RemoteCommandError(list(argv), returncode, stdout, stderr)
        return CommandResult(argv, returncode, stdout, stderr)

    @abstractmethod
    def _exec(self, command: str, input: bytes | None, timeout: float) -> tuple[int, str, str]:
        """Run a shell command string; return (exit code, stdout, stderr)."""

    @abstractmethod
    def home(self) -> str:
        """The remote user's home directory, absolute."""

    @abstractmethod
    def read_file(self, path: str) -> bytes:
        """The content of a remote file; FileNotFoundError if it is missing."""

    @abstractmethod
    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write a remote file atomically (temporary name, then rename) with `mode`."""

    @abstractmethod
    def scan(self, directory: str) -> dict[str, FileInfo]:
        """Name -> FileInfo of the entries of a remote directory; empty if it does not exist."""

    @abstractmethod
    def mkdir(self, path: str, mode: int = 0o700) -> None:
        """Create one directory with `mode`; FileExistsError if it exists."""

    @abstractmethod
    def remove(self, path: str) -> None:
        """Remove a remote file if it exists."""

    @abstractmethod
    def open_stream(self, host: str, port: int) -> Stream:
        """A byte stream to host:port as reached from the login node (a port forward)."""

    def forward_socket(self, client: socket.socket, host: str, port: int) -> socket.socket | None:
        """Take a connected local socket over and forward it to host:port from the login node.

        Returns a control socket that reads EOF when the forward ends. The caller keeps its copy
        of `client` open until then: shutting that copy down ends the forward on both sides, and
        closing it after the EOF lets the browser see the end. None: this backend cannot (use open_stream).
        """
        return None

    @abstractmethod
    def open_unix_stream(self, path: str) -> Stream:
        """A byte stream to a Unix socket on the remote host (an OpenSSH streamlocal forward)."""

    @abstractmethod
    def hop(self, node: str) -> Transport:
        """A connection to compute node `node` made through this one (this host is its last jump).

        It logs in as the same user with the same keys (a cluster has one account on all its
        nodes); the node's own ~/.ssh/config block applies for the rest. Closing it leaves this one open.
        """

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        """Create `path` and missing parents, each with `mode`."""
        parts = path.rstrip("/").split("/")
        for i in range(2, len(parts) + 1):
            try:
                self.mkdir("/".join(parts[:i]), mode)
            except FileExistsError:
                pass

    def rmtree(self, path: str) -> None:
        """Remove a remote directory tree."""
        self.run(["rm", "-rf", "--", path])

    @property
    def alive(self) -> bool:
        """Whether the connection is still up (a local transport always is)."""
        return True

    def close(self) -> None:  # noqa: B027  (a no-op is right for the local transport; SSH backends override it)
        """Close the connection."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
