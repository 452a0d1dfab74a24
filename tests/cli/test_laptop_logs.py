"""`hpcjup logs` on a terminal: a job's log cannot drive the terminal (escape sequences are shown, not run).

A real `hpcjup start --local` session; its job log gains the escape sequences a job's program could
print, and `logs` runs on a real pseudo-terminal, as in a user's shell.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import CLUSTER_PYTHON, hpcjup_argv, local_env, run

pytestmark = pytest.mark.one_backend  # --local: no SSH at all

# Retitle the window, clear the screen, hide a line behind a carriage return, reorder text (bidi override).
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m\rhidden\u202eright-to-left\x9b6n\n"


@pytest.fixture
def local_session(laptop_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A detached `--local` session whose job printed HOSTILE (a profile's setup line, before Jupyter). Stopped afterwards."""
    if not Path(CLUSTER_PYTHON).exists():
        pytest.skip(f"{CLUSTER_PYTHON} missing (tests/cluster/install.sh creates it)")
    env = local_env(laptop_env)
    (tmp_path / "hostile.txt").write_text(HOSTILE, encoding="utf-8")
    config = Path(env["XDG_CONFIG_HOME"], "hpcjup", "config.toml")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[profiles.noisy]\nsetup = ["cat {tmp_path / "hostile.txt"}"]\n')
    name = f"logs-{uuid.uuid4().hex[:6]}"
    args = ["start", "--local", "--profile", "noisy", "--name", name, "--no-dask", "-d", "--json", "--no-browser"]
    result = run(args, env)
    assert result.returncode == 0, result.stderr
    try:
        yield {**json.loads(result.stdout), "env": env}
    finally:
        run(["stop", name, "--local"], env)


def on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run hpcjup with its stdout on a new pseudo-terminal: (exit code, every byte it wrote there)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        hpcjup_argv() + args, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE
    )
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    proc.communicate(timeout=30)
    return proc.returncode, out


def test_logs_show_escape_sequences_on_a_terminal(local_session: dict[str, Any]) -> None:
    name, env = local_session["session"], local_session["env"]

    code, out = on_a_terminal(["logs", name, "--local"], env)
    assert code == 0
    shown = out.decode("utf-8")
    # Nothing the terminal would act on: no ESC, no CSI, no BEL, no bare carriage return, no bidi override.
    assert not ({"\x1b", "\x07", "\x9b", "\u202e"} & set(shown)), shown[-300:]
    assert "\r" not in shown.replace("\r\n", "")  # the terminal's own line ends are CR LF
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred\\x1b[0m\\x0dhidden\\u202eright-to-left\\x9b6n" in shown

    # --raw: as it is, for a user who wants the job's colours.
    code, out = on_a_terminal(["logs", name, "--local", "--raw"], env)
    assert code == 0 and "\x1b]0;owned\x07\x1b[2J" in out.decode("utf-8")

    # Piped, the log is the log: byte for byte what the job wrote (tokens masked).
    piped = subprocess.run([*hpcjup_argv(), "logs", name, "--local"], env=env, capture_output=True, timeout=60)
    assert piped.returncode == 0 and piped.stdout.startswith(HOSTILE.encode()), piped.stdout[:300]
