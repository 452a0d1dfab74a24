"""Why an adaptive group's jobs pend, as `ls` shows it (no cluster): the loop's status file names its waiting jobs,
`ls` asks the scheduler about them in the query it makes anyway, and the group's line carries the scheduler's reason.

The squeue lines are in the format the Slurm adapter asks for (slurm_sh.SQUEUE_FORMAT). PartitionTimeLimit is as
the mini-cluster's Slurm 22.05 printed it (tests/cli/test_adaptive.py meets it for real); the QOS and
association reasons cannot be made real without slurmdbd, so their lines are assembled with the reason words
spelled as Slurm 22.05's libslurmfull has them (QOSMaxJobsPerUserLimit, AssocGrpJobsLimit,
QOSMaxWallDurationPerJobLimit)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from hpcjup.schedulers import get_scheduler
from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.schedulers.shell import FRAME
from hpcjup.schedulers.slurm_parse import parse_statuses
from hpcjup.session.groupstatus import WAITING, adaptive_status, groups_text, with_reasons

FIGURES = {"running": 0, "pending": 3, "target": 3, "min": 0, "max": 3, "lost": 0, "error": None}
SQUEUE = "\n".join(
    [
        f"{FRAME} squeue",
        "RUNNING|None|2026-12-07T00:12:01|node1|9:41|10:00|70",
        "PENDING|QOSMaxJobsPerUserLimit|N/A||10:00|10:00|71",
        "PENDING|AssocGrpJobsLimit|N/A||10:00|10:00|72",
        "PENDING|QOSMaxWallDurationPerJobLimit|N/A||10:00|10:00|73",
        "PENDING|PartitionTimeLimit|N/A||10:00|10:00|74",
        f"{FRAME} end 0",
    ]
)


def status_file(jobs: object) -> bytes:
    return json.dumps({"groups": {"batch": {**FIGURES, "jobs": jobs}}}).encode()


def test_the_waiting_jobs_ids_are_read_from_the_loops_status_file() -> None:
    found = adaptive_status(status_file({"71": "pending", "72": "pending", "70": "running", "x;rm": "pending"}))
    assert found["batch"][WAITING] == ("71", "72"), "only pending ones, and only what looks like a job id"


def test_ls_shows_the_schedulers_reasons_for_a_groups_waiting_jobs() -> None:
    ids = ["70", "71", "72", "73", "74"]
    answers = parse_statuses(SQUEUE, ids, ids)
    groups = (("batch", {**FIGURES, WAITING: ("71", "72", "74")}),)
    ((_, shown),) = with_reasons(groups, answers, get_scheduler("slurm"))
    assert WAITING not in shown, "the ids are not shown"
    assert shown["pending_reasons"] == {"QOSMaxJobsPerUserLimit": 1, "AssocGrpJobsLimit": 1, "PartitionTimeLimit": 1}
    assert shown["never_starts"] == "a longer time than the partition allows"
    line = groups_text([{"session": "lab", "worker_groups": {"batch": shown}}]).splitlines()[-1]
    assert line == (
        "  lab/batch: 0 running, 3 pending, target 3 (0-3 jobs); pending: 1 AssocGrpJobsLimit, 1 PartitionTimeLimit, "
        "1 QOSMaxJobsPerUserLimit (will not start: a longer time than the partition allows)"
    )


def test_a_qos_job_limit_is_shown_but_is_not_a_reason_that_never_clears() -> None:
    """QOSMaxJobsPerUserLimit clears as the user's other jobs end; a per-job wall-time limit of the QOS never does."""
    ids = ["71", "73"]
    answers = parse_statuses(SQUEUE, ids, ids)
    ((_, qos),) = with_reasons((("batch", {**FIGURES, WAITING: ("71",)}),), answers, get_scheduler("slurm"))
    assert (qos["pending_reasons"], qos["never_starts"]) == ({"QOSMaxJobsPerUserLimit": 1}, None)
    ((_, wall),) = with_reasons((("batch", {**FIGURES, WAITING: ("73",)}),), answers, get_scheduler("slurm"))
    assert wall["never_starts"] == "a longer time than your QOS or association allows per job"


def test_a_group_without_answers_shows_no_reason() -> None:
    gone = {"71": JobStatus("71", JobState.GONE)}
    ((_, shown),) = with_reasons((("batch", {**FIGURES, WAITING: ("71", "99")}),), gone, get_scheduler("slurm"))
    assert (shown["pending_reasons"], shown["never_starts"]) == ({}, None)
    assert "pending:" not in groups_text([{"session": "lab", "worker_groups": {"batch": shown}}])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=30), inner, max_size=4),
    max_leaves=20,
)


@given(jobs=json_values)
def test_any_jobs_entry_reads_as_checked_ids_or_none(jobs: object) -> None:
    """The file comes from the cluster: whatever its `jobs` holds, the ids asked about are plain job ids."""
    found = adaptive_status(status_file(jobs))
    for job in found["batch"][WAITING]:
        assert isinstance(jobs, dict) and jobs[job] == "pending"
        assert job[0].isascii() and job[0].isalnum() and all(c.isalnum() or c in "_.[]-" for c in job)
