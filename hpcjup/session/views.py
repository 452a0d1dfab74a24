"""A session as `ls`, `attach`, `logs`, `stop` and `prune` see it: a SessionView (its record, the scheduler's status,
the launcher's report, this laptop's cache) or a DamagedView (a directory whose files cannot be used).
session/overview.py makes them from one read of the host and one query per scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpcjup.errors import DamagedDocument, HpcjupError
from hpcjup.job import NORMAL_ENDS
from hpcjup.schedulers import get_scheduler
from hpcjup.schedulers.base import JobState, JobStatus, Scheduler
from hpcjup.session.catalog import SessionDir
from hpcjup.session.layout import SessionPaths
from hpcjup.session.liveholders import holder_pid
from hpcjup.session.record import JobReport, SessionRecord
from hpcjup.session.store import CacheEntry


@dataclass(frozen=True)
class SessionView:
    """One session as the scheduler, the launcher and the laptop's cache see it."""

    record: SessionRecord
    paths: SessionPaths
    status: JobStatus
    report: JobReport | None
    cached: CacheEntry | None
    found_workers: tuple[str, ...] = ()
    usage: bytes | None = None  # usage.json as read with the record
    worker_groups: tuple[tuple[str, dict[str, Any]], ...] = ()  # adaptive groups' figures (groupstatus.py)

    @property
    def hopeless(self) -> str | None:
        """What is wrong, when the job pends for something that will not come (the scheduler's never_starts)."""
        if self.status.state is not JobState.PENDING:
            return None
        verdict = self.scheduler.never_starts(self.status)
        return verdict[0] if verdict else None

    @property
    def active(self) -> bool:
        return self.status.state.active

    @property
    def job_id(self) -> str:
        return self.record.job_id

    @property
    def scheduler(self) -> Scheduler:
        """The session's own scheduler adapter, as its session.json records it."""
        return get_scheduler(self.record.scheduler)

    @property
    def worker_ids(self) -> tuple[str, ...]:
        """The worker jobs the session recorded (read with its record)."""
        return self.found_workers

    @property
    def preempted(self) -> bool:
        """A preemptible session whose run was stopped while the scheduler holds its job again (requeued, waiting
        to run again): the launcher recorded the run's end, the job did not end."""
        return self.report is not None and self.report.may_return and self.status.state is JobState.PENDING

    @property
    def preemptions(self) -> int:
        """How often the session's job was preempted and requeued (runs before this one, and this one's end if it
        waits to run again)."""
        if self.report is None:
            return 0
        return self.report.restarts + (1 if self.preempted else 0)

    @property
    def state(self) -> str:
        """The scheduler's word while it knows the job (PREEMPTED: pending again after a requeue); ENDED once it
        forgot it."""
        if self.status.state is JobState.GONE:
            return "ENDED" if self.report is None or self.report.ended else "GONE"
        return "PREEMPTED" if self.preempted else self.status.state.value

    @property
    def ended_normally(self) -> bool:
        return (
            self.report is not None and self.report.reason in NORMAL_ENDS
        ) or self.status.state is JobState.COMPLETED

    @property
    def why(self) -> str | None:
        """Why it ended (the launcher's reason, else the scheduler's state), or None while active."""
        if self.active:
            return None
        if self.status.state is JobState.PREEMPTED:  # the launcher saw only a stop signal; the scheduler knows why
            return "preempted"
        return (self.report.reason if self.report and self.report.reason else None) or self.state.lower()

    @property
    def local_url(self) -> str | None:
        """The URL of a tunnel held by a live process on this laptop."""
        if self.cached is None or self.cached.tunnel is None or holder_pid(self.cached) is None:
            return None
        return self.cached.tunnel.url

    @property
    def exit_code(self) -> str | int | None:
        """The scheduler's exit code where it has one, else the launcher's."""
        if self.status.exit_code is not None:
            return self.status.exit_code
        return self.report.exit_code if self.report else None

    def to_dict(self) -> dict[str, Any]:
        res = self.record.resources
        return {
            "session": self.record.name,
            "job_id": self.record.job_id,
            "host": self.record.host,
            "state": self.state,
            "pending_reason": self.status.reason if self.status.state is JobState.PENDING else None,
            "expected_start": self.status.expected_start if self.status.state is JobState.PENDING else None,
            "ended_because": self.why,
            # The scheduler gave no answer (controller down, query cut off): its words, so the user sees why.
            "unknown_because": self.status.reason if self.status.state is JobState.UNKNOWN else None,
            "message": self.report.message if self.report and (not self.active or self.preempted) else None,
            "exit_code": self.exit_code,
            "partition": res.get("partition"),
            "nodes": res.get("nodes", 1),
            "node_list": self.status.nodes or (self.report.node if self.report else None),
            "time_left": self.status.time_left if self.active else None,
            "time_limit": self.status.time_limit,
            "created_at": self.record.created_at,
            "local_url": self.local_url,
            # Why this laptop's tunnel holder gave up (e.g. the host key changed), until a new one runs.
            "tunnel_error": self.cached.tunnel_error.to_dict() if self.cached and self.cached.tunnel_error else None,
            "preemptible": bool(self.report and self.report.preemptible),
            "preemptions": self.preemptions,
            "worker_groups": dict(self.worker_groups) if self.active else {},
        }


@dataclass(frozen=True)
class DamagedView:
    """A session directory whose files cannot be used: shown with the reason, skipped by bulk commands."""

    found: SessionDir
    cached: CacheEntry | None = None

    active = False
    job_id = None  # unknown: the record is what is damaged

    @property
    def paths(self) -> SessionPaths:
        return self.found.paths

    @property
    def why(self) -> str:
        return f"damaged: {self.found.problem}"

    @property
    def may_run(self) -> bool:
        """The launcher's state.json says the job has not ended: its job may still hold nodes."""
        report = self.found.report
        return report is not None and not report.ended

    def error(self) -> HpcjupError:
        """What a command that needs this session says."""
        name = self.paths.name
        hint = "`hpcjup prune` removes it" + (
            " once its job has ended (state.json says it may still run: check the scheduler's queue)."
            if self.may_run
            else "."
        )
        error = DamagedDocument(f"Session {name}:", f"{self.found.problem}")
        error.hint = hint
        return error

    def to_dict(self) -> dict[str, Any]:
        report = self.found.report
        return {
            "session": self.paths.name,
            "job_id": None,
            "host": None,
            "state": "DAMAGED",
            "pending_reason": None,
            "expected_start": None,
            "ended_because": self.why,
            "unknown_because": None,
            "message": self.found.problem,
            "exit_code": None,
            "partition": None,
            "nodes": None,
            "node_list": report.node if report else None,
            "time_left": None,
            "time_limit": None,
            "created_at": None,
            "local_url": None,
            "tunnel_error": None,
            "preemptible": False,
            "preemptions": 0,
            "worker_groups": {},
        }


View = SessionView | DamagedView
