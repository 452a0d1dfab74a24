"""End a session: Jupyter shuts down cleanly, the job ends, the secrets go."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hpcjup.errors import HpcjupError
from hpcjup.job import CONNECTION_FILE, DASK_DIR, STATE_FILE, TOKEN_FILE
from hpcjup.schedulers.base import JobState, JobStatus, Scheduler
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import JobReport, SessionRecord
from hpcjup.session.wait import report_of
from hpcjup.transport.base import Transport
from hpcjup.transport.watch import Watch

_QUERY_EVERY = 5.0  # seconds between scheduler queries while the launcher has not recorded its end
_CONFIRM_EVERY = 1.0  # ... once it has: the job leaves the queue within moments
#: What the launcher removes itself at the end, and a killed job cannot.
SECRETS = (CONNECTION_FILE, TOKEN_FILE, f"{DASK_DIR}/key.pem")


@dataclass(frozen=True)
class StopOutcome:
    """How the stop went."""

    name: str
    job_id: str
    was_active: bool
    graceful: bool  # Jupyter shut down by itself before the deadline
    state: str  # the job's final state as the scheduler reports it
    reason: str | None  # the launcher's reason (stopped, walltime, ...)


def stop_session(
    transport: Transport,
    scheduler: Scheduler,
    paths: SessionPaths,
    record: SessionRecord,
    status: JobStatus,
    report: JobReport | None = None,
    grace: float = 60.0,
) -> StopOutcome:
    """SIGTERM the launcher, watch for the job to leave, cancel it outright after `grace` seconds."""
    was_active = status.state.active
    graceful = True
    if was_active:
        scheduler.cancel(transport, record.job_id, graceful=True)
        graceful, status, report = wait_until_gone(transport, scheduler, paths, record, grace)
        if not graceful:
            scheduler.cancel(transport, record.job_id, graceful=False)
            _, status, report = wait_until_gone(transport, scheduler, paths, record, 30.0)
    remove_secrets(transport, paths)
    return StopOutcome(
        record.name, record.job_id, was_active, graceful, status.state.value, report.reason if report else None
    )


def remove_secrets(transport: Transport, paths: SessionPaths) -> None:
    """The token, connection.json and the Dask key, in one command (a killed job leaves them behind)."""
    transport.run(["rm", "-f", "--", *(paths.file(name) for name in SECRETS)], check=False)


def wait_until_gone(
    transport: Transport, scheduler: Scheduler, paths: SessionPaths, record: SessionRecord, deadline: float
) -> tuple[bool, JobStatus, JobReport | None]:
    """Watch state.json (one remote watcher) and ask the scheduler now and then, until the job is no
    longer active: (whether it left in time, its last status, the launcher's last report)."""
    end = time.monotonic() + deadline
    report: JobReport | None = None
    status = JobStatus(record.job_id, JobState.RUNNING)
    next_query = time.monotonic() + _CONFIRM_EVERY
    try:
        with Watch(transport, paths.dir, [STATE_FILE]) as watch:
            while time.monotonic() < end:
                changes = watch.changes(max(0.0, min(end, next_query) - time.monotonic()))
                if STATE_FILE in changes:
                    report = report_of(changes[STATE_FILE])
                    if report is not None and report.ended:
                        next_query = time.monotonic()
                if time.monotonic() >= next_query:
                    status = scheduler.status(transport, record.job_id)
                    if not status.state.active:
                        return True, status, report
                    ended = report is not None and report.ended
                    next_query = time.monotonic() + (_CONFIRM_EVERY if ended else _QUERY_EVERY)
    except (EOFError, HpcjupError):
        pass  # the watcher is gone: one last question to the scheduler decides
    status = scheduler.status(transport, record.job_id)
    return not status.state.active, status, report
