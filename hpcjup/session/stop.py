"""End a session: Jupyter shuts down cleanly, the job ends, the secrets go."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hpcjup.schedulers.base import Scheduler
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import SessionRecord, read_report
from hpcjup.transport.base import Transport

_POLL = 0.25
_QUERY_EVERY = 2.0


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
    transport: Transport, scheduler: Scheduler, paths: SessionPaths, record: SessionRecord, grace: float = 60.0
) -> StopOutcome:
    """SIGTERM the launcher, wait for the job to leave, cancel it outright after `grace` seconds."""
    status = scheduler.status(transport, record.job_id)
    was_active = status.state.active
    graceful = True
    if was_active:
        scheduler.cancel(transport, record.job_id, graceful=True)
        graceful = wait_until_gone(transport, scheduler, paths, record, grace)
        if not graceful:
            scheduler.cancel(transport, record.job_id, graceful=False)
            wait_until_gone(transport, scheduler, paths, record, 30.0)
        status = scheduler.status(transport, record.job_id)
    # The launcher removes these itself; a killed job cannot, so make sure.
    for secret in (paths.connection, paths.token):
        transport.remove(secret)
    report = read_report(transport, paths.state)
    return StopOutcome(
        record.name, record.job_id, was_active, graceful, status.state.value, report.reason if report else None
    )


def wait_until_gone(
    transport: Transport, scheduler: Scheduler, paths: SessionPaths, record: SessionRecord, deadline: float
) -> bool:
    """Watch state.json often and the scheduler now and then, until the job is no longer active; whether it left in time."""
    end = time.monotonic() + deadline
    next_query = time.monotonic() + _QUERY_EVERY
    while time.monotonic() < end:
        report = read_report(transport, paths.state)
        if (report is not None and report.ended) or time.monotonic() >= next_query:
            if not scheduler.status(transport, record.job_id).state.active:
                return True
            next_query = time.monotonic() + _QUERY_EVERY
        time.sleep(_POLL)
    return False
