"""The delaying proxy adds the round trip it is asked for, keeps bytes in order, and stays on loopback."""

from __future__ import annotations

import hashlib
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.cluster.delay import DelayProxy


@contextmanager
def echo_server() -> Iterator[int]:
    """A loopback TCP server echoing every byte back on each connection; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def echo(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def recv_exact(s: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(min(65536, n - len(data)))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def median_round_trip(port: int, n: int = 15) -> float:
    """Median seconds for a 64-byte message to come back through 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendall(b"m" * 64)
            recv_exact(s, 64)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


@pytest.mark.parametrize("rtt_ms", [0, 50, 150])
def test_adds_the_requested_round_trip(rtt_ms: int) -> None:
    """An echo through the proxy takes the requested RTT more than a direct one, within 15 ms."""
    with echo_server() as port:
        direct = median_round_trip(port)
        with DelayProxy(port, rtt_ms) as proxy:
            delayed = median_round_trip(proxy.port, n=7 if rtt_ms >= 150 else 15)
    added_ms = (delayed - direct) * 1000
    assert rtt_ms - 2 <= added_ms <= rtt_ms + 15, f"asked {rtt_ms} ms, added {added_ms:.1f} ms"


def test_keeps_bytes_in_order_and_its_throughput() -> None:
    """1 MiB of random bytes sent while they come back: identical and in order, faster than chunk-by-chunk delays."""
    payload = os.urandom(1 << 20)
    got = bytearray()
    with echo_server() as port, DelayProxy(port, 50) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as s:

            def receive() -> None:
                while len(got) < len(payload) and (chunk := s.recv(65536)):
                    got.extend(chunk)

            reader = threading.Thread(target=receive)
            reader.start()
            t0 = time.perf_counter()
            for i in range(0, len(payload), 1000):  # small writes: many chunks, each delayed on its own
                s.sendall(payload[i : i + 1000])
            reader.join(timeout=30)
            elapsed = time.perf_counter() - t0
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest(), f"{len(got)} bytes back"
    # A reader that slept 25 ms per chunk would need seconds for ~1000 chunks; a queue needs one RTT plus copying.
    assert elapsed < 2.0, f"1 MiB took {elapsed:.2f} s through a 50 ms proxy"


def test_half_close_passes_through_and_it_stops_by_itself() -> None:
    """A client's shutdown(SHUT_WR) reaches the server (the echo ends); past its lifetime the proxy closes."""
    with echo_server() as port, DelayProxy(port, 10, lifetime=1.0) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"bye")
            s.shutdown(socket.SHUT_WR)
            assert recv_exact(s, 3) == b"bye" and s.recv(1) == b""
        deadline = time.monotonic() + 5
        while proxy._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not proxy._thread.is_alive(), "the proxy still runs past its lifetime"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()


def test_refuses_targets_off_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        DelayProxy(22, 50, target_host="192.0.2.1")


def test_sshd_answers_through_it(minicluster: Any) -> None:
    """The mini-cluster's sshd banner comes through the proxy, one RTT late."""
    with DelayProxy(minicluster.ssh_port, 100) as proxy:
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            banner = s.recv(256)
        elapsed = time.perf_counter() - t0
    assert banner.startswith(b"SSH-2.0-"), banner
    assert elapsed >= 0.049, f"banner after {elapsed * 1000:.0f} ms: not delayed"
