"""Listing: the status queries of several schedulers in use travel side by side, not one after another."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from hpcjup.errors import RemoteCommandError
from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.schedulers.slurm import Slurm
from hpcjup.session import overview
from hpcjup.session.catalog import Found
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import SessionRecord
from hpcjup.transport.base import Transport


class Meeting(Slurm):
    """A scheduler whose query answers only once the other scheduler's query is under way too."""

    def __init__(self, name: str, barrier: threading.Barrier, fail: bool = False) -> None:
        self.name = name
        self.barrier = barrier
        self.fail = fail

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.barrier.wait()  # BrokenBarrierError after the timeout if the queries run one after another
        if self.fail:
            raise RemoteCommandError(["qstat"], 1, "", "qstat: cannot connect to server")
        return {job_id: JobStatus(job_id, JobState.RUNNING) for job_id in job_ids}


def _found(name: str, scheduler: str, job_id: str) -> Found:
    record = SessionRecord(name, "h", scheduler, job_id, "2026-12-01T00:00:00+00:00")
    return Found(SessionPaths("/home/u", name), record, None)


@pytest.mark.parametrize("fail", [False, True])
def test_two_schedulers_are_asked_side_by_side(monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    barrier = threading.Barrier(2, timeout=10)
    adapters = {"slurm": Meeting("slurm", barrier), "sge": Meeting("sge", barrier, fail=fail)}
    monkeypatch.setattr(overview, "get_scheduler", adapters.__getitem__)
    found = [_found("a", "slurm", "11"), _found("b", "sge", "12"), _found("c", "slurm", "13")]
    statuses = overview.job_statuses(None, found)  # type: ignore[arg-type]
    assert statuses["a"].state is JobState.RUNNING and statuses["c"].state is JobState.RUNNING
    # A scheduler that cannot answer leaves its sessions UNKNOWN (never pruned on a guess), the others answered.
    assert statuses["b"].state is (JobState.UNKNOWN if fail else JobState.RUNNING)
    if fail:
        assert "cannot connect" in (statuses["b"].reason or "")
