"""Fixtures for the transport tests: this process as a fresh laptop, an echo server on the "node", both backends."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.transport import Transport, connect
from tests.cluster.fixtures import make_laptop_env

BACKENDS = ("openssh", "paramiko")
NODE = "127.0.0.2"  # the mini-cluster's node1: what a tunnel reaches through the login node


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once per SSH backend."""
    return str(request.param)


@pytest.fixture
def laptop(minicluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process's environment becomes a fresh laptop's (HOME with ~/.ssh for the cluster, XDG dirs)."""
    env = make_laptop_env(minicluster, tmp_path / "laptop")
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Path(env["HOME"])


@pytest.fixture
def connect_to(laptop: Path) -> Iterator[Callable[..., Transport]]:
    """connect(), closing every transport afterwards and stopping the OpenSSH masters this laptop started."""
    from hpcjup.transport.openssh import OpenSSHTransport

    opened: list[Transport] = []

    def _connect(host: str = "minicluster", backend: str = "openssh", **kwargs: Any) -> Transport:
        transport = connect(host, backend=backend, **kwargs)
        opened.append(transport)
        return transport

    yield _connect
    for transport in opened:
        if isinstance(transport, OpenSSHTransport):
            transport.terminate()
        transport.close()


class EchoServer:
    """Echoes every connection back, half-close included: on the node's address, or on a listening socket given."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock or socket.create_server((NODE, 0), backlog=256)
        self.port = self.sock.getsockname()[1] if self.sock.family != socket.AF_UNIX else 0
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 20):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="session")
def echo_server() -> Iterator[EchoServer]:
    """One echo server for the whole run."""
    server = EchoServer()
    yield server
    server.sock.close()
