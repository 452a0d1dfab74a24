"""`hpcjup stop` cancels a recorded worker job only while it carries the name hpcjup gave it (issue 23, item 3).

On the real mini-cluster: the session's dask/jobs file names the user's own `sbatch --wrap 'sleep 300' -J
production-run` job (written into the file, as a compromised or old submit wrapper would): stop leaves that job
running and says so, and still cancels the recorded job named as the session's scale-out job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cli.helpers import run, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
NAME = "stopnames"


def submit(minicluster: Any, job_name: str) -> str:
    """A job of the cluster user's own, submitted by hand as a Lab terminal would: its id."""
    result = minicluster.run_as_user(["sbatch", "--parsable", "-t", "5", "-J", job_name, "--wrap", "sleep 300"])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def states(minicluster: Any) -> dict[str, str]:
    return {job["id"]: job["state"] for job in minicluster.active_jobs()}


@pytest.fixture
def own_jobs(minicluster: Any) -> Iterator[list[str]]:
    """The ids of the jobs this test submits by hand; cancelled at the end (only these: others share the cluster)."""
    ids: list[str] = []
    yield ids
    if ids:
        minicluster.run_as_user(["scancel", "--", *ids])


def test_stop_leaves_a_recorded_job_named_otherwise_running(
    minicluster: Any, laptop_env: dict[str, str], own_jobs: list[str]
) -> None:
    started = run(["start", *HOST, "--name", NAME, "--time", "10", "--no-dask", "-d", "--json"], laptop_env)
    assert started.returncode == 0, started.stderr
    session = json.loads(started.stdout)
    production = submit(minicluster, "production-run")
    scale = submit(minicluster, f"hpcjup+{NAME}+scale")
    own_jobs += [production, scale]
    # What the session's submit wrapper records (dask/jobs, one id a line, 0600), here naming the user's own job.
    write = 'umask 077 && mkdir -p "$1/dask" && printf "%s\\n%s\\n" "$2" "$3" > "$1/dask/jobs"'
    path = f"/home/hpcuser/.hpcjup/sessions/{NAME}"
    written = minicluster.run_as_user(["sh", "-c", write, "sh", path, production, scale])
    assert written.returncode == 0, written.stderr

    stopped = run(["stop", NAME, *HOST, "--json"], laptop_env)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not {session["job_id"], scale} & set(states(minicluster)), 60, "the session's jobs to end")
    assert states(minicluster).get(production) in ("RUNNING", "PENDING"), "stop cancelled the user's own job"
    [outcome] = json.loads(stopped.stdout)["stopped"]
    assert outcome["workers_cancelled"] == [scale] and outcome["workers_spared"] == [production]
