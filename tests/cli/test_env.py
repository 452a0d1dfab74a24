"""`hpcjup env ...` end to end: the real CLI, real SSH to the mini-cluster as hpcuser, real uv and PyPI."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import Foreground, hpcjup_argv, run, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]

HOST = ["--host", "minicluster"]
ROOT = ".hpcjup/envs-test"  # the same test root as tests/envs: envs are named by content, uv's cache stays warm


def _spec(tmp_path: Path, files: dict[str, str]) -> Path:
    directory = tmp_path / f"spec-{secrets.token_hex(3)}"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def _remote(minicluster: Any, script: str) -> str:
    """A shell snippet run as hpcuser in its home; its stdout."""
    return minicluster.run_as_user(["sh", "-c", f'cd "$HOME" && {script}']).stdout


def _left(minicluster: Any, marker: str) -> list[str]:
    """Temporary, staging and lock entries under the test root, and processes of the build marked `marker`."""
    entries = _remote(minicluster, f'ls -A {ROOT} | grep -e "^\\.tmp-" -e "^\\.stage-" -e "^\\.lock-" || true').split()
    procs = _remote(minicluster, f"pgrep -u hpcuser -f '[{marker[0]}]{marker[1:]}' || true").split()
    return entries + [f"process {pid}" for pid in procs]


def _interrupted_build(minicluster: Any, laptop_env: dict[str, str], tmp_path: Path, sig: int) -> tuple[int, str]:
    marker = f"sleep-{secrets.token_hex(4)}"
    # postBuild runs long and names itself in `ps`, so the test can see that it is gone afterwards.
    spec = _spec(
        tmp_path,
        {
            "requirements.txt": f"# {marker}\nsix\n",
            "postBuild": f"#!/bin/sh\nexec python3 -c 'import time; time.sleep(120)' {marker}\n",
        },
    )
    proc = subprocess.Popen(
        [*hpcjup_argv(), "env", "build", str(spec), *HOST, "--root", ROOT],
        env=laptop_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 90
    while "postBuild" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    assert "postBuild" in seen, seen
    wait_for(
        lambda: _remote(minicluster, f"pgrep -u hpcuser -f '[{marker[0]}]{marker[1:]}' || true").strip(),
        20,
        "postBuild to run",
    )
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    # The build's watchdog saw the laptop's end of stdin close: the build stops and removes what it began.
    try:
        wait_for(lambda: not _left(minicluster, marker), 30, "the build to clean up")
    except RuntimeError:
        pass
    assert _left(minicluster, marker) == []
    return proc.returncode, seen + err


def test_ctrl_c_during_a_build_leaves_nothing(minicluster: Any, laptop_env: dict[str, str], tmp_path: Path) -> None:
    code, err = _interrupted_build(minicluster, laptop_env, tmp_path, signal.SIGINT)
    assert code == 130, err
    assert "left nothing behind" in err


def test_a_killed_laptop_leaves_nothing(minicluster: Any, laptop_env: dict[str, str], tmp_path: Path) -> None:
    code, _ = _interrupted_build(minicluster, laptop_env, tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL


def test_build_ls_lock_rm(minicluster: Any, laptop_env: dict[str, str], tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"requirements.txt": f"# {secrets.token_hex(4)}\nsix\n"})
    built = run(["env", "build", str(spec), *HOST, "--root", ROOT, "--json"], laptop_env)
    assert built.returncode == 0, built.stderr
    info = json.loads(built.stdout)
    assert info["built"] is True and info["path"].endswith(info["name"])
    assert "resolving" in built.stderr and "six==" in built.stderr  # phases and uv's own lines, plain off a terminal

    listed = run(["env", "ls", *HOST, "--root", ROOT, "--json"], laptop_env)
    envs = {env["name"]: env for env in json.loads(listed.stdout)["envs"]}
    mine = envs[info["name"]]
    assert mine["meta"]["source"] == str(spec) and mine["meta"]["python"].startswith("3.11")
    assert mine["kb"] > 0 and abs(mine["last_used"] - time.time()) < 120
    # Its tree dropped after packing: thousands of files inside, a handful on the shared filesystem.
    assert mine["tree"] is False and mine["inside_files"] > 100 and mine["shared_files"] <= 10, mine
    text = run(["env", "ls", *HOST, "--root", ROOT], laptop_env).stdout
    row = next(line.split() for line in text.splitlines() if line.startswith(info["name"]))
    assert row[6:8] == [str(mine["inside_files"]), str(mine["shared_files"])], text  # FILES, SHARED

    locked = run(["env", "lock", str(spec), *HOST, "--root", ROOT, "--json"], laptop_env)
    assert locked.returncode == 0, locked.stderr
    lock = (spec / "hpcjup.lock").read_text()
    assert "six==" in lock and "--hash=sha256:" in lock
    # The spec with its lock is another spec: it builds exactly the lock, as a new env.
    # env_mode direct keeps its tree (it runs in place): run below without a copy.
    direct = {**laptop_env, "HPCJUP_ENV_MODE": "direct"}
    again = json.loads(run(["env", "build", str(spec), *HOST, "--root", ROOT, "--json"], direct).stdout)
    assert again["name"] != info["name"] and again["built"] is True
    frozen = _remote(minicluster, f"{again['path']}/bin/python -c 'import six; print(six.__version__)'")
    assert frozen.strip() in lock

    gone = run(["env", "rm", info["name"], again["name"], *HOST, "--root", ROOT, "--json"], laptop_env)
    assert gone.returncode == 0, gone.stderr
    assert not _remote(minicluster, f"ls -d {ROOT}/{info['name']} {ROOT}/{again['name']} 2>/dev/null || true").strip()
    missing = run(["env", "rm", info["name"], *HOST, "--root", ROOT], laptop_env)
    assert missing.returncode == 8 and "No environment" in missing.stderr


def test_a_spec_that_does_not_resolve_exits_11(minicluster: Any, laptop_env: dict[str, str], tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"requirements.txt": f"# {secrets.token_hex(4)}\nhpcjup-no-such-package-0815\n"})
    done = run(["env", "build", str(spec), *HOST, "--root", ROOT, "--json"], laptop_env)
    assert done.returncode == 11, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["error"] == "EnvBuildError" and "hpcjup-no-such-package-0815" in error["details"]


def test_refused_spec_files_exit_2(minicluster: Any, laptop_env: dict[str, str], tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"requirements.txt": "six\n", "apt.txt": "curl\n"})
    done = run(["env", "build", str(spec), *HOST, "--root", ROOT], laptop_env)
    assert done.returncode == 2 and "apt.txt" in done.stderr and "root" in done.stderr


def test_server_env_runs_a_session_and_cannot_be_removed_under_it(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """The built-in server spec builds on the cluster, JupyterLab runs from it in a real job, and `env rm`
    refuses it while that session runs."""
    # Its Python named as `python` runs in place: env_mode direct keeps (or brings back) its tree.
    direct = {**laptop_env, "HPCJUP_ENV_MODE": "direct"}
    built = run(["env", "build", "--server", *HOST, "--root", ROOT, "--json"], direct, timeout=600)
    assert built.returncode == 0, built.stderr
    server = json.loads(built.stdout)
    assert server["name"].startswith("server-")
    python = f"{server['path']}/bin/python"
    fg = Foreground(
        ["start", *HOST, "--python", python, "--partition", "booster", "--time", "10", "--no-browser", "--json"],
        laptop_env,
    )
    try:
        assert "session" in fg.info, fg.info
        refused = run(["env", "rm", server["name"], *HOST, "--root", ROOT], laptop_env)
        assert refused.returncode == 2, refused.stderr
        assert fg.info["session"] in refused.stderr and "Stop" in refused.stderr
    finally:
        run(["stop", fg.info.get("session", ""), *HOST], laptop_env)
        fg.kill()


def test_local_builds_the_same_env_with_the_laptops_uv(
    minicluster: Any, laptop_env: dict[str, str], tmp_path: Path
) -> None:
    """`--local`: the same spec, the same rule, the laptop's own uv (nothing uploaded); on the same Python X.Y
    and platform it is the very environment the cluster builds."""
    spec = _spec(tmp_path, {"requirements.txt": f"# {secrets.token_hex(4)}\nsix\n"})
    root = tmp_path / "local-envs"
    local = run(["env", "build", str(spec), "--local", "--root", str(root), "--json"], laptop_env)
    assert local.returncode == 0, local.stderr
    here = json.loads(local.stdout)
    assert here["built"] and Path(here["path"], "bin", "python").exists()
    assert not (Path(laptop_env["HOME"]) / ".hpcjup" / "bin").exists()  # no uv brought to this machine
    remote = json.loads(run(["env", "build", str(spec), *HOST, "--root", ROOT, "--json"], laptop_env).stdout)
    assert remote["name"] == here["name"]
