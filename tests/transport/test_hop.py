"""Hops to a compute node through the login node, and streams to a Unix socket there, both backends."""

from __future__ import annotations

import os
import pwd
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ConnectError, UsageError
from hpcjup.transport import Transport
from tests.cluster.bastion import NodeSshd
from tests.cluster.procs import free_port
from tests.transport.conftest import EchoServer

pytestmark = pytest.mark.cluster


class UnixEcho(EchoServer):
    """An echo server on a 0600 Unix socket in a 0700 directory, both owned by the cluster user."""

    def __init__(self, user: str) -> None:
        account = pwd.getpwnam(user)
        self.dir = tempfile.mkdtemp(prefix="hpcjup-hop-")
        self.path = f"{self.dir}/echo.sock"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(self.path)
        sock.listen(64)
        for path, mode in ((self.path, 0o600), (self.dir, 0o700)):
            os.chown(path, account.pw_uid, account.pw_gid)
            os.chmod(path, mode)
        super().__init__(sock)

    def close(self) -> None:
        self.sock.close()
        Path(self.path).unlink(missing_ok=True)
        os.rmdir(self.dir)


@pytest.fixture
def unix_echo(minicluster: Any) -> Iterator[UnixEcho]:
    server = UnixEcho(minicluster.user)
    yield server
    server.close()


def _echo_through(stream: Any, payload: bytes) -> bytes:
    stream.sendall(payload)
    _shutdown_write(stream)
    data = bytearray()
    while chunk := stream.recv(65536):
        data += chunk
    stream.close()
    return bytes(data)


def _shutdown_write(stream: Any) -> None:
    if isinstance(stream, socket.socket):
        stream.shutdown(socket.SHUT_WR)
    else:
        stream.shutdown_write()


def test_hop_to_the_node_and_its_unix_socket(
    minicluster: Any,
    node_sshd: NodeSshd,
    laptop: Path,
    unix_echo: UnixEcho,
    connect_to: Callable[..., Transport],
    backend: str,
) -> None:
    node_sshd.add_to_laptop(laptop)
    login_auths, node_logins, forwards = (
        minicluster.auth_count(),
        node_sshd.logins(),
        node_sshd.socket_forwards(unix_echo.path),
    )
    login = connect_to("minicluster", backend)
    node = login.hop("node1")
    try:
        assert (
            node.run(["whoami"]).stdout.strip() == minicluster.user
        )  # the login node's user, though the block names none
        payload = os.urandom(3 * 1024 * 1024)
        assert _echo_through(node.open_unix_stream(unix_echo.path), payload) == payload  # half-close passed on
        streams = [node.open_unix_stream(unix_echo.path) for _ in range(16)]
        for i, stream in enumerate(streams):
            stream.sendall(b"%d" % i)
        assert [s.recv(10) for s in streams] == [b"%d" % i for i in range(16)]
        for stream in streams:
            stream.close()
    finally:
        node.close()
    assert login.run(["true"]).returncode == 0  # closing the hop leaves the login connection up
    assert minicluster.auth_count() - login_auths == 1
    assert node_sshd.logins() - node_logins == 1
    assert node_sshd.socket_forwards(unix_echo.path) - forwards == 17


def test_a_node_that_refuses_ssh_is_a_connect_error(
    laptop: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    with (laptop / ".ssh/config").open("a") as fh:
        fh.write(
            f"\nHost node2\n    Port {free_port()}\n"
        )  # nothing listens there, as where centres forbid SSH to nodes
    login = connect_to("minicluster", backend)
    with pytest.raises(ConnectError) as caught:
        login.hop("node2")
    print(caught.value.message)
    assert "node2" in caught.value.message
    assert login.run(["true"]).returncode == 0


def test_a_new_hop_after_the_old_one_closed_and_parallel_first_streams(
    node_sshd: NodeSshd, laptop: Path, unix_echo: UnixEcho, connect_to: Callable[..., Transport], backend: str
) -> None:
    node_sshd.add_to_laptop(laptop)
    login = connect_to("minicluster", backend)
    for _ in range(2):  # the second hop finds what the first one left behind (OpenSSH: its local socket file)
        node = login.hop("node1")
        try:
            results: dict[int, bytes] = {}

            def one(i: int, node: Transport = node, results: dict[int, bytes] = results) -> None:
                stream = node.open_unix_stream(unix_echo.path)
                stream.sendall(b"%d" % i)
                results[i] = stream.recv(10)
                stream.close()

            threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert results == {i: b"%d" % i for i in range(16)}
        finally:
            node.close()


def test_node_names_are_checked_before_any_ssh(
    laptop: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    login = connect_to("minicluster", backend)
    for name in ("node1;touch /tmp/hpcjup-pwned", "evil.example:2222", "-oProxyCommand=true"):
        with pytest.raises(UsageError):
            login.hop(name)
    assert not Path("/tmp/hpcjup-pwned").exists()
