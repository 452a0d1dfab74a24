"""`ls` on the real Slurm: a job that never ran is asked about once; later listings show Slurm's last answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hpcjup.schedulers.base import JobState
from tests.cli.helpers import run
from tests.cli.test_isolation import HOST, SESSIONS, remote_commands, write_as_user

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]


def test_a_job_cancelled_while_pending_is_asked_about_once(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """A held job cancelled before it ran (no state.json): the first `ls` asks Slurm, the second only reads."""
    held = minicluster.run_as_user(["sbatch", "--hold", "--parsable", "-J", "hpcjup-never-ran", "--wrap", "true"])
    assert held.returncode == 0, held.stderr
    job_id = held.stdout.strip().split(";")[0]
    directory = SESSIONS / "never-ran"
    try:
        minicluster.run_as_user(["mkdir", "-p", str(directory)])
        record = {"name": "never-ran", "host": "minicluster", "scheduler": "slurm", "job_id": job_id}
        write_as_user(directory / "session.json", json.dumps({**record, "created_at": "2026-12-01T00:00:00+00:00"}))
        assert minicluster.slurm("scancel", job_id).returncode == 0  # while it pends: no state.json, ever

        first = run(["-v", "ls", *HOST, "--json"], laptop_env)
        assert first.returncode == 0, first.stderr
        row = next(s for s in json.loads(first.stdout)["sessions"] if s["session"] == "never-ran")
        assert row["state"] == "CANCELLED"
        assert len(remote_commands(first.stderr)) == 2, first.stderr  # the records, then squeue (and sacct)
        # Other sessions on the shared cluster that may still run are asked about: a squeue for them.
        others = [s for s in json.loads(first.stdout)["sessions"] if s["session"] != "never-ran"]
        still_asked = any(s["state"] in {state.value for state in JobState if state.active} for s in others)

        second = run(["-v", "ls", *HOST, "--json"], laptop_env)
        assert second.returncode == 0, second.stderr
        assert next(s for s in json.loads(second.stdout)["sessions"] if s["session"] == "never-ran") == row
        assert len(remote_commands(second.stderr)) == (2 if still_asked else 1), second.stderr  # the records only
    finally:
        minicluster.run_as_user(["rm", "-rf", str(directory)])
