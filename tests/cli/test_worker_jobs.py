"""A session's worker jobs are the ones it recorded: `stop` never touches another session's jobs."""

from __future__ import annotations

import json
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import run, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
SHORT = ["--time", "10", "--idle-timeout", "0", "-d", "--json"]


def start(env: dict[str, str], name: str, *extra: str) -> dict[str, Any]:
    result = run(["start", *HOST, "--name", name, *SHORT, *extra], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def states(minicluster: Any) -> dict[str, str]:
    """Job id -> state of the cluster user's active jobs."""
    return {job["id"]: job["state"] for job in minicluster.active_jobs()}


def sbatch_wrapper(minicluster: Any, session: str, *args: str) -> tuple[int, str, str]:
    """Run the session's sbatch wrapper (what a notebook's SLURMCluster calls) as the cluster user."""
    result = minicluster.run_as_user([str(SESSIONS / session / "dask/bin/sbatch"), *args])
    return result.returncode, result.stdout, result.stderr


def test_stop_ends_only_the_jobs_the_session_submitted(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    lab = start(laptop_env, "lab", "--workers", "0")  # Dask without workers: the group's job is its only worker
    others = [start(laptop_env, name, "--no-dask") for name in ("lab-c927", "lab-2")]

    scaled = run(["scale", "lab", "batch", "1", *HOST, "--json"], laptop_env)
    assert scaled.returncode == 0, scaled.stderr
    group_ids = json.loads(scaled.stdout)["jobs"]
    assert len(group_ids) == 1
    assert json.loads((SESSIONS / "lab/groups.json").read_text())["batch"]["job_ids"] == group_ids
    names = {job["id"]: job["name"] for job in minicluster.active_jobs()}
    assert names[group_ids[0]] == "hpcjup+lab+batch"

    # A notebook's jobs go through the session's sbatch wrapper: output and exit code unchanged; the id is recorded
    # for the session's Dask scale-out jobs (named hpcjup+lab+scale, as dask-jobqueue names them from its config).
    script = SESSIONS / "lab/dask/scale-test.sh"
    script.write_text("#!/bin/sh\n#SBATCH -J hpcjup+lab+scale\n#SBATCH -t 5\nsleep 600\n")
    shutil.chown(script, "hpcuser", "hpcuser")
    code, out, err = sbatch_wrapper(minicluster, "lab", str(script))
    assert code == 0, err
    plain = re.fullmatch(r"Submitted batch job ([0-9]+)\n", out)
    assert plain, out
    code, out, err = sbatch_wrapper(minicluster, "lab", "--parsable", str(script))
    assert code == 0 and re.fullmatch(r"[0-9]+\n", out), (out, err)
    notebook_ids = [plain[1], out.strip()]
    code, out, err = sbatch_wrapper(minicluster, "lab", "--parsable", "-t", "5", "-J", "nb", "--wrap", "sleep 600")
    assert code == 0, err
    own_id = out.strip()  # the user's own job: never recorded, never cancelled by stop
    code, out, err = sbatch_wrapper(minicluster, "lab", "-p", "nosuch", "--wrap", "true")
    assert (code, out) == (1, "") and "invalid partition" in err.lower(), "a refusal passes through as it was"
    jobs_file = SESSIONS / "lab/dask/jobs"
    assert jobs_file.read_text().split() == notebook_ids
    assert stat.S_IMODE(jobs_file.stat().st_mode) == 0o600

    stopped = run(["stop", "lab", *HOST], laptop_env)
    assert stopped.returncode == 0, stopped.stderr
    lab_jobs = {lab["job_id"], *group_ids, *notebook_ids}
    wait_for(lambda: not lab_jobs & set(states(minicluster)), 60, "lab's jobs to end")
    # The other sessions' main jobs (hpcjup-lab-c927, hpcjup-lab-2 start with hpcjup-lab-) go on running, and so
    # does the job the user submitted by hand.
    still = states(minicluster)
    assert still.get(own_id) in ("RUNNING", "PENDING")
    assert [still.get(info["job_id"]) for info in others] == ["RUNNING", "RUNNING"]
    for info in others:  # tidy up (their holders); clean_jobs cancels whatever is left
        run(["stop", info["session"], *HOST], laptop_env)


def test_a_group_named_like_another_session_is_its_own(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    # Group `2` of `ab` was once named hpcjup-ab-2: the very name of session ab-2's main job.
    main = start(laptop_env, "ab", "--workers", "0")
    other = start(laptop_env, "ab-2", "--no-dask")
    scaled = run(["scale", "ab", "2", "1", "--partition", "batch", *HOST, "--json"], laptop_env)
    assert scaled.returncode == 0, scaled.stderr
    ids = json.loads(scaled.stdout)["jobs"]
    assert len(ids) == 1 and other["job_id"] not in ids
    assert json.loads(run(["scale", "ab", "2", "0", *HOST, "--json"], laptop_env).stdout)["jobs"] == []
    wait_for(lambda: ids[0] not in states(minicluster), 60, "the group's job to end")
    assert states(minicluster).get(other["job_id"]) == "RUNNING"
    assert states(minicluster).get(main["job_id"]) == "RUNNING"


def test_worker_group_jobs_source_the_session_environment(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    start(laptop_env, "envy", "--workers", "0")
    setup = SESSIONS / "envy/setup.sh"
    # What a profile's modules/conda/venv lines would do, made visible in the worker job's log.
    setup.write_text('echo "hpcjup-setup-sourced in $0"\nexport HPCJUP_FROM_SETUP=1\n')
    shutil.chown(setup, "hpcuser", "hpcuser")
    setup.chmod(0o600)
    scaled = run(["scale", "envy", "batch", "1", *HOST, "--json"], laptop_env)
    assert scaled.returncode == 0, scaled.stderr
    [job_id] = json.loads(scaled.stdout)["jobs"]
    logs = SESSIONS / "envy/dask/logs"

    def log_text() -> str:
        return "".join(p.read_text(errors="replace") for p in logs.glob(f"*{job_id}*")) if logs.exists() else ""

    wait_for(lambda: "Registered to" in log_text(), 90, "the group's worker to join the scheduler")
    assert "hpcjup-setup-sourced" in log_text(), log_text()
    run(["stop", "envy", *HOST], laptop_env)


@pytest.mark.parametrize("group", ["../escape", "a/b", "gpu\n", ".x", "a+b"])
def test_scale_refuses_a_group_name_that_is_no_plain_name(laptop_env: dict[str, str], group: str) -> None:
    result = run(["scale", "somesession", group, "1", *HOST], laptop_env)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "is not valid" in result.stderr and "letters, digits" in result.stderr
