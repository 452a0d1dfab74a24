"""`hpcjup start --dry-run` on the real Slurm mini-cluster: the script, Slurm's own estimate, nothing submitted."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import run
from tests.cli.test_isolation import remote_commands

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")


def sessions_on_the_cluster() -> set[str]:
    return {p.name for p in SESSIONS.iterdir()} if SESSIONS.is_dir() else set()


def test_a_dry_run_shows_the_script_and_slurms_estimate_and_submits_nothing(
    minicluster: Any, laptop_env: dict[str, str]
) -> None:
    jobs, sessions = {j["id"] for j in minicluster.jobs()}, sessions_on_the_cluster()
    args = ["-v", "start", *HOST, "-p", "booster", "-t", "30", "--directive=--comment=dry", "--dry-run", "--no-dask"]
    result = run(args, laptop_env)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --partition=booster" in result.stdout and "#SBATCH --comment=dry" in result.stdout
    assert "exec " in result.stdout and "launcher.py" in result.stdout  # the whole script, as start renders it
    [line] = [line for line in result.stdout.splitlines() if line.startswith("booster: ")]
    assert "Slurm would start it" in line and "of 2 nodes idle" in line
    assert not {j["id"] for j in minicluster.jobs()} - jobs, "sbatch --test-only submits nothing"
    name = re.search(r"^# The job script for session (lab-[0-9a-f]+)", result.stdout, re.MULTILINE)
    assert name and f"/sessions/{name.group(1)}/launcher.py" in result.stdout
    assert sessions_on_the_cluster() == sessions, "no session directory"
    assert not [p for p in Path(laptop_env["HOME"]).rglob("*") if name.group(1) in str(p)], "nothing cached"
    # Besides the detection probe (home + batch system), one remote command asks everything.
    assert len(remote_commands(result.stderr)) <= 2, "\n".join(remote_commands(result.stderr))


def test_json_gives_one_object_with_each_partitions_verdict(minicluster: Any, laptop_env: dict[str, str]) -> None:
    result = run(["start", *HOST, "-p", "booster,batch", "-N", "2", "--dry-run", "--json"], laptop_env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["scheduler"], data["host"]) == ("slurm", "minicluster")
    assert data["script"].startswith("#!/bin/bash -l\n") and "#SBATCH --nodes=2" in data["script"]
    assert [p["name"] for p in data["partitions"]] == ["booster", "batch"]
    for partition in data["partitions"]:
        assert partition["refusal"] is None and partition["total_nodes"] == 2
        assert len(partition["estimate"]) == 19 and partition["estimate_relative"]  # "2026-12-02T01:46:22"
        assert partition["time_limit_seconds"] is None  # the mini-cluster's partitions have no limit


def test_more_nodes_than_the_partition_has_is_refused_in_slurms_words(
    minicluster: Any, laptop_env: dict[str, str]
) -> None:
    result = run(["start", *HOST, "-p", "booster", "-N", "5", "--dry-run", "--json"], laptop_env)
    assert result.returncode == ExitCode.SUBMIT, result.stderr
    data = json.loads(result.stdout)
    [booster] = data["partitions"]
    assert booster["refusal"] == "Requested node configuration is not available" and booster["estimate"] is None
    assert "--nodes" in booster["hint"] and "#SBATCH --nodes=5" in data["script"]
    assert data["error"]["exit_code"] == ExitCode.SUBMIT and "Requested node configuration" in data["error"]["message"]
    text = run(["start", *HOST, "-p", "booster", "-N", "5", "--dry-run"], laptop_env)
    assert text.returncode == ExitCode.SUBMIT
    assert "Slurm would not take the job (booster: Requested node configuration is not available)" in text.stderr
    assert "hint: Ask for less (--nodes" in text.stderr


def test_an_unknown_partition_among_several_fails_the_dry_run(minicluster: Any, laptop_env: dict[str, str]) -> None:
    """sbatch refuses `-p nosuch,booster` as a whole: the dry run says so for nosuch and exits 5."""
    result = run(["start", *HOST, "-p", "nosuch,booster", "--dry-run", "--json"], laptop_env)
    assert result.returncode == ExitCode.SUBMIT, result.stderr
    nosuch, booster = json.loads(result.stdout)["partitions"]
    assert "invalid partition specified: nosuch" in nosuch["refusal"] and "sinfo -s" in nosuch["hint"]
    assert booster["refusal"] is None and booster["estimate"]


def test_directives_come_from_the_profile_unless_the_command_line_gives_them(
    minicluster: Any, laptop_env: dict[str, str]
) -> None:
    config = Path(laptop_env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[profiles.tagged]\ndirectives = ["--comment=from-profile", "--nice=10"]\n')
    base = ["start", *HOST, "--profile", "tagged", "--dry-run", "--json", "--no-dask"]
    script = json.loads(run(base, laptop_env).stdout)["script"]
    assert "#SBATCH --comment=from-profile\n#SBATCH --nice=10\n" in script
    script = json.loads(run([*base, "--directive=--comment=from-flag"], laptop_env).stdout)["script"]
    assert "#SBATCH --comment=from-flag" in script and "from-profile" not in script
