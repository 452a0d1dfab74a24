"""`start --preemptible` (issue 22): the job is submitted requeueable where the batch system can bring a
preempted job back, not requeueable otherwise, and refused (exit 2) where it cannot come back."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcjup.errors import DamagedDocument, ExitCode, UsageError
from hpcjup.job import LAUNCHER_PATH
from hpcjup.schedulers import get_scheduler
from hpcjup.schedulers.base import JobSpec
from hpcjup.session.record import JobReport
from tests.cli.helpers import run

pytestmark = pytest.mark.one_backend

#: Each batch system's directive for a requeueable job, and for one that is not.
RERUN = {
    "slurm": ("#SBATCH --requeue", "#SBATCH --no-requeue"),
    "pbs": ("#PBS -r y", "#PBS -r n"),
    "lsf": ("#BSUB -r", "#BSUB -rn"),
}


@pytest.mark.parametrize("name", sorted(RERUN))
def test_a_preemptible_session_is_requeueable_and_only_it(name: str) -> None:
    yes, no = RERUN[name]
    preemptible = get_scheduler(name).render(JobSpec(name="x", session_dir="/s", command=["l"], requeue=True))
    plain = get_scheduler(name).render(JobSpec(name="x", session_dir="/s", command=["l"]))
    assert yes in preemptible.splitlines() and no not in preemptible.splitlines()
    assert no in plain.splitlines() and yes not in plain.splitlines()


def test_slurm_tells_the_launcher_how_often_the_job_ran_before() -> None:
    script = get_scheduler("slurm").render(JobSpec(name="x", session_dir="/s", command=["l"], requeue=True))
    assert 'export HPCJUP_RESTARTS="${SLURM_RESTART_COUNT:-0}"' in script.splitlines()


@pytest.mark.parametrize("name", ["sge", "local", "none"])
def test_where_a_preempted_job_cannot_come_back_preemptible_is_refused(name: str) -> None:
    with pytest.raises(UsageError) as refused:
        get_scheduler(name).check_preemptible()
    assert "cannot run a preemptible session" in refused.value.message
    assert "--preemptible" in (refused.value.hint or "")


def test_sge_says_why() -> None:
    with pytest.raises(UsageError, match="suspended"):
        get_scheduler("sge").check_preemptible()


def test_start_preemptible_on_this_machine_is_a_usage_error(laptop_env: dict[str, str]) -> None:
    result = run(
        ["start", "--local", "--python", "/opt/hpcjup-cluster-env/bin/python", "--preemptible", "--json"], laptop_env
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    error = json.loads(result.stdout or result.stderr)
    assert "cannot run a preemptible session" in json.dumps(error), error


# -- what the laptop and the launcher read of a run before: anything on the cluster, never a crash ---------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(preemptible=JSON, restarts=JSON, state=st.sampled_from(["ended", "running", "bogus"]), reason=JSON)
def test_state_json_of_any_shape_is_read_or_refused(preemptible: Any, restarts: Any, state: str, reason: Any) -> None:
    raw = json.dumps({"state": state, "reason": reason, "preemptible": preemptible, "restarts": restarts}).encode()
    try:
        report = JobReport.from_json(raw)
    except DamagedDocument:
        return
    assert isinstance(report.preemptible, bool) and isinstance(report.restarts, int) and report.restarts >= 0
    assert report.may_return == (report.ended and report.preemptible and report.reason == "stopped")


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()),
    given_env=st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6),
)
def test_the_launcher_counts_runs_from_anything(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, given_env: str
) -> None:
    import os

    sys.path.insert(0, str(LAUNCHER_PATH.parent))  # the job files import each other from beside themselves
    from rerun import restarts

    path = tmp_path_factory.mktemp("run") / "state.json"
    path.write_bytes(data)
    saved = os.environ.get("HPCJUP_RESTARTS")
    os.environ["HPCJUP_RESTARTS"] = given_env
    try:
        count = restarts(str(path), "4242")
    finally:
        os.environ.pop("HPCJUP_RESTARTS")
        if saved is not None:
            os.environ["HPCJUP_RESTARTS"] = saved
    assert isinstance(count, int) and count >= 0
    if given_env.isascii() and given_env.isdigit():
        assert count == int(given_env)


@pytest.mark.parametrize(("before", "count"), [({"job_id": "4242", "restarts": 2}, 3), ({"job_id": "1"}, 0)])
def test_without_the_schedulers_count_the_run_before_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: dict[str, Any], count: int
) -> None:
    sys.path.insert(0, str(LAUNCHER_PATH.parent))
    from rerun import restarts

    monkeypatch.delenv("HPCJUP_RESTARTS", raising=False)
    (tmp_path / "state.json").write_text(json.dumps(before))
    assert restarts(str(tmp_path / "state.json"), "4242") == count
