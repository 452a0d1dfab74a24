"""How the laptop reaches a session's Jupyter over the one connection to the login node.

TCP mode: a forward to the node's address and Jupyter's port, opened by the login node.
Socket mode: Jupyter listens only on a 0600 Unix socket on its node, so the laptop logs in to
that node through the login node (as a last ProxyJump hop, same user and keys) and opens
streams to the socket there. The hop is made once and again after it drops.
"""

from __future__ import annotations

import socket
import threading

from hpcjup.errors import AuthError, ConnectError
from hpcjup.session.record import Connection
from hpcjup.transport.base import Stream, Transport

TCP_HINT = (
    "Socket mode needs SSH from the login node to the node running your job, which this centre may not allow. "
    "Start without --socket (TCP mode: Jupyter listens on the node's port, protected by its token)."
)


class Route:
    """Opens streams to one session's Jupyter through `transport` (replace it after a reconnect)."""

    def __init__(self, transport: Transport, conn: Connection) -> None:
        self.transport, self.conn = transport, conn
        self._node: Transport | None = None
        self._lock = threading.Lock()
        self._closed = False

    def connect(self) -> None:
        """Make the hop to the node now (socket mode), so a refusal is reported before anything else."""
        if self.conn.socket:
            self._node_transport()

    def handoff(self, client: socket.socket) -> socket.socket | None:
        """Give a browser's connection to the SSH side itself where the backend can (OpenSSH, TCP mode)."""
        if self.conn.socket:
            return None
        return self.transport.forward_socket(client, self.conn.address, self.conn.port)

    def open(self) -> Stream:
        """A new byte stream to Jupyter."""
        if not self.conn.socket:
            return self.transport.open_stream(self.conn.address, self.conn.port)
        node = self._node_transport()
        try:
            return node.open_unix_stream(self.conn.socket)
        except (ConnectError, EOFError, OSError):
            if node.alive:  # the node is there; the socket is not (the job ended): say so
                raise
        return self._node_transport(replacing=node).open_unix_stream(self.conn.socket)

    def use(self, transport: Transport) -> None:
        """Go through a new connection to the login node from now on (the hop is made again)."""
        with self._lock:
            old, self._node, self.transport = self._node, None, transport
        if old is not None and old is not transport:
            old.close()

    def close(self) -> None:
        """Close the hop (not the login connection); no new one is made after this."""
        with self._lock:
            self._closed = True
            node, self._node = self._node, None
        if node is not None and node is not self.transport:
            node.close()

    def _node_transport(self, replacing: Transport | None = None) -> Transport:
        """The hop to the node: the current one, or a new one if there is none or `replacing` is it."""
        with self._lock:
            if self._closed:
                raise ConnectError("The tunnel is closing.")
            if self._node is not None and self._node is not replacing:
                return self._node
            if self._node is not None:
                self._node.close()
                self._node = None
            node = self.conn.node
            try:
                self._node = self.transport.hop(node)
            except AuthError as exc:  # e.g. the node's host key is unknown: its own hint says what to do
                raise AuthError(f"SSH to compute node {node}: {exc.message}", hint=exc.hint) from exc
            except ConnectError as exc:
                raise ConnectError(
                    f"Cannot SSH to compute node {node} through {self.transport.name}: {exc.message}", hint=TCP_HINT
                ) from exc
            return self._node
