"""A local port forward: 127.0.0.1:<port> -> a stream opened through the session's connection.

Every accepted connection is either handed over whole (`handoff`: the OpenSSH master takes the
socket itself and copies its bytes in C, which is as fast as `ssh -L`), or gets its own stream
from `opener` (an SSH channel on the one Transport, or a plain socket for `--local`) and a
thread per direction that copies between the two. The tunnel is a context
manager: leaving it closes the listener and every stream, and re-raises a failure of the
accept thread, so errors are never swallowed. What `opener` and `handoff` reach may change while
it runs (reconnecting after a dropped connection keeps the same local port).

Running out of file descriptors must not end it (macOS starts processes with 256): the soft
limit is raised toward the hard one at start, at most MAX_FORWARDS connections are forwarded at
once (more wait in the listen queue until one ends), and an accept() that fails for want of
descriptors or buffers is retried after a pause. Any other failure of the accept thread ends the
tunnel for good and is kept in `error`, which the holder watches (session/holding.py).
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
from collections.abc import Callable

from hpcjup.errors import PortBusyError
from hpcjup.transport.base import Stream

log = logging.getLogger("hpcjup.tunnel")
_CHUNK = 256 * 1024

#: Connections forwarded at once (4x the 64 a browser may open): beyond it, new ones wait to be accepted.
MAX_FORWARDS = 256
#: The soft descriptor limit the tunnel asks for (up to the hard limit): each forward holds 2-4 descriptors.
WANTED_DESCRIPTORS = 4096
#: accept() failures that pass: out of descriptors or buffers (they come back as connections end), a
#: client that gave up before it was accepted. Anything else ends the tunnel.
_TRANSIENT = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPROTO, errno.EAGAIN}
)
_MAX_PAUSE = 1.0  # seconds between accept() retries while descriptors are short

#: Takes an accepted connection over (returning a control socket that reads EOF when the forward
#: ends and ends it when closed), or returns None where it cannot: then `opener` serves.
Handoff = Callable[[socket.socket], socket.socket | None]


class Tunnel:
    """Listens on loopback and forwards each connection through `opener()`."""

    def __init__(
        self,
        opener: Callable[[], Stream],
        local_port: int | None = None,
        handoff: Handoff | None = None,
        *,
        max_forwards: int | None = None,
    ) -> None:
        self.opener = opener
        self.handoff = handoff
        self.requested_port = local_port
        self.local_port = 0
        self.failures = 0  # connections whose stream could not be opened
        self.shortages = 0  # accept() calls that found no descriptor (or buffer) free and were retried
        self.max_forwards = max_forwards  # None: MAX_FORWARDS, or fewer if descriptors are short (start())
        self._slots = threading.BoundedSemaphore(1)
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[tuple[socket.socket, Stream]] = set()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._wake_r, self._wake_w = socket.socketpair()  # wakes the accept loop at close()

    def start(self) -> int:
        """Bind and start accepting; returns the local port."""
        limit = raise_descriptor_limit()
        if self.max_forwards is None:  # each forward holds up to 4 descriptors; keep some for everything else
            self.max_forwards = max(8, min(MAX_FORWARDS, (limit - 64) // 4)) if limit else MAX_FORWARDS
        self._slots = threading.BoundedSemaphore(self.max_forwards)
        self._listener = bind_loopback(self.requested_port)
        self.local_port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"tunnel-{self.local_port}", daemon=True)
        self._thread.start()
        return self.local_port

    @property
    def error(self) -> BaseException | None:
        """What ended the accept thread while the tunnel was open (None while it accepts)."""
        return self._error

    def take_error(self) -> BaseException | None:
        """`error`, which the caller now reports itself (leaving the tunnel no longer re-raises it)."""
        error, self._error = self._error, None
        return error

    @property
    def connections(self) -> int:
        """Connections being forwarded now."""
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        """Stop listening and close every forwarded connection."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake_w.send(b"x")
        with self._lock:
            pairs = list(self._open)
        for client, stream in pairs:
            _close(client, stream)
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def __enter__(self) -> Tunnel:
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self._error is not None:
            raise self._error

    def _accept_loop(self) -> None:
        pause = 0.0
        try:
            while not self._closed.is_set():
                if not self._slots.acquire(timeout=0.5):
                    continue  # MAX_FORWARDS connections are open: new ones wait in the listen queue
                client = None
                try:
                    client = self._accept()
                    if client is not None:
                        threading.Thread(target=self._forward, args=(client,), daemon=True).start()
                except (OSError, RuntimeError) as exc:  # RuntimeError: no thread could be started
                    self._slots.release()
                    if isinstance(exc, OSError) and exc.errno not in _TRANSIENT:
                        raise
                    if client is not None:  # accepted, but nothing can serve it now: the browser retries
                        client.close()
                    if pause == 0.0:  # once per shortage, not once per retry
                        log.warning("cannot accept a connection now (%s); retrying until it can", exc)
                    pause = min(max(2 * pause, 0.01), _MAX_PAUSE)
                    self.shortages += 1
                    self._closed.wait(pause)
                    continue
                if client is None:  # closed
                    self._slots.release()
                    return
                pause = 0.0
        except BaseException as exc:  # re-raised in __exit__; the holder sees it in `error`
            if not self._closed.is_set():
                log.error("the tunnel on port %d stopped accepting connections: %s", self.local_port, exc)
                self._error = exc

    def _accept(self) -> socket.socket | None:
        """The next connection, or None once the tunnel is closed."""
        assert self._listener is not None
        select.select([self._listener, self._wake_r], [], [])
        if self._closed.is_set():
            return None
        try:
            client, _ = self._listener.accept()
        except OSError:
            if self._closed.is_set():
                return None
            raise
        return client

    def _forward(self, client: socket.socket) -> None:
        try:
            self._forward_one(client)
        finally:
            self._slots.release()

    def _forward_one(self, client: socket.socket) -> None:
        # Opening the stream is a round trip to the server: do it here, not in the accept loop,
        # so dozens of browser connections open in parallel.
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            control = self.handoff(client) if self.handoff else None
            stream: Stream = control if control is not None else self.opener()
        except Exception as exc:
            self.failures += 1
            log.warning("forward failed: %s", exc)
            client.close()
            return
        # With a handoff our copy of `client` stays open but unused until the forward ends: shutting it
        # down (close()) is what makes the master end both sides; closing it afterwards lets the browser see the end.
        pair = (client, stream)
        with self._lock:
            self._open.add(pair)
        try:
            if control is not None:
                while control.recv(64):  # nothing comes until the forward ends (EOF)
                    pass
            else:
                _pump(client, stream)
        except OSError as exc:  # a reset by either side ends this connection only
            log.debug("connection ended: %s", exc)
        finally:
            with self._lock:
                self._open.discard(pair)
            _close(client, stream)


def raise_descriptor_limit(wanted: int = WANTED_DESCRIPTORS) -> int:
    """Raise this process's soft limit on open files toward `wanted` (never above the hard limit, never
    lowered); the soft limit now. macOS starts programs with 256, which a browser's connections can use up."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # macOS refuses more than kern.maxfilesperproc
            log.debug("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bind_loopback(port: int | None) -> socket.socket:
    """A listening socket on 127.0.0.1 (a free port when `port` is None)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # REUSEADDR: connections of an earlier tunnel on this port linger in TIME_WAIT and would block
    # re-binding it (reattaching on the same port); on Linux it never lets two listeners share a port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port or 0))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortBusyError(
                f"Local port {port} is already in use" + (" (or reserved)." if exc.errno == errno.EACCES else "."),
                hint="Pass another --local-port, or leave it out to get a free port.",
            ) from exc
        raise
    sock.listen(128)
    return sock


def _pump(client: socket.socket, stream: Stream) -> None:
    """Copy bytes both ways until both sides have finished sending (half-closes are passed on).

    One blocking thread per direction: a byte waits for no poll() wake-up, which costs about a
    fifth of the round trip of small messages. close() shuts the sockets down, which ends both.
    """
    upstream = threading.Thread(target=_copy, args=(client, stream), daemon=True)
    upstream.start()
    _copy(stream, client)
    upstream.join()


def _copy(src: Stream, dst: Stream) -> None:
    """src -> dst until src's EOF, then EOF to dst; a reset ends only this direction (the caller closes)."""
    try:
        while data := src.recv(_CHUNK):
            dst.sendall(data)
        _shutdown_write(dst)
    except Exception as exc:  # OSError, or the SSH library's own error type for a dead channel
        log.debug("connection ended: %s", exc)
        _close(src, dst)  # type: ignore[arg-type]


def _shutdown_write(end: object) -> None:
    """Tell `end` no more data comes (EOF), keeping its other direction open."""
    if isinstance(end, socket.socket):
        end.shutdown(socket.SHUT_WR)
    else:
        end.shutdown_write()  # type: ignore[attr-defined]  # a paramiko Channel


def _close(client: socket.socket, stream: Stream) -> None:
    # shutdown first: a plain close() waits for a pump thread's poll() to let go of the socket.
    for end in (client, stream):
        try:
            if isinstance(end, socket.socket):
                end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            end.close()
        except OSError:
            pass
