"""The transport interface: one authenticated connection to the login node.

Every remote command goes through `Transport.run`, which takes an argument list,
quotes it with `shlex.join`, logs it at debug level with its timing, and raises
`RemoteCommandError` (command, exit code, stdout, stderr) when asked to check.
Backends implement the primitives: executing a command string, file access,
and opening a byte stream to a host:port reachable from the login node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hpcjup.errors import DamagedDocument, RemoteCommandError
from hpcjup.transport.batch import Entry, read_script, unpack

log = logging.getLogger("hpcjup.remote")

#: read_file reads at most this much: hpcjup's files on the cluster are a few KB, and a file that
#: grew without bound (or a hostile one) must not fill the laptop's memory.
FILE_LIMIT = 1024 * 1024

# Asks the user a question (a passphrase, a 2FA code); `echo` says whether the answer may be shown.
Prompter = Callable[[str, bool], str]


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Stream(Protocol):
    """A bidirectional byte stream: a socket, or an SSH channel."""

    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


def bounded(path: str, data: bytes) -> bytes:
    """`data` read from `path`, or DamagedDocument if it is larger than FILE_LIMIT."""
    if len(data) > FILE_LIMIT:
        raise DamagedDocument(
            path, f"is larger than {FILE_LIMIT // 1024 // 1024} MiB, far more than any file hpcjup writes"
        )
    return data


def one_line(command: str) -> str:
    """A command as one log line (so `-v` shows one line per remote command), cut at 300 characters."""
    flat = command.replace("\n", "\\n")
    return flat if len(flat) < 300 else flat[:300] + "…"


class RemoteProcess(Protocol):
    """A remote command that keeps running: read its stdout as it comes; close_input() ends its stdin."""

    def fileno(self) -> int: ...
    def read_some(self) -> bytes: ...  # b"" once its stdout is closed
    def close_input(self) -> None: ...
    def close(self) -> None: ...


class PipeProcess:
    """A local child process (ssh, or sh for --local) as a RemoteProcess."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def read_some(self) -> bytes:
        return os.read(self.fileno(), 65536)

    def close_input(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # the remote command sees EOF and ends

    def close(self) -> None:
        self.close_input()
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Transport(ABC):
    """One connection to the login node (or to this machine, for `--local`)."""

    #: How the host is shown to the user, e.g. "juwels" or "local".
    name: str
    #: The destination exactly as the user gave it (`alice@host:2222`, an alias, "local"): sessions
    #: record it, and reconnects, hints and the laptop's cache use it.
    destination: str = ""
    _home: str | None = None  # learned once per connection

    @property
    def host(self) -> str:
        """The host as hpcjup names it to the user and keys it in the laptop's cache: the destination as given,
        else (a transport made without `connect`, e.g. in tests) the connection's own name."""
        return self.destination or self.name

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
        returncode, out, err = self.run_raw(argv, input=input, timeout=timeout)
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if check and returncode != 0:
            raise RemoteCommandError(list(argv), returncode, stdout, stderr)
        return CommandResult(argv, returncode, stdout, stderr)

    def run_raw(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 120.0
    ) -> tuple[int, bytes, bytes]:
        """Run one command; (exit code, stdout, stderr) as bytes. `run` is this plus decoding and checking."""
        command = shlex.join(str(a) for a in argv)
        started = time.monotonic()
        returncode, stdout, stderr = self._exec_raw(command, input, timeout)
        log.debug(
            "%s -> %d (%.0f ms) on %s", one_line(command), returncode, (time.monotonic() - started) * 1000, self.name
        )
        return returncode, stdout, stderr

    def read_tree(self, directory: str, names: Sequence[str], depth: int = 2) -> list[Entry]:
        """The directories up to `depth` below `directory` (relative to home, or absolute) and the files
        among them called `names`, in one remote command (a tar stream) that also tells the home
        directory; regular files of at most READ_LIMIT bytes only. Empty if `directory` is missing."""
        rc, out, err = self.run_raw(["sh", "-c", read_script(depth, names), "sh", directory], timeout=300)
        home, _, archive = out.partition(b"\n")
        if rc != 0 or not home.startswith(b"/"):
            raise RemoteCommandError(["read", directory], rc, "", err.decode(errors="replace") or "no home directory")
        self._home = home.decode(errors="surrogateescape")
        return unpack(archive)

    def _exec_raw(self, command: str, input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
        """Run a shell command string; return (exit code, stdout, stderr) as bytes (backends override this)."""
        rc, out, err = self._exec(command, input, timeout)
        return rc, out.encode(), err.encode()

    def _exec(self, command: str, input: bytes | None, timeout: float) -> tuple[int, str, str]:
        """The text form of _exec_raw, for simple test doubles that only produce text."""
        raise NotImplementedError

    def start_process(self, argv: Sequence[str]) -> RemoteProcess:
        """Start a long-lived remote command whose stdout is read as it comes (a watcher); logged like `run`."""
        command = shlex.join(str(a) for a in argv)
        log.debug("%s -> started on %s", one_line(command), self.name)
        return self._start(command)

    def _start(self, command: str) -> RemoteProcess:
        raise NotImplementedError(f"{type(self).__name__} cannot run long-lived commands")

    @abstractmethod
    def home(self) -> str:
        """The remote user's home directory, absolute."""

    @abstractmethod
    def read_file(self, path: str) -> bytes:
        """The content of a remote file; FileNotFoundError if it is missing, DamagedDocument if it is
        larger than FILE_LIMIT (backends read at most FILE_LIMIT + 1 bytes and call `bounded`)."""

    @abstractmethod
    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write a remote file atomically (temporary name, then rename) with `mode`."""

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
