"""The local "transport": this machine, no SSH (for `hpcjup start --local`)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from hpcjup.errors import WaitTimeout
from hpcjup.files import write_private
from hpcjup.transport.base import FILE_LIMIT, PipeProcess, RemoteProcess, Stream, Transport, bounded


class LocalTransport(Transport):
    """Runs commands with `sh -c` and touches files directly on this machine."""

    name = "local"

    def _exec_raw(self, command: str, input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
        try:
            proc = subprocess.run(["sh", "-c", command], input=input, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise WaitTimeout(f"Local command timed out after {timeout:.0f} s: {command}") from exc
        return proc.returncode, proc.stdout, proc.stderr

    def _start(self, command: str) -> RemoteProcess:
        stdio = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
        return PipeProcess(subprocess.Popen(["sh", "-c", command], **stdio, start_new_session=True))  # type: ignore[call-overload]

    def home(self) -> str:
        return str(Path.home())

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as fh:
            return bounded(path, fh.read(FILE_LIMIT + 1))

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        write_private(path, data, mode)

    def mkdir(self, path: str, mode: int = 0o700) -> None:
        os.mkdir(path, mode)
        os.chmod(path, mode)  # mkdir's mode is filtered by the umask

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def open_stream(self, host: str, port: int) -> Stream:
        sock = socket.create_connection((host, port), timeout=10)
        sock.settimeout(None)  # the timeout above is for connecting only; a forward may idle for hours
        return sock

    def open_unix_stream(self, path: str) -> Stream:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock

    def hop(self, node: str) -> Transport:
        return self  # --local: the "node" is this machine
