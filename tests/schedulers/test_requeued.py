"""PBS Pro and LSF jobs requeued after a preemption (no cluster): their states as the adapters read them, and a
preemptible session whose job waits again is listed as PREEMPTED, as on Slurm (tests/cli/test_preempt.py).

Neither scheduler can run here; the answers are assembled in the recorded formats (see data/pbs/SOURCES.md and
data/lsf/SOURCES.md, rows qstat_requeued.json and bjobs_requeued.json)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.schedulers.lsf_parse import parse_bjobs
from hpcjup.schedulers.pbs_parse import hopeless, parse_qstat
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import JobReport, SessionRecord
from hpcjup.session.views import SessionView

DATA = Path(__file__).parent / "data"
PBS_IDS = ["1020.pbs-server", "1021.pbs-server", "1022.pbs-server", "1023.pbs-server"]


def recorded(path: str) -> str:
    return (DATA / path).read_text()


def test_a_requeued_pbs_job_pends_again_and_says_it_ran_before() -> None:
    found = parse_qstat(recorded("pbs/qstat_requeued.json"), PBS_IDS)
    back, again, often, going = (found[job] for job in PBS_IDS)
    # Its comment is still the run before's ("Job run at ..."): not shown as why it waits now.
    assert (back.state, back.reason, back.nodes) == (JobState.PENDING, "requeued after 1 run", None)
    assert (again.state, again.reason) == (
        JobState.PENDING,
        "requeued after 2 runs: Insufficient amount of resource: ncpus (R: 1 A: 0 T: 2)",
    )
    assert again.expected_start == "Sun Dec  7 00:31:12 2025"
    # Held by the server after too many runs: pending, and waiting will not clear a system hold.
    assert often.state is JobState.PENDING and often.reason is not None and often.reason.startswith("held (s)")
    assert hopeless(often) is not None
    assert going.state is JobState.COMPLETING and going.state.active  # ending its run: not over


def test_requeued_lsf_jobs_pend_again() -> None:
    found = parse_bjobs(recorded("lsf/bjobs_requeued.json"))
    assert (found["806301"].state, found["806301"].reason) == (JobState.PENDING, "New job is waiting for scheduling")
    assert found["806302"].state is JobState.PENDING  # requeued held (brequeue -H): PSUSP
    assert found["806303"].state is JobState.RUNNING


def view(scheduler: str, status: JobStatus) -> SessionView:
    record = SessionRecord("back", "h", scheduler, status.job_id, "2026-12-01T00:00:00+00:00")
    report = JobReport("ended", reason="stopped", preemptible=True, restarts=0)
    return SessionView(record, SessionPaths("/home/u", "back"), status, report, None)


@pytest.mark.parametrize(
    ("scheduler", "status"),
    [
        ("pbs", lambda: parse_qstat(recorded("pbs/qstat_requeued.json"), PBS_IDS)["1020.pbs-server"]),
        ("lsf", lambda: parse_bjobs(recorded("lsf/bjobs_requeued.json"))["806301"]),
    ],
)
def test_ls_shows_a_requeued_preemptible_session_as_preempted(scheduler: str, status: object) -> None:
    shown = view(scheduler, status()).to_dict()  # type: ignore[operator]
    assert (shown["state"], shown["preemptions"], shown["preemptible"]) == ("PREEMPTED", 1, True)
    assert shown["ended_because"] is None, "not over: it waits to run again"
