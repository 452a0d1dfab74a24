"""A session without `--preemptible`, preempted on the mini-cluster's real Slurm: it is not requeued, it ends as
"preempted", its secrets go and its holder lets go. Nothing here depends on the SSH backend (one_backend): the
come-back test (test_preempt.py) runs on both."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.cli.helpers import run, wait_for
from tests.cli.test_preempt import SESSIONS, job_state, listed, preemption, start, state
from tests.cluster import neighbour, procs

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
__all__ = ["preemption"]  # the fixture, used by name below


def test_a_session_without_preemptible_is_not_requeued(
    preemption: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    name = f"plain-{uuid.uuid4().hex[:6]}"
    info = start(laptop_env, name)
    assert "--no-requeue" in (SESSIONS / name / "job.sh").read_text()
    holder = json.loads(run(["url", name, "--json"], laptop_env).stdout)["pid"]
    with neighbour.urgent_job(preemption.conf):
        wait_for(lambda: state(name)["state"] == "ended", 120, "the launcher to record its end")
        wait_for(lambda: job_state(preemption, info["job_id"]) not in ("RUNNING", "COMPLETING"), 60, "the job to end")
        assert job_state(preemption, info["job_id"]) == "PREEMPTED"  # not requeued: over
    assert not state(name)["preemptible"]
    assert not (SESSIONS / name / "token").exists()  # every secret goes, as for any end
    row = listed(laptop_env, name)
    assert (row["state"], row["ended_because"], row["preemptions"]) == ("PREEMPTED", "preempted", 0), row
    wait_for(lambda: not procs.alive(holder), 90, "the holder to let go of the ended session", 0.5)
