"""A delaying TCP proxy on loopback: a round trip of RTT in front of the mini-cluster's sshd (no netem here).

    with DelayProxy(cluster.ssh_port, rtt_ms=50) as proxy:
        ...  # connect to 127.0.0.1:proxy.port

Every chunk read from one side is sent on to the other side RTT/2 after it arrived, in order: a
reader thread per direction stamps each chunk with its due time and queues it, a writer thread
sends it when due. The reader never sleeps, so a transfer keeps its throughput (the delay adds
latency, not a rate limit) and a later chunk can never overtake an earlier one. Bounded: listens
on 127.0.0.1 only and forwards only to a loopback address, at most `max_connections` at once,
at most `max_queued` chunks waiting per direction (the reader then blocks, which is TCP
backpressure), and it closes everything by itself after `lifetime` seconds.
"""

from __future__ import annotations

import ipaddress
import queue
import socket
import threading
import time
from types import TracebackType

__all__ = ["DelayProxy"]

CHUNK = 65536
_EOF = b""


class _Pipe:
    """One direction of one connection: read from `src`, write to `dst` `delay` seconds later."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay: float, max_queued: int, stop: threading.Event):
        self.src, self.dst, self.delay, self.stop = src, dst, delay, stop
        self.chunks: queue.Queue[tuple[float, bytes]] = queue.Queue(maxsize=max_queued)
        self.threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._write, daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _put(self, item: tuple[float, bytes]) -> bool:
        """Queue a chunk, waiting while the queue is full; False once the proxy stops."""
        while not self.stop.is_set():
            try:
                self.chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        """Stamp every chunk with its due time as it arrives; an empty chunk marks the end."""
        while True:
            try:
                data = self.src.recv(CHUNK)
            except OSError:
                data = _EOF
            if not self._put((time.monotonic() + self.delay, data)) or not data:
                return

    def _write(self) -> None:
        """Send each chunk when due (due times only grow, so order is kept); pass the end on as a half-close."""
        while not self.stop.is_set():
            try:
                due, data = self.chunks.get(timeout=0.2)
            except queue.Empty:
                continue
            wait = due - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                return
            try:
                if not data:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                self.dst.sendall(data)
            except OSError:
                self.stop.set()  # the far side is gone: end this connection (both directions)
                return


class _Connection:
    """A client connection and its upstream one, with a pipe each way; closed when both pipes end."""

    def __init__(self, client: socket.socket, upstream: socket.socket, delay: float, max_queued: int):
        self.stop = threading.Event()
        self.sockets = (client, upstream)
        for s in self.sockets:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # Nagle would add its own delay on top
        self.pipes = (
            _Pipe(client, upstream, delay, max_queued, self.stop),
            _Pipe(upstream, client, delay, max_queued, self.stop),
        )

    def start(self) -> None:
        for pipe in self.pipes:
            pipe.start()
        threading.Thread(target=self._reap, daemon=True).start()

    def done(self) -> bool:
        return not any(t.is_alive() for pipe in self.pipes for t in pipe.threads)

    def _reap(self) -> None:
        """Close both sockets once both directions have ended (or the connection was stopped)."""
        while not self.done():
            writers = [pipe.threads[1] for pipe in self.pipes]
            if self.stop.is_set() or not any(w.is_alive() for w in writers):
                self.close()
            time.sleep(0.05)
        self.close()

    def close(self) -> None:
        self.stop.set()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class DelayProxy:
    """Listen on 127.0.0.1:port (a free one) and forward to target_host:target_port with a round trip of rtt_ms added."""

    def __init__(
        self,
        target_port: int,
        rtt_ms: float,
        *,
        target_host: str = "127.0.0.1",
        max_connections: int = 64,
        max_queued: int = 256,
        lifetime: float = 1800.0,
    ) -> None:
        if not ipaddress.ip_address(target_host).is_loopback:
            raise ValueError(f"DelayProxy forwards to loopback only, not {target_host}")
        if rtt_ms < 0 or lifetime <= 0:
            raise ValueError("rtt_ms must be >= 0 and lifetime > 0")
        self.target = (target_host, target_port)
        self.delay = rtt_ms / 2000.0
        self.max_connections, self.max_queued, self.lifetime = max_connections, max_queued, lifetime
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)  # the accept loop looks at the stop flag and the deadline this often
        self.port: int = self.listener.getsockname()[1]
        self.connections: list[_Connection] = []
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"delay-proxy-{self.port}", daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _serve(self) -> None:
        """Accept until stopped or the lifetime is over; refuse (close) connections beyond max_connections."""
        deadline = time.monotonic() + self.lifetime
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    client, _ = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                self.connections = [c for c in self.connections if not c.done()]
                if len(self.connections) >= self.max_connections:
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=10)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                client.settimeout(None)
                conn = _Connection(client, upstream, self.delay, self.max_queued)
                self.connections.append(conn)
                self.accepted += 1
                conn.start()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._stop.set()
        self.listener.close()
        for conn in self.connections:
            conn.close()

    def close(self) -> None:
        """Stop accepting and close every connection; returns once the accept loop has ended."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._shutdown()
