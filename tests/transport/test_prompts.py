"""A server's keyboard-interactive text never reaches the terminal as control characters.

paramiko: a real paramiko SSH server in this process sends a prompt, a name and instructions laden
with escape sequences (OpenSSH's sshd sends what PAM says, which a test cannot make hostile).
OpenSSH: ssh hands the server's prompt to its askpass program; here the real helper that hpcjup
installs as SSH_ASKPASS is run with such a prompt, talking to the real bridge, and with a notice
(SSH_ASKPASS_PROMPT=none) that it writes to its terminal itself (a pseudo-terminal here).
"""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.text import visible
from hpcjup.transport.askpass import AskpassBridge
from hpcjup.transport.destination import parse_destination
from hpcjup.transport.paramiko_ssh import ParamikoTransport

HOSTILE = "\x1b]0;owned\x07\x1b[2J\rVerification code\x9b31m: "


class KbdServer(paramiko.ServerInterface):
    """Keyboard-interactive only: one hostile question, whose answer must be 123456."""

    def get_allowed_auths(self, username: str) -> str:
        return "keyboard-interactive"

    def check_auth_interactive(self, username: str, submethods: str) -> paramiko.InteractiveQuery:
        return paramiko.InteractiveQuery(
            "\x1b[31mSite\x1b[0m", "Use \x1b]8;;http://evil\x07your token", (HOSTILE, False)
        )

    def check_auth_interactive_response(self, responses: list[str]) -> int:
        return paramiko.AUTH_SUCCESSFUL if list(responses) == ["123456"] else paramiko.AUTH_FAILED


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    host_key = paramiko.Ed25519Key.from_private_key_file(_ed25519(tmp_path))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    config = tmp_path / "config"
    config.write_text(
        f"Host hostile\n    HostName 127.0.0.1\n    Port {port}\n    User alice\n"
        f"    IdentitiesOnly yes\n    UserKnownHostsFile {tmp_path / 'known_hosts'}\n"
    )
    served: list[paramiko.Transport] = []

    def serve() -> None:
        conn, _ = listener.accept()
        t = paramiko.Transport(conn)
        t.add_server_key(host_key)
        t.start_server(server=KbdServer())
        served.append(t)

    threading.Thread(target=serve, daemon=True).start()
    yield config
    for t in served:
        t.close()
    listener.close()


def _ed25519(directory: Path) -> str:
    path = directory / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return str(path)


def test_paramiko_shows_the_servers_text_without_control_characters(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HPCJUP_ASKPASS", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "SSH_AUTH_SOCK"):
        monkeypatch.delenv(name, raising=False)
    asked: list[str] = []

    def prompt(question: str, echo: bool) -> str:
        asked.append(question)
        return "123456"

    transport = ParamikoTransport(parse_destination("hostile", config), prompt)
    transport.close()
    assert len(asked) == 1
    assert not any(c in asked[0] for c in "\x1b\x07\r\x9b"), repr(asked[0])
    assert asked[0] == (
        "\\x1b[31mSite\\x1b[0m\nUse \\x1b]8;;http://evil\\x07your token\n"
        "\\x1b]0;owned\\x07\\x1b[2J\\x0dVerification code\\x9b31m: "
    )


def test_the_openssh_askpass_bridge_passes_no_control_characters(tmp_path: Path) -> None:
    directory = tmp_path / "ctl"
    directory.mkdir(mode=0o700)
    asked: list[str] = []
    with AskpassBridge(directory, lambda question, echo: asked.append(question) or "123456") as bridge:
        env = {**os.environ, **bridge.env()}
        helper = env["SSH_ASKPASS"]
        out = subprocess.run([helper, HOSTILE], env=env, capture_output=True, text=True, timeout=30)
        assert (out.returncode, out.stdout) == (0, "123456\n"), out.stderr
        # A notice the helper shows itself, on its own terminal.
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pseudo-terminal is its controlling terminal, /dev/tty
            os.execve(helper, [helper, HOSTILE], {**env, "SSH_ASKPASS_PROMPT": "none"})
        shown = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        os.waitpid(pid, 0)
    assert asked == [visible(HOSTILE)] and "\x1b" not in asked[0]
    assert b"\\x1b]0;owned\\x07" in shown and b"\x1b" not in shown and b"\x07" not in shown, shown


@given(st.text())
def test_visible_leaves_no_control_character_and_keeps_the_rest(text: str) -> None:
    def control(c: str) -> bool:
        return (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F

    shown = visible(text)
    assert not any(control(c) for c in shown)
    if not any(control(c) for c in text):
        assert shown == text
