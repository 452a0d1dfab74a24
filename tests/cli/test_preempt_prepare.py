"""A preemption while the session's environment is being prepared on the node (the profile's setup lines run, before
the launcher and Jupyter), on the mini-cluster's real Slurm: the job is requeued, comes back after Slurm's requeue
hold (cred_expire), and the `start` that was waiting for it ends with a URL that answers. one_backend: nothing here depends on the
SSH backend; it waits for the requeue hold once (about 20 s here)."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import http_get, run, wait_for
from tests.cli.test_preempt import HOST, SESSIONS, job_state, listed, preemption
from tests.cluster import neighbour
from tests.cluster.files import PREEMPTIBLE

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
__all__ = ["preemption"]  # the fixture, used by name below
HOME = Path("/home/hpcuser")


def test_a_preemption_while_the_environment_is_prepared_brings_the_job_back(
    preemption: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    name = f"prep-{uuid.uuid4().hex[:6]}"
    marker = HOME / f".hpcjup-test-{name}"
    # The first run's preparation takes a while (a module load, a copy): it marks its start, then sleeps; the
    # run after the requeue (SLURM_RESTART_COUNT 1) prepares at once.
    line = f'if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then : > {marker}; sleep 120; fi'
    config = Path(laptop_env["XDG_CONFIG_HOME"], "hpcjup", "config.toml")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text((config.read_text() if config.exists() else "") + f"\n[profiles.prep]\nsetup = [{line!r}]\n")
    argv = ["start", *HOST, "-d", "--json", "--no-dask", "--name", name, "-p", PREEMPTIBLE, "--time", "30"]
    box: dict[str, Any] = {}
    starting = threading.Thread(
        target=lambda: box.update(done=run([*argv, "--preemptible", "--profile", "prep"], laptop_env, timeout=420))
    )
    starting.start()
    try:
        wait_for(marker.exists, 120, "the job to be preparing the session's environment")
        job = json.loads((SESSIONS / name / "session.json").read_text())["job_id"]
        with neighbour.urgent_job(preemption.conf):
            wait_for(lambda: job_state(preemption, job) == "PENDING", 90, "the job to be requeued")
        assert not (SESSIONS / name / "connection.json").exists(), "preempted before Jupyter ran"
        assert listed(laptop_env, name)["state"] == "PENDING"
        starting.join(timeout=400)  # Slurm's requeue hold, then the run after it
        assert not starting.is_alive(), "start waited for the requeued job's run"
    finally:
        marker.unlink(missing_ok=True)
    done = box["done"]
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["job_id"] == job
    conn = json.loads((SESSIONS / name / "connection.json").read_text())
    assert conn["restarts"] == 1, "the run after the requeue"
    assert http_get(f"http://127.0.0.1:{info['local_port']}/api/status", info["token"])[0] == 200
    assert run(["stop", name, *HOST], laptop_env).returncode == 0
