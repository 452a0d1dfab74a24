"""`hpcjup prune`: ended sessions go (directory, cache, holder log), running ones stay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import local_env, run

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
