"""Where the job's Jupyter listens, and the launcher's HTTP requests to it (standard library only).

Shipped beside launcher.py. Two kinds of endpoint:
- TCP: this node's cluster address and a port Jupyter picks itself (port 0), reported in its
  jpserver-PID.json; the laptop reaches it with a port forward through the login node.
- Unix socket (--socket): a 0600 socket in a 0700 directory on node-local /tmp, nothing on TCP;
  the laptop reaches it over SSH to this node (through the login node).
Requests never go through a proxy: compute nodes often have http_proxy set, and the token must
never travel to one.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import tempfile
from typing import Any

from contract import ENV_NODE  # this node's name, from the job script

SOCKET_NAME = "jupyter.sock"


def node_address() -> str:
    """This node's address on the cluster network: never the wildcard, loopback as a last resort."""
    # The scheduler's name for the node first: on some clusters every node's hostname is the same machine name.
    for name in (os.environ.get(ENV_NODE), socket.gethostname()):
        if name:
            try:
                address = socket.gethostbyname(name)
            except OSError:
                continue
            if not address.startswith("0."):
                return address
    return "127.0.0.1"


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address  # IPv6


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Endpoint:
    """Jupyter's listener: `address` (the node's, for TCP) and the port it chose, or a Unix socket."""

    def __init__(self, address: str, use_socket: bool = False) -> None:
        self.address = address
        self.port = 0  # known once Jupyter reported it (TCP)
        self.base_url = "/"
        self.socket_dir = tempfile.mkdtemp(prefix="hpcjup-", dir="/tmp") if use_socket else None  # 0700, node-local
        self.socket = os.path.join(self.socket_dir, SOCKET_NAME) if self.socket_dir else None

    def jupyter_args(self) -> list:
        if self.socket:
            return ["--ServerApp.sock=" + self.socket, "--ServerApp.sock_mode=0600"]
        return ["--ServerApp.ip=" + self.address, "--ServerApp.port=0", "--ServerApp.port_retries=0"]

    def learn(self, info: dict) -> bool:
        """Take what Jupyter reports in jpserver-PID.json; whether it says where it listens."""
        self.base_url = info.get("base_url") or "/"
        if self.socket:
            return info.get("sock") == self.socket
        self.port = int(info.get("port") or 0)
        return self.port > 0

    def describe(self) -> str:
        return f"socket {self.socket}" if self.socket else f"{url_host(self.address)}:{self.port}"

    def fields(self) -> dict:
        """The connection.json keys that say where Jupyter is."""
        where = f"http+unix://{self.socket}" if self.socket else f"http://{url_host(self.address)}:{self.port}"
        return {
            "address": self.address,
            "port": self.port,
            "socket": self.socket,
            "base_url": self.base_url,
            "url": f"{where}{self.base_url}lab",
        }

    def get(self, path: str, token: str | None, timeout: float = 5) -> tuple[int | None, Any]:
        """(HTTP status, decoded JSON or None) of GET base_url+path; (None, None) if nothing answers."""
        if self.socket:
            conn: http.client.HTTPConnection = _UnixConnection(self.socket, timeout)
        else:
            conn = http.client.HTTPConnection(url_host(self.address), self.port, timeout=timeout)
        headers = {"Authorization": "token " + token} if token else {}
        try:
            conn.request("GET", self.base_url + path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            return response.status, json.loads(body or b"null") if response.status == 200 else None
        except (OSError, ValueError, http.client.HTTPException):
            return None, None
        finally:
            conn.close()

    def remove(self) -> None:
        """Remove the socket's directory (Jupyter is gone by now)."""
        if self.socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
