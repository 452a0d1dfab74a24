"""Preemption and `hpcjup stop` at the same time, on the mini-cluster's real Slurm. The launcher cannot tell the
preemption's SIGTERM from stop's, so stop must end everything whatever came first, and leave no requeued job waiting
to run the session again: one session is stopped while Slurm has chosen it for preemption (its grace time runs),
another once the preemption has requeued it. The same preemption ends a third session, one without `--preemptible`:
it is not requeued, it ends as "preempted", its secrets go and its holder lets go (one preemption for the three:
each costs Slurm's grace time and its 30 s check of it). No waiting for Slurm's requeue hold (one_backend: nothing
here depends on the SSH backend; the come-back test, test_preempt.py, runs on both)."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import pytest

from tests.cli.helpers import run, wait_for
from tests.cli.test_preempt import HOST, SESSIONS, job_state, listed, preemption, start, state
from tests.cluster import neighbour, procs

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
__all__ = ["preemption"]  # the fixture, used by name below


def shown(cluster: Any, job_id: str, field: str) -> str:
    """One field of `scontrol show job` (PreemptTime: when Slurm chose it for preemption; Restarts: requeues)."""
    found = re.search(rf"\b{field}=(\S+)", cluster.slurm("scontrol", "show", "job", job_id).stdout)
    return found.group(1) if found else ""


def stop(env: dict[str, str], name: str) -> dict[str, Any]:
    stopped = run(["stop", name, *HOST, "--json"], env, timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    (outcome,) = json.loads(stopped.stdout)["stopped"]
    return outcome


def test_stop_ends_a_preempted_session_whatever_came_first(
    preemption: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    during, after, plain = (f"{kind}-{uuid.uuid4().hex[:6]}" for kind in ("grace", "requeued", "plain"))
    jobs = {name: start(laptop_env, name, "--preemptible")["job_id"] for name in (during, after)}
    jobs[plain] = start(laptop_env, plain)["job_id"]
    assert "--no-requeue" in (SESSIONS / plain / "job.sh").read_text()
    holder = json.loads(run(["url", plain, "--json"], laptop_env).stdout)["pid"]
    with neighbour.urgent_job(preemption.conf):
        # Slurm chooses every job for preemption (PreemptTime) and lets them run out their grace time: the first is
        # stopped meanwhile. It ends as stopped, and is not requeued: it had ended before the preemption's kill.
        wait_for(lambda: shown(preemption, jobs[during], "PreemptTime") not in ("", "None"), 60, "the preemption")
        outcome = stop(laptop_env, during)
        assert (outcome["was_active"], outcome["state"], outcome["reason"]) == (True, "ENDED", "stopped"), outcome
        # The second runs out its grace time, is killed and requeued: its launcher recorded the end of its run.
        wait_for(lambda: state(after)["state"] == "ended", 120, "the preempted run's end")
        wait_for(lambda: job_state(preemption, jobs[after]) == "PENDING", 60, "the job to be requeued")
        assert int(shown(preemption, jobs[after], "Restarts") or 0) == 1
        outcome = stop(laptop_env, after)
        assert (outcome["was_active"], outcome["state"]) == (True, "CANCELLED"), outcome
        # The session without --preemptible ended with the same kill, and is not requeued: over.
        wait_for(lambda: state(plain)["state"] == "ended", 60, "the plain session's launcher to record its end")
        wait_for(lambda: job_state(preemption, jobs[plain]) not in ("RUNNING", "COMPLETING"), 60, "its job to end")
        assert job_state(preemption, jobs[plain]) == "PREEMPTED"
    time.sleep(3)  # a requeue that came late would show by now
    assert job_state(preemption, jobs[during]) == "COMPLETED", "stopped during its grace time: not requeued"
    assert shown(preemption, jobs[during], "Restarts") == "0"
    assert job_state(preemption, jobs[after]) == "CANCELLED", "the requeued job does not wait to run again"
    assert not state(plain)["preemptible"]
    assert not (SESSIONS / plain / "token").exists()  # every secret goes, as for any end
    row = listed(laptop_env, plain)
    assert (row["state"], row["ended_because"], row["preemptions"]) == ("PREEMPTED", "preempted", 0), row
    wait_for(lambda: not procs.alive(holder), 90, "the holder to let go of the ended session", 0.5)
