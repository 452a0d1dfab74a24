"""The one-line wrapper that every login shell hands to `sh` unchanged, run through the real shells.

sshd runs `LOGIN_SHELL -c LINE`; here the same shells run the same LINE on this machine. Each shell
missing from the machine is skipped (tests/cluster/install.sh installs them all), except when CI=true.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcjup.transport.loginshell import for_login_shell, printf_format
from tests.cluster.fixtures import add_shell_hosts

SHELLS = ("sh", "bash", "zsh", "tcsh", "csh", "fish")
# Everything a shell could read specially, and characters outside ASCII.
NASTY = "'\"\\$`!\n\t%~#&;|<>(){}[]*?^ é€\x7f\x01\\\\ \\' !! !$ $( ${x} %d %s \\n \\101"


def through(shell: str, argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` as hpcjup sends it: one line given to `shell -c`, as sshd does."""
    program = shutil.which(shell)
    if program is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{shell} is required when CI=true (tests/cluster/install.sh installs it)")
        pytest.skip(f"{shell} is not installed")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [program, "-c", for_login_shell(shlex.join(argv))], input=stdin, capture_output=True, env=env, timeout=30
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_arguments_stdin_and_exit_code_reach_sh_intact(shell: str) -> None:
    printed = through(shell, ["printf", "%s", NASTY])
    assert printed.stdout.decode() == NASTY, printed.stderr
    script = 'read -r line; printf "%s|%s|%s" "$line" "$0" "$1"; exit 7'
    result = through(shell, ["sh", "-c", script, "zero", "one two\n"], stdin=b"from stdin\n")
    assert (result.returncode, result.stdout) == (7, b"from stdin|zero|one two\n")


@pytest.mark.parametrize("shell", SHELLS)
def test_posix_syntax_the_login_shell_lacks_works(shell: str) -> None:
    """Assignments before a command and $(...) are sh's, not tcsh's or fish's: they reach sh."""
    result = through(shell, ["sh", "-c", 'X=1 env | grep "^X="; echo "$(echo sub)"'])
    assert result.stdout == b"X=1\nsub\n", result.stderr


def test_the_line_holds_no_character_a_login_shell_reads_specially() -> None:
    line = for_login_shell(shlex.join(["printf", "%s", NASTY]))
    inside = line[len("sh -c '") : -1]
    assert "\n" not in line and "!" not in line and "'" not in inside
    assert "\\\\" not in inside and all(ord(c) < 127 for c in line)  # fish: \\ and \' are escapes in quotes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)))
def test_any_arguments_come_back_from_tcsh_and_fish(words: list[str]) -> None:
    expected = "".join(f"<{word}>" for word in words).encode()
    for shell in ("tcsh", "fish"):
        result = through(shell, ["printf", "<%s>", *words] if words else ["true"])
        assert result.stdout == expected, (shell, result.stderr)


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_the_format_uses_only_safe_characters(text: str) -> None:
    fmt = printf_format(text)
    assert set(fmt) <= set(
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ #&()*+,-./:;<=>?@[]^_{|}~%\\"
    )
    assert "\\\\" not in fmt and all(fmt[i + 1 : i + 4].isdigit() for i, c in enumerate(fmt) if c == "\\")


@pytest.mark.cluster
@pytest.mark.parametrize("shell", ("tcsh", "fish"))
def test_real_sshd_with_a_tcsh_or_fish_login_shell(
    shell: str, backend: str, shell_users: dict[str, str], minicluster: Any, laptop: Path, connect_to: Any
) -> None:
    """Through the cluster's sshd, for users whose login shell is tcsh or fish: commands, a watcher, files."""
    add_shell_hosts(laptop, minicluster)
    transport = connect_to(f"minicluster-{shell}", backend)
    assert transport.run(["printf", "%s", NASTY]).stdout == NASTY
    assert transport.run(["sh", "-c", 'X=1 env | grep "^X="; exit 3'], check=False).stdout == "X=1\n"
    path = f"{transport.home()}/.hpcjup-login-shell-test"
    transport.write_file(path, NASTY.encode())
    try:
        assert transport.read_file(path) == NASTY.encode()
    finally:
        transport.remove(path)
    process = transport.start_process(["sh", "-c", 'printf "%s" "$1"; cat', "sh", "watch!"])
    try:
        seen = b""
        while len(seen) < 6 and (chunk := process.read_some()):
            seen += chunk
        assert seen == b"watch!"
    finally:
        process.close()
    assert transport.home() == f"/home/{shell_users[shell]}"
