"""How every command reaches its host is resolved once, from the flags and the settings, and passed down:
a config.toml's `ssh` applies to `ls` and `stop` as it does to `start` (it used to apply to some only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import run

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]


def _config(env: dict[str, str], text: str) -> Path:
    path = Path(env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _uses_openssh(stderr: str) -> bool:
    return "ssh master" in stderr  # OpenSSH's ControlMaster is started or reused; paramiko has none


def test_the_configured_ssh_backend_applies_to_every_command(minicluster: Any, laptop_env: dict[str, str]) -> None:
    env = {k: v for k, v in laptop_env.items() if k != "HPCJUP_SSH"}
    assert _uses_openssh(run(["-v", "ls", *HOST], env).stderr)  # the default: OpenSSH where ssh exists
    _config(env, '[defaults]\nssh = "paramiko"\n')
    for command in (["ls", *HOST], ["stop", "--all", *HOST], ["logs", "nosuchsession", *HOST]):
        result = run(["-v", *command], env)
        assert not _uses_openssh(result.stderr), (command, result.stderr)
    assert _uses_openssh(run(["-v", "ls", *HOST, "--ssh", "openssh"], env).stderr)  # the flag wins


def test_a_broken_config_does_not_keep_stop_from_working(minicluster: Any, laptop_env: dict[str, str]) -> None:
    """stop, ls and prune must always work; start and doctor, which read the whole profile, refuse it."""
    path = _config(laptop_env, '[defaults]\nnodes = "two"\n')
    listed = run(["ls", *HOST, "--json"], laptop_env)
    assert listed.returncode == 0 and str(path) in listed.stderr, listed.stderr
    assert run(["stop", "--all", *HOST], laptop_env).returncode == 0
    started = run(["start", *HOST, "--json", "-d"], laptop_env)
    assert started.returncode == ExitCode.USAGE and str(path) in started.stdout
