"""Listing: the status queries of several schedulers in use travel side by side, not one after another; a job a
scheduler said is over is not asked about again by later listings on this laptop."""

from __future__ import annotations

import json
import shutil
import stat
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import RemoteCommandError
from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.schedulers.slurm import Slurm
from hpcjup.session import overview
from hpcjup.session.catalog import SessionDir
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import SessionRecord
from hpcjup.session.store import LocalStore
from hpcjup.transport.base import Transport
from hpcjup.transport.local import LocalTransport


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


def _found(name: str, scheduler: str, job_id: str) -> SessionDir:
    record = SessionRecord(name, "h", scheduler, job_id, "2026-12-01T00:00:00+00:00")
    return SessionDir(SessionPaths("/home/u", name), record, None)


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


# -- jobs that are over: what the scheduler said is remembered on this laptop, and not asked again --------


class Answering(Slurm):
    """A scheduler that answers from a script (job id -> status) and records which ids it was asked about."""

    def __init__(self, answers: dict[str, JobStatus]) -> None:
        self.answers = answers
        self.asked: list[list[str]] = []
        self.down = False  # True: it cannot answer (its command fails)

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.asked.append(sorted(job_ids))
        if self.down:
            raise RemoteCommandError(["squeue"], 1, "", "slurm_load_jobs error: Unable to contact slurm controller")
        return {job_id: self.answers.get(job_id, JobStatus(job_id, JobState.GONE)) for job_id in job_ids}


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalTransport, LocalStore, Path, Answering]:
    """This machine as the host (its home in tmp_path, read with the real one-command scan), a laptop store
    beside it, and a Slurm that answers from a script: a pending job that was cancelled, one that runs."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    slurm = Answering(
        {
            "101": JobStatus("101", JobState.CANCELLED, reason="None", exit_code="0:0"),
            "102": JobStatus("102", JobState.RUNNING, nodes="node1", time_left=600),
        }
    )
    monkeypatch.setattr(overview, "get_scheduler", lambda name: slurm)
    _session(home, "never-ran", "101")  # cancelled while it pended: no state.json will ever say it ended
    _session(home, "runs", "102", {"state": "running", "updated_at": "2026-12-01T00:00:05+00:00"})
    return LocalTransport(), LocalStore(tmp_path / "state"), home, slurm


def _session(home: Path, name: str, job_id: str, state: dict[str, Any] | None = None) -> Path:
    directory = home / ".hpcjup" / "sessions" / name
    directory.mkdir(parents=True, exist_ok=True)
    record = SessionRecord(name, "local", "slurm", job_id, "2026-12-01T00:00:00+00:00")
    (directory / "session.json").write_bytes(record.to_json())
    if state is not None:
        (directory / "state.json").write_text(json.dumps({"schema": 1, **state}))
    return directory


def _listed(transport: LocalTransport, store: LocalStore) -> dict[str, dict[str, Any]]:
    return {view.to_dict()["session"]: view.to_dict() for view in overview.overview(transport, store)}


def test_a_job_that_never_ran_is_asked_about_once_then_shown_as_the_scheduler_left_it(cluster: Any) -> None:
    transport, store, _, slurm = cluster
    first = _listed(transport, store)
    assert slurm.asked == [["101", "102"]]
    second = _listed(transport, store)
    assert slurm.asked[1:] == [["102"]], "only the running job is asked about again"
    assert second == first
    ended = second["never-ran"]
    assert (ended["state"], ended["exit_code"], ended["ended_because"]) == ("CANCELLED", "0:0", "cancelled")
    path = store.host_file("finished", "local")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # `stop --all` takes the remembered answer (an ended session is skipped); `prune`, which removes directories,
    # asks again about every job it could remove (a requeued job waits again under the same id).
    assert overview.overview(transport, store)[0].paths.name and slurm.asked[2:] == [["102"]]
    assert [view.paths.name for view in overview.prunable(overview.overview(transport, store, recheck=True))] == [
        "never-ran"
    ]
    assert slurm.asked[3:] == [["101", "102"]]
    # One session by name (stop, attach, logs) is still asked about: stop must see the truth.
    assert overview.named_session(transport, store, "never-ran").status.state is JobState.CANCELLED
    assert slurm.asked[4:] == [["101"]]


def test_a_reused_name_with_a_new_job_is_asked_about(cluster: Any) -> None:
    transport, store, home, slurm = cluster
    _listed(transport, store)
    _session(home, "never-ran", "103")  # pruned, then started anew under the same name
    slurm.answers["103"] = JobStatus("103", JobState.PENDING, reason="Priority")
    assert _listed(transport, store)["never-ran"]["state"] == "PENDING"
    assert slurm.asked[1:] == [["102", "103"]]
    slurm.answers["103"] = JobStatus("103", JobState.FAILED, exit_code="1:0")
    assert _listed(transport, store)["never-ran"]["state"] == "FAILED"
    assert _listed(transport, store)["never-ran"]["exit_code"] == "1:0"
    assert slurm.asked[2:] == [["102", "103"], ["102"]]


def test_only_final_answers_are_remembered_and_a_launcher_that_reports_in_is_heard(cluster: Any) -> None:
    transport, store, home, slurm = cluster
    slurm.down = True  # UNKNOWN: the scheduler could not answer, which says nothing about the job
    assert _listed(transport, store)["never-ran"]["state"] == "UNKNOWN"
    slurm.down = False
    assert _listed(transport, store)["never-ran"]["state"] == "CANCELLED"
    assert _listed(transport, store)["never-ran"]["state"] == "CANCELLED"
    assert slurm.asked == [["101", "102"], ["101", "102"], ["102"]]
    # A state.json appears that says the job runs after all (it was only slow to show up): asked again.
    _session(home, "never-ran", "101", {"state": "running", "updated_at": "2026-12-01T00:01:00+00:00"})
    slurm.answers["101"] = JobStatus("101", JobState.RUNNING, nodes="node2")
    assert _listed(transport, store)["never-ran"]["state"] == "RUNNING"
    assert slurm.asked[3:] == [["101", "102"]]


def test_a_removed_session_is_forgotten_and_a_corrupt_file_is_ignored_and_rewritten(cluster: Any) -> None:
    transport, store, home, slurm = cluster
    path = store.host_file("finished", "local")
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"schema": 1, "jobs": [{"session": "never-ran", "job_id": "101", "state": ')  # cut short
    assert _listed(transport, store)["never-ran"]["state"] == "CANCELLED"
    assert slurm.asked == [["101", "102"]]
    assert [job["session"] for job in json.loads(path.read_text())["jobs"]] == ["never-ran"]
    # Hand-edited: an answer that is not final, and one for a job of another name, are not taken.
    path.write_text(
        json.dumps(
            {
                "schema": 1,
                "jobs": [
                    {"session": "runs", "job_id": "102", "state": "COMPLETED"},
                    {"session": "never-ran", "job_id": "101", "state": "RUNNING"},
                ],
            }
        )
    )
    assert _listed(transport, store)["runs"]["state"] == "RUNNING"  # its launcher reports it running: asked
    assert slurm.asked[1:] == [["101", "102"]]
    shutil.rmtree(home / ".hpcjup" / "sessions" / "never-ran")  # what `prune` does on the host
    assert list(_listed(transport, store)) == ["runs"]
    assert json.loads(path.read_text())["jobs"] == []


def test_prune_asks_about_a_job_whose_launcher_recorded_its_end_long_ago(cluster: Any) -> None:
    """A requeued job: its launcher wrote "ended" (preempted), and the job pends under the same id to run again
    in that directory. `ls` trusts an old "ended" without a query; `prune`, which deletes, asks, and keeps it."""
    transport, store, home, slurm = cluster
    _session(home, "requeued", "104", {"state": "ended", "reason": "stopped", "updated_at": "2026-01-01T00:00:00Z"})
    slurm.answers["104"] = JobStatus("104", JobState.PENDING, reason="BeginTime")
    assert _listed(transport, store)["requeued"]["state"] == "ENDED" and "104" not in slurm.asked[-1]
    views = overview.overview(transport, store, recheck=True)
    assert "104" in slurm.asked[-1]
    assert "requeued" not in [view.paths.name for view in overview.prunable(views)]
