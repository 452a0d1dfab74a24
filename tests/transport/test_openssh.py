"""What is special about the OpenSSH backend: the reused ControlMaster, its private files, a lost master."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ConnectError
from hpcjup.transport import Transport, choose_backend
from hpcjup.transport.openssh import ConnectionLost, OpenSSHTransport
from hpcjup.transport.paramiko_ssh import ParamikoTransport
from hpcjup.transport.sshmaster import PERSIST_SECONDS

pytestmark = pytest.mark.cluster


def test_a_second_connect_reuses_the_master_without_authenticating(
    minicluster: Any, connect_to: Callable[..., Transport]
) -> None:
    before = minicluster.auth_count()
    first = connect_to("minicluster", "openssh")
    assert isinstance(first, OpenSSHTransport) and first.started_master
    first.run(["true"])
    first.close()  # another hpcjup command follows within ControlPersist (start -d, then ls)
    second = connect_to("minicluster", "openssh")
    assert isinstance(second, OpenSSHTransport) and not second.started_master
    assert second.run(["echo", "again"]).stdout == "again\n"
    assert minicluster.auth_count() - before == 1
    assert PERSIST_SECONDS >= 300


def test_private_control_directory_and_files(connect_to: Callable[..., Transport]) -> None:
    transport = connect_to("minicluster", "openssh")
    assert isinstance(transport, OpenSSHTransport)
    directory = transport.control_path.parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and directory.stat().st_uid == os.getuid()
    assert stat.S_ISSOCK(transport.control_path.stat().st_mode)
    assert len(str(transport.control_path)) + 17 < 104  # ssh's temporary name must fit a Unix socket path
    for path in directory.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_persist_false_ends_the_master_it_started(connect_to: Callable[..., Transport], laptop: Path) -> None:
    transport = OpenSSHTransport("minicluster", persist=False)
    socket_path = transport.control_path
    transport.close()
    assert not transport.alive
    again = connect_to("minicluster", "openssh")
    assert isinstance(again, OpenSSHTransport) and again.started_master and again.control_path == socket_path


def test_a_lost_master_is_noticed_and_commands_fail_cleanly(connect_to: Callable[..., Transport]) -> None:
    transport = connect_to("minicluster", "openssh")
    assert isinstance(transport, OpenSSHTransport) and transport.alive
    transport.terminate()  # as if the network dropped or sshd restarted
    assert not transport.alive
    with pytest.raises(ConnectionLost) as err:
        transport.run(["true"])
    assert isinstance(err.value, EOFError)  # what the tunnel holder already handles for paramiko
    with pytest.raises(ConnectError):
        transport.open_stream("127.0.0.2", 22)


def test_home_is_honoured_for_config_and_known_hosts(
    minicluster: Any, connect_to: Callable[..., Transport], laptop: Path
) -> None:
    # OpenSSH itself reads ~ from the password database; the laptop here only exists as $HOME.
    assert Path.home() == laptop != Path(os.path.expanduser("~root"))
    transport = connect_to("minicluster", "openssh")
    assert transport.run(["whoami"]).stdout.strip() == minicluster.user


def test_backend_choice(monkeypatch: pytest.MonkeyPatch, connect_to: Callable[..., Transport]) -> None:
    assert choose_backend("auto") == "openssh"  # Linux with an ssh binary
    monkeypatch.setenv("HPCJUP_SSH", "paramiko")
    assert choose_backend("auto") == "paramiko" and choose_backend("openssh") == "openssh"
    assert isinstance(connect_to("minicluster", "auto"), ParamikoTransport)
    monkeypatch.setenv("HPCJUP_SSH", "telnet")
    from hpcjup.errors import UsageError

    with pytest.raises(UsageError):
        choose_backend("auto")
