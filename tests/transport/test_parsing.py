"""Unit tests without a cluster: destinations, ProxyJump chains, and what ssh's error output becomes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcjup.errors import AuthError, ConnectError, UsageError
from hpcjup.transport.destination import check_node_name, jump_chain, parse_destination, split_destination
from hpcjup.transport.hostkeys import ssh_error

KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnWLnxX+/b8d3dCoLq5J5Nd2UMbPz4AYNkEGjVtV"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("juwels", (None, "juwels", None)),
        ("me@juwels", ("me", "juwels", None)),
        ("me@10.0.0.1:2222", ("me", "10.0.0.1", 2222)),
        ("ssh://me@host:22", ("me", "host", 22)),
        ("[::1]:2200", (None, "::1", 2200)),
    ],
)
def test_split_destination(text: str, expected: tuple[str | None, str, int | None]) -> None:
    assert split_destination(text) == expected


@pytest.mark.parametrize("text", ["", "a b", "-oProxyCommand=x", "host:99999", "user@"])
def test_bad_destinations(text: str) -> None:
    with pytest.raises(UsageError):
        split_destination(text)


@pytest.mark.parametrize("name", ["node1", "jwb0123", "jwb0123.juwels.fzj.de", "n-01"])
def test_node_names(name: str) -> None:
    assert check_node_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-oProxyCommand=x", "evil.example:2222", "u@node1", "a;touch x", "$(id)", "n`id`", "node 1", "a" * 300]
)
def test_node_names_that_are_not(name: str) -> None:
    with pytest.raises(UsageError, match="Not a compute node name"):
        check_node_name(name)


def test_jump_chain_follows_ssh_config(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        "Host target\n  HostName 10.0.0.9\n  ProxyJump gw2,alice@gw3:2022\n"
        "Host gw2\n  HostName gw2.example.org\n  ProxyJump gw1\n  User bob\n"
        "Host gw1\n  HostName gw1.example.org\n  Port 2201\n"
    )
    chain = jump_chain(parse_destination("target", config), config)
    assert [(d.hostname, d.port) for d in chain] == [("gw1.example.org", 2201), ("gw2.example.org", 22), ("gw3", 2022)]
    assert [d.user for d in chain][1:] == ["bob", "alice"]
    assert all(d.proxy_jump is None for d in chain)  # each is reached through the one before it


def test_jump_loops_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    with pytest.raises(UsageError, match="loop"):
        jump_chain(parse_destination("a", config), config)


def _error(text: str) -> Exception | None:
    return ssh_error(text, "me", "login.example.org:22", "cluster", "ssh -p 22 me@login.example.org", lambda: "")


def test_unknown_key_uses_the_probe_for_its_fingerprint() -> None:
    text = "No ED25519 host key is known for login.example.org and you have requested strict checking.\nHost key verification failed.\n"
    probe = "debug1: Server host key: ssh-ed25519 SHA256:abcDEF123+/x\n"
    err = ssh_error(text, "me", "login.example.org:22", "cluster", "ssh -p 22 me@login.example.org", lambda: probe)
    assert (
        isinstance(err, AuthError)
        and "Unknown host key for login.example.org (ssh-ed25519 SHA256:abcDEF123+/x)" in err.message
    )


def test_changed_key_shows_both_fingerprints(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"other ssh-rsa AAAA\nlogin.example.org ssh-ed25519 {KEY}\n")
    text = (
        "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n"
        "The fingerprint for the ED25519 key sent by the remote host is\nSHA256:newNEWnew.\n"
        f"Offending ED25519 key in {known}:2\nHost key for login.example.org has changed and you have requested strict checking.\n"
        "Host key verification failed.\n"
    )
    err = _error(text)
    assert isinstance(err, AuthError) and "HOST KEY CHANGED for login.example.org" in err.message
    assert "SHA256:newNEWnew" in err.message and "ssh-ed25519 SHA256:" in err.message


def test_other_failures() -> None:
    denied = _error("me@login.example.org: Permission denied (publickey,keyboard-interactive).\n")
    assert isinstance(denied, AuthError) and "publickey,keyboard-interactive" in denied.message
    refused = _error("ssh: connect to host login.example.org port 22: Connection refused\n")
    assert isinstance(refused, ConnectError) and "login.example.org:22" in refused.message and refused.hint
    unknown = _error("ssh: Could not resolve hostname nowhere: Name or service not known\n")
    assert isinstance(unknown, ConnectError) and "resolve" in unknown.message
    assert isinstance(_error("/home/me/.ssh/config: line 3: Bad configuration option: foo\n"), UsageError)
    assert _error('unix_listener: path "/x" too long for Unix domain socket\n') is None


def test_paramiko_no_longer_imports_invoke_until_match_exec_needs_it(tmp_path: Path) -> None:
    """hpcjup.transport stands in for `invoke` (0.1 s of each paramiko start); `Match exec` still works."""
    config = tmp_path / "config"
    config.write_text(
        'Match host probe exec "test -n hpcjup"\n    Port 2200\nMatch host probe exec "false"\n    User nobody\n'
    )
    code = f"""
import json, pathlib, sys
from hpcjup.transport.destination import parse_destination
import paramiko
stand_in = lambda: "stand-in" in (sys.modules["invoke"].__doc__ or "")
before = stand_in()
d = parse_destination("alice@probe", pathlib.Path({str(config)!r}))
print(json.dumps({{"before": before, "port": d.port, "user": d.user, "after": stand_in()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == {"before": True, "port": 2200, "user": "alice", "after": False}
