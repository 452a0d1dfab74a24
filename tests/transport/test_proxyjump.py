"""ProxyJump through a second sshd acting as a bastion, both backends; host keys checked at every hop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import AuthError
from hpcjup.transport import Transport
from tests.cluster.bastion import Bastion
from tests.transport.conftest import NODE, EchoServer

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def bastion(minicluster: Any) -> Iterator[Bastion]:
    server = Bastion(minicluster).start()
    yield server
    server.stop()


def test_connects_through_the_bastion(
    minicluster: Any,
    bastion: Bastion,
    laptop: Path,
    connect_to: Callable[..., Transport],
    backend: str,
    echo_server: EchoServer,
) -> None:
    bastion.add_to_laptop(laptop)
    logins, forwards, cluster_auths = (
        bastion.logins(),
        bastion.forwards_to(minicluster.ssh_port),
        minicluster.auth_count(),
    )
    transport = connect_to("minicluster-via-bastion", backend)
    assert transport.run(["whoami"]).stdout.strip() == minicluster.user
    stream = transport.open_stream(NODE, echo_server.port)  # forwards go through both hops
    stream.sendall(b"via the bastion")
    assert stream.recv(100) == b"via the bastion"
    stream.close()
    # Both hosts are on loopback, so the proof that the hop was used is in the bastion's log:
    # one login there, and a direct-tcpip forward to the login node's sshd.
    assert bastion.logins() - logins == 1
    assert bastion.forwards_to(minicluster.ssh_port) - forwards == 1
    assert minicluster.auth_count() - cluster_auths == 1


def test_several_hops_in_one_proxyjump(
    minicluster: Any, bastion: Bastion, laptop: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    bastion.add_to_laptop(laptop)
    config = laptop / ".ssh/config"
    # Two hops: the bastion, then the bastion again reached through itself.
    config.write_text(
        config.read_text()
        + bastion.laptop_entry(
            "twohops", laptop / ".ssh/id_minicluster", minicluster.ssh_port, "    ProxyJump bastion,bastion\n"
        )
    )
    logins = bastion.logins()
    transport = connect_to("twohops", backend)
    assert transport.run(["true"]).returncode == 0
    assert bastion.logins() - logins == 2


def test_the_bastions_host_key_is_checked(
    bastion: Bastion, laptop: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    bastion.add_to_laptop(laptop)
    known_hosts = laptop / ".ssh/known_hosts"
    known_hosts.write_text(
        "".join(line + "\n" for line in known_hosts.read_text().splitlines() if str(bastion.port) not in line)
    )
    with pytest.raises(AuthError, match=f"Unknown host key for \\[127.0.0.1\\]:{bastion.port}"):
        connect_to("minicluster-via-bastion", backend)
