"""Shell completions: the committed scripts are current, and they complete in the real shells."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcjup.session.store import CacheEntry, LocalStore
from tests.cli.helpers import hpcjup_argv

pytestmark = pytest.mark.one_backend

ROOT = Path(__file__).resolve().parents[2]
SHELLS = ("bash", "zsh", "fish")


def _env(tmp_path: Path) -> dict[str, str]:
    bindir = Path(hpcjup_argv()[0]).parent if len(hpcjup_argv()) == 1 else Path(sys.executable).parent
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PATH": f"{bindir}:{os.environ['PATH']}",
    }
    LocalStore(tmp_path / "state" / "hpcjup").save("juwels", "analysis", CacheEntry(host="juwels"))
    return env


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_script_is_current(shell: str) -> None:
    generated = subprocess.run(
        hpcjup_argv(),
        env={**os.environ, "_HPCJUP_COMPLETE": f"{shell}_source"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (ROOT / "completions" / f"hpcjup.{shell}").read_text().rstrip() == generated.rstrip(), (
        "regenerate: _HPCJUP_COMPLETE=<shell>_source hpcjup > completions/hpcjup.<shell>"
    )


def _require(shell: str) -> None:
    if shutil.which(shell) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{shell} is required in CI (tests/cluster/install.sh installs it)")
        pytest.skip(f"{shell} not installed")
    if not shutil.which("hpcjup", path=_env.__globals__["os"].environ["PATH"]) and len(hpcjup_argv()) > 1:
        pytest.skip("the hpcjup console script is not installed (pip install -e .)")


def test_bash_completes_commands_and_cached_sessions(tmp_path: Path) -> None:
    _require("bash")
    script = f"""
source {ROOT}/completions/hpcjup.bash
COMP_WORDS=(hpcjup st); COMP_CWORD=1; _hpcjup_completion hpcjup; echo "${{COMPREPLY[@]}}"
COMPREPLY=(); COMP_WORDS=(hpcjup stop an); COMP_CWORD=2; _hpcjup_completion hpcjup; echo "${{COMPREPLY[@]}}"
"""
    out = subprocess.run(
        ["bash", "-c", script], env=_env(tmp_path), capture_output=True, text=True, timeout=30
    ).stdout.splitlines()
    assert sorted(out[0].split()) == ["start", "stats", "stop"]
    assert out[1].split() == ["analysis"]


def test_zsh_completes_commands(tmp_path: Path) -> None:
    _require("zsh")
    # zsh's completion widgets need a live line editor; drive the same protocol the script uses.
    script = f"""source {ROOT}/completions/hpcjup.zsh 2>/dev/null; whence -w _hpcjup_completion
words=(hpcjup stop an); CURRENT=3
env COMP_WORDS="${{words[*]}}" COMP_CWORD=$((CURRENT-1)) _HPCJUP_COMPLETE=zsh_complete hpcjup"""
    out = subprocess.run(
        ["zsh", "-f", "-c", f"autoload -U compinit; compinit -u; {script}"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "_hpcjup_completion: function" in out
    assert "analysis" in out


def test_fish_completes_commands_and_cached_sessions(tmp_path: Path) -> None:
    _require("fish")
    script = f"source {ROOT}/completions/hpcjup.fish; complete -C 'hpcjup st'; complete -C 'hpcjup attach an'"
    out = subprocess.run(
        ["fish", "--no-config", "-c", script], env=_env(tmp_path), capture_output=True, text=True, timeout=30
    ).stdout.split()
    assert "start" in out and "stop" in out and "analysis" in out
