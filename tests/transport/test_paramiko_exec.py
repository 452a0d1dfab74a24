"""The paramiko backend sends a command without waiting for the server's answer to the exec request.

Against a real paramiko SSH server in this process (OpenSSH's sshd cannot be made to refuse an exec
request, which restricted accounts' servers do): the command's output and exit status arrive as
before, stdin sent at once reaches the command, a refused request is a ConnectError that says so,
and the exec request is no longer a round trip of its own (the server sees the command's stdin
right behind it, before it has answered). The server's host key is RSA, which known_hosts names
`ssh-rsa`: paramiko >= 4 negotiates such a key only as rsa-sha2-512/256, and hpcjup's preference for
the known key type made every connection to an RSA-keyed host fail ("unknown cipher").
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from hpcjup.errors import ConnectError
from hpcjup.transport.destination import parse_destination
from hpcjup.transport.hostkeys import known_key_types
from hpcjup.transport.paramiko_ssh import ParamikoTransport

ANSWER_DELAY = 0.3  # the server waits this long before it answers an exec request


def unwrap(line: bytes) -> bytes:
    """The sh command inside hpcjup's one-line wrapper for login shells (transport/loginshell.py), as `sh` gets it."""
    match = re.fullmatch(rb"sh -c 'eval \"\$\(printf \"(.*)\"\)\"'", line)
    assert match, line
    return re.sub(rb"\\([0-7]{3})|%%", lambda m: bytes([int(m[1], 8)]) if m[1] else b"%", match[1])


class Server(paramiko.ServerInterface):
    """Accepts any public key; runs `echo`, `cat` (stdin back) and refuses everything else."""

    def __init__(self) -> None:
        self.channels: dict[int, str] = {}
        self.ready = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        time.sleep(ANSWER_DELAY)  # a slow answer: a client waiting for it would show it in its timing
        command = unwrap(command)
        if not command.startswith((b"echo", b"cat")):
            return False
        threading.Thread(target=self._run, args=(channel, command.decode()), daemon=True).start()
        return True

    @staticmethod
    def _run(channel: paramiko.Channel, command: str) -> None:
        with contextlib.suppress(OSError):  # the client may be gone already (the test's teardown)
            Server._answer(channel, command)

    @staticmethod
    def _answer(channel: paramiko.Channel, command: str) -> None:
        if command.startswith("echo"):
            channel.sendall(command[5:].encode() + b"\n")
        else:
            data = b""
            while chunk := channel.recv(65536):
                data += chunk
            channel.sendall(data)
        channel.send_exit_status(0)
        channel.close()


@pytest.fixture
def login(tmp_path: Path) -> Iterator[ParamikoTransport]:
    host_key = paramiko.RSAKey.generate(2048)
    user_key = paramiko.RSAKey.generate(2048)
    key_file = tmp_path / "id_rsa"
    user_key.write_private_key_file(str(key_file))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    config = tmp_path / "config"
    config.write_text(
        f"Host refuser\n    HostName 127.0.0.1\n    Port {port}\n    User alice\n"
        f"    IdentityFile {key_file}\n    IdentitiesOnly yes\n    UserKnownHostsFile {known}\n"
    )
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        conn, _ = listener.accept()
        t = paramiko.Transport(conn)
        t.add_server_key(host_key)
        t.start_server(server=Server())
        transports.append(t)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ParamikoTransport(parse_destination("refuser", config))
    yield client
    client.close()
    for t in transports:
        t.close()
    listener.close()


def test_output_stdin_and_exit_status_arrive_as_before(login: ParamikoTransport) -> None:
    assert login.run(["echo", "hello"]).stdout == "hello\n"
    assert login.run(["cat"], input=b"sent before the server answered").stdout == "sent before the server answered"


def test_the_exec_request_is_not_waited_for(login: ParamikoTransport) -> None:
    """The client's call returns when the command's output does: it did not sit out the answer first."""
    started = time.monotonic()
    process = login.start_process(["echo", "x"])
    returned = time.monotonic() - started
    process.close()
    assert returned < ANSWER_DELAY / 2, f"start_process took {returned:.2f} s: it waited for the exec answer"


def test_a_refused_command_says_so(login: ParamikoTransport) -> None:
    with pytest.raises(ConnectError, match="refused to run a command") as err:
        login.run(["uname", "-a"])
    assert "ssh HOST true" in (err.value.hint or "")
    assert login.run(["echo", "usable"]).stdout == "usable\n"  # the connection is still good
    # Refused while its stdin is still being sent (more than the server's window: sendall waits for it).
    with pytest.raises(ConnectError, match="refused to run a command"):
        login.run(["tar", "-x"], input=b"x" * (8 << 20))


def test_known_host_key_types_become_algorithms_paramiko_can_negotiate(tmp_path: Path) -> None:
    rsa, ed = paramiko.RSAKey.generate(1024), "AAAAC3NzaC1lZDI1NTE5AAAAIHVyRS0Ikk0yrHTuNm8LXTVGMh5f5SLQ4ymknx9ZtFaD"
    known = tmp_path / "known_hosts"
    known.write_text(f"login {rsa.get_name()} {rsa.get_base64()}\nlogin ssh-ed25519 {ed}\n")
    config = tmp_path / "config"
    config.write_text(f"Host login\n    UserKnownHostsFile {known}\n")
    dest = parse_destination("login", config)
    supported = ["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"]  # paramiko 4+: no ssh-rsa
    assert known_key_types(dest, supported) == ["rsa-sha2-512", "rsa-sha2-256", "ssh-ed25519"]
    assert known_key_types(dest, [*supported, "ssh-rsa"]) == ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa", "ssh-ed25519"]
