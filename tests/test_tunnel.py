"""The tunnel against a real local echo server (the SSH path is covered on the mini-cluster)."""

from __future__ import annotations

import hashlib
import os
import socket
import socketserver
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from hpcjup.errors import PortBusyError
from hpcjup.tunnel import Tunnel


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    # socketserver's default backlog is 5: with 64 connections at once on a loaded machine the
    # kernel refused some, the tunnel (rightly) closed those, and the test saw empty echoes.
    request_queue_size = 128


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address
    server.shutdown()
    server.server_close()


def _opener(addr: tuple[str, int]):
    return lambda: socket.create_connection(addr)


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_forwards_and_binds_loopback_only(echo: tuple[str, int]) -> None:
    with Tunnel(_opener(echo)) as tunnel:
        assert tunnel._listener.getsockname()[0] == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", tunnel.local_port)) as sock:
            sock.sendall(b"hello")
            assert sock.recv(5) == b"hello"


def test_64_concurrent_connections_and_bulk_data(echo: tuple[str, int]) -> None:
    payloads = [os.urandom(256 * 1024 + i) for i in range(64)]
    with Tunnel(_opener(echo)) as tunnel, ThreadPoolExecutor(64) as pool:
        echoed = list(pool.map(lambda p: _roundtrip(tunnel.local_port, p), payloads))
    assert [hashlib.sha256(e).digest() for e in echoed] == [hashlib.sha256(p).digest() for p in payloads]


def test_busy_port_is_a_clear_error(echo: tuple[str, int]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(PortBusyError, match=str(taken.getsockname()[1])) as info:
            Tunnel(_opener(echo), taken.getsockname()[1]).start()
    assert "--local-port" in (info.value.hint or "")


def test_failed_stream_closes_only_that_connection(echo: tuple[str, int]) -> None:
    def refuse() -> socket.socket:
        raise ConnectionRefusedError("node gone")

    with Tunnel(refuse) as tunnel:
        with socket.create_connection(("127.0.0.1", tunnel.local_port)) as sock:
            assert sock.recv(1) == b""  # closed by the tunnel
        tunnel.opener = _opener(echo)  # e.g. after a reconnect: same local port, new path
        assert _roundtrip(tunnel.local_port, b"again") == b"again"
    assert tunnel.failures == 1


def test_close_ends_open_connections_and_frees_the_port(echo: tuple[str, int]) -> None:
    tunnel = Tunnel(_opener(echo))
    port = tunnel.start()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    tunnel.close()
    sock.settimeout(5)
    assert sock.recv(1) == b""
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
