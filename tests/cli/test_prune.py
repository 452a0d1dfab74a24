"""`hpcjup prune`: ended sessions go (directory, cache, holder log), running ones stay."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import CLUSTER_PYTHON, local_env, run

pytestmark = pytest.mark.one_backend


def _start(name: str, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    started = run(["start", "--local", "--name", name, "--no-dask", "--workdir", str(workdir), "-d", "--json"], env)
    assert started.returncode == 0, started.stderr
    return json.loads(started.stdout)


def test_prune_removes_ended_sessions_only(laptop_env: dict[str, str], tmp_path: Path) -> None:
    env = local_env(laptop_env)
    home = Path(env["HOME"])
    sessions = home / ".hpcjup/sessions"
    cache = home / ".local/state/hpcjup"
    try:
        _start("old", env, tmp_path)
        _start("live", env, tmp_path)
        assert run(["stop", "old", "--local"], env).returncode == 0
        (tmp_path / "notebook.ipynb").write_text("{}")  # notebooks live in the workdir: prune never touches it
        assert list(cache.rglob("old.log")), "the detached holder's log"
        live_entry = next(cache.rglob("live.json"))
        (live_entry.parent / "vanished.json").write_text(live_entry.read_text())  # its directory on the host is gone

        dry = run(["prune", "--local", "--dry-run", "--json"], env)
        assert dry.returncode == 0, dry.stderr
        result = json.loads(dry.stdout)
        assert ([r["name"] for r in result["removed"]], result["forgotten"]) == (["old"], ["vanished"])
        assert (sessions / "old").is_dir(), "a dry run removes nothing"

        pruned = run(["prune", "--local"], env)
        assert pruned.returncode == 0, pruned.stderr
        assert "Removed old" in pruned.stdout and "live" not in pruned.stdout
        assert not (sessions / "old").exists() and (sessions / "live").is_dir()
        assert {p.stem for p in (cache / "sessions").rglob("*.json")} == {"live"} and not list(cache.rglob("old.log"))
        assert '"old"' in (cache / "usage" / "local.json").read_text()  # its figures stay for `hpcjup stats`
        assert (tmp_path / "notebook.ipynb").exists()
        listed = json.loads(run(["ls", "--local", "--json"], env).stdout)
        assert [s["session"] for s in listed["sessions"]] == ["live"]
        assert run(["prune", "--local"], env).stdout.strip() == "No ended sessions on local."
    finally:
        run(["stop", "--all", "--local"], env)


def _fake_env(root: Path, name: str, days_unused: float, python_from: Path | None = None) -> Path:
    """A built environment as the build leaves it (its marker and last-use file), unused for `days_unused`
    days; with `python_from`, a venv sharing that venv's packages (a session can run from it)."""
    env = root / name
    (env / "bin").mkdir(parents=True)
    if python_from is not None:
        (env / "bin" / "python").symlink_to(python_from / "bin" / "python")
        (env / "pyvenv.cfg").write_text((python_from / "pyvenv.cfg").read_text())
        for shared in ("lib", "share", "etc"):
            (env / shared).symlink_to(python_from / shared)
    (env / ".hpcjup-env.json").write_text(json.dumps({"name": name, "source": "test", "python": "3.11"}))
    used = env / ".hpcjup-used"
    used.write_text("")
    when = time.time() - days_unused * 86400
    os.utime(used, (when, when))
    return env


def test_prune_envs_removes_unused_environments_only(laptop_env: dict[str, str], tmp_path: Path) -> None:
    """`prune --envs DAYS`: old and unused goes; recently used, used by a running session, or the current
    server environment stays (a real session runs from the one in use)."""
    env = local_env(laptop_env)
    root = tmp_path / "envs"
    old = _fake_env(root, "env-0ld0000000000000", 40)
    _fake_env(root, "env-fresh00000000000", 2)
    in_use = _fake_env(root, "env-inuse00000000000", 40, python_from=Path(CLUSTER_PYTHON).parent.parent)
    _fake_env(root, "server-0ld000000000000", 40)
    (root / "server-current").symlink_to("server-0ld000000000000")
    (root / "env-0ld0000000000000.log").write_text("its build log\n")
    python = str(in_use / "bin" / "python")
    try:
        started = run(["start", "--local", "--name", "kernel", "--no-dask", "--python", python, "-d", "--json"], env)
        assert started.returncode == 0, started.stderr
        # `env ls` says which sessions use each environment, and its files on the file system.
        listed = json.loads(run(["env", "ls", "--local", "--root", str(root), "--json"], env).stdout)
        rows = {row["name"]: row for row in listed["envs"]}
        assert sorted(rows) == [old.name, "env-fresh00000000000", in_use.name, "server-0ld000000000000"]
        assert rows[in_use.name]["sessions"] == ["kernel"] and rows[old.name]["sessions"] == []
        assert rows[old.name]["files"] == 4  # as `find` counts: the env dir, bin/, the marker, the last-use file
        assert rows["server-0ld000000000000"]["current_server"]
        text = run(["env", "ls", "--local", "--root", str(root)], env).stdout
        assert any(line.startswith(in_use.name) and " kernel " in line for line in text.splitlines()), text

        dry = run(["prune", "--local", "--envs", "30", "--root", str(root), "--dry-run", "--json"], env)
        assert dry.returncode == 0, dry.stderr
        assert [e["name"] for e in json.loads(dry.stdout)["envs"]] == [old.name]
        assert old.is_dir(), "a dry run removes nothing"

        pruned = run(["prune", "--local", "--envs", "30", "--root", str(root)], env)
        assert pruned.returncode == 0, pruned.stderr
        assert f"Removed environment {old.name} (unused for 40 days)" in pruned.stdout
        left = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        assert left == ["env-fresh00000000000", "env-inuse00000000000", "server-0ld000000000000", "server-current"]
        again = run(["prune", "--local", "--envs", "30", "--root", str(root)], env)
        assert "No environment or image on local unused for 30 days." in again.stdout
    finally:
        run(["stop", "--all", "--local"], env)
    # Once its session has ended, the old env in use goes too.
    gone = run(["prune", "--local", "--envs", "30", "--root", str(root), "--json"], env)
    assert [e["name"] for e in json.loads(gone.stdout)["envs"]] == [in_use.name]
