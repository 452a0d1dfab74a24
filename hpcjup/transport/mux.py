"""A client of an OpenSSH ControlMaster's control socket, speaking PROTOCOL.mux (version 4) directly.

Only what hpcjup needs: alive checks, terminate, stdio-forwards that hand the master the
descriptors to copy (no ssh process per forwarded connection), and local forwards from a Unix
socket here to one on the server. A refused request raises MuxRefused with the master's reason.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

_HELLO, _ALIVE, _TERMINATE, _OPEN_FWD, _STDIO_FWD = 0x1, 0x10000004, 0x10000005, 0x10000006, 0x10000008
_S_OK, _S_ALIVE, _S_SESSION_OPENED = 0x80000001, 0x80000005, 0x80000006
_FWD_LOCAL, _PORT_STREAMLOCAL = 1, 0xFFFFFFFE  # a local forward; the "port" of a Unix socket path (-2)
_VERSION = 4


class MuxRefused(Exception):
    """The master answered a request with a failure; the message is its reason."""


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _reason(body: bytes) -> str:
    """The string a failure reply carries."""
    if len(body) < 4:
        return "refused"
    return body[4 : 4 + struct.unpack(">I", body[:4])[0]].decode(errors="replace") or "refused"


class Mux:
    """One connection to a master's control socket; OSError (or struct.error) when the master is gone."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self._rid = 0
        try:
            self.sock.connect(str(path))
            self.sock.sendall(_string(struct.pack(">II", _HELLO, _VERSION)))
            kind, body = self._read()
            if kind != _HELLO or body[:4] != struct.pack(">I", _VERSION):
                raise ConnectionError(f"{path} does not speak mux protocol {_VERSION}")
        except OSError:
            self.sock.close()
            raise

    def _recv(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the ssh master closed its control connection")
            data += chunk
        return bytes(data)

    def _read(self) -> tuple[int, bytes]:
        body = self._recv(struct.unpack(">I", self._recv(4))[0])
        return struct.unpack(">I", body[:4])[0], body[4:]

    def request(self, kind: int, payload: bytes = b"", fds: tuple[int, ...] = ()) -> tuple[int, bytes]:
        """Send one request (and file descriptors, one message each as ssh does); (reply type, body after the id)."""
        self._rid += 1
        self.sock.sendall(_string(struct.pack(">II", kind, self._rid) + payload))
        for fd in fds:
            socket.send_fds(self.sock, [b"\0"], [fd])
        reply, body = self._read()
        return reply, body[4:]

    def alive(self) -> bool:
        """Whether the master answers."""
        return self.request(_ALIVE)[0] == _S_ALIVE

    def terminate(self) -> None:
        """Ask the master to exit now (it may go before it answers)."""
        self.request(_TERMINATE)

    def stdio_forward(self, host: str, port: int, read_fd: int, write_fd: int) -> None:
        """Have the master connect to host:port and copy read_fd to it and its data to write_fd.

        This connection then stays open for the forward's life: EOF on it means the forward ended,
        and closing it ends the forward.
        """
        payload = _string(b"") + _string(host.encode()) + struct.pack(">I", port)
        reply, body = self.request(_STDIO_FWD, payload, fds=(read_fd, write_fd))
        if reply != _S_SESSION_OPENED:
            raise MuxRefused(_reason(body))
        self.sock.settimeout(None)

    def forward_unix(self, local: Path, remote: str) -> None:
        """Have the master listen on the Unix socket `local` and forward each connection to `remote` on the server.

        Asking again for a forward the master already has is answered OK.
        """
        payload = struct.pack(">I", _FWD_LOCAL) + _string(str(local).encode()) + struct.pack(">I", _PORT_STREAMLOCAL)
        reply, body = self.request(_OPEN_FWD, payload + _string(remote.encode()) + struct.pack(">I", _PORT_STREAMLOCAL))
        if reply != _S_OK:
            raise MuxRefused(_reason(body))


class MuxStream:
    """A forwarded connection: the master reads `tx`'s peer and writes `rx`'s peer; two pairs keep half-closes."""

    def __init__(self, control: socket.socket, rx: socket.socket, tx: socket.socket) -> None:
        self._control, self._rx, self._tx = control, rx, tx

    def recv(self, n: int) -> bytes:
        return self._rx.recv(n)

    def sendall(self, data: bytes) -> None:
        self._tx.sendall(data)

    def fileno(self) -> int:
        return self._rx.fileno()

    def shutdown_write(self) -> None:
        self._tx.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        # shutdown first wakes a pump thread polling the socket; closing the control connection
        # makes the master close the channel even if the far side never does.
        for sock in (self._rx, self._tx, self._control):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
