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


# A tunnel to an echo server in a process whose open-file limit is 40 (soft and hard: it cannot be raised).
LOW_LIMIT_TUNNEL = """
import resource, socket, socketserver, sys, threading
from hpcjup.tunnel import Tunnel

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)

resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
# More forwards allowed than descriptors exist (the default bound would avoid the shortage this test is about).
tunnel = Tunnel(lambda: socket.create_connection(server.server_address), max_forwards=1000)
print(tunnel.start(), flush=True)
sys.stdin.read()  # until the test closes it
print(tunnel.shortages, repr(tunnel.error), flush=True)
"""


def test_running_out_of_file_descriptors_does_not_end_the_tunnel() -> None:
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", LOW_LIMIT_TUNNEL], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        crowd = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(60)]  # 3 descriptors each
        for sock in crowd:
            sock.sendall(b"x")
        for sock in crowd:  # some are echoed, some closed (no descriptor to forward them), the rest wait
            try:
                sock.recv(1)
            except TimeoutError:
                break
            except ConnectionResetError:  # closed for want of a descriptor while our byte was unread: a reset
                continue
        for sock in crowd:
            sock.close()
        # Descriptors are free again: a new connection is served (the accept thread is alive).
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"after")
            assert sock.recv(5) == b"after"
        child.stdin.close()
        shortages, error = child.stdout.readline().split(" ", 1)
        assert int(shortages) > 0 and error.strip() == "None"
    finally:
        child.kill()
        child.wait()


def test_at_most_max_forwards_at_once_and_the_rest_wait(echo: tuple[str, int]) -> None:
    with Tunnel(_opener(echo), max_forwards=4) as tunnel:
        clients = [socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=0.5) for _ in range(10)]
        for sock in clients:
            sock.sendall(b"x")

        def echoed(sock: socket.socket) -> bool:
            try:
                return sock.recv(1) == b"x"
            except TimeoutError:
                return False

        first = [echoed(sock) for sock in clients]
        assert first.count(True) == 4 and tunnel.connections == 4
        for sock, served in zip(clients, first, strict=True):
            if served:
                sock.close()
        waiting = [sock for sock, served in zip(clients, first, strict=True) if not served]
        for sock in waiting:
            sock.settimeout(5)
        assert all(echoed(sock) for sock in waiting[:4])  # the queued ones are served as slots free up
        for sock in waiting:
            sock.close()


def test_the_default_bound_leaves_descriptors_for_everything_else() -> None:
    import subprocess
    import sys

    script = (
        "import resource, socket; from hpcjup.tunnel import Tunnel;"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); t = Tunnel(socket.socket); t.start();"
        "print(t.max_forwards); t.close()"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["48"]  # macOS's 256 when it cannot be raised: (256 - 64) / 4


def test_raise_descriptor_limit_goes_up_to_the_hard_limit_only() -> None:
    import subprocess
    import sys

    script = (
        "import resource; from hpcjup.tunnel import raise_descriptor_limit as r;"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1000)); print(r(), r(100), r(5000))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1000", "1000", "1000"]  # raised to the hard limit, never lowered
