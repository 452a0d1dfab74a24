"""Wait for a submitted job's Jupyter: cheap file checks often, scheduler queries rarely.

The session directory is listed every 0.2 s over the open connection (an SFTP
listing, not a new process on the login node); the scheduler is asked with backoff
(1, 2, 4, 8, then every 10 s while pending: at most 6 queries a minute), and at once
when the job's log appears, which says the job has started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hpcjup.errors import JobFailedError, WaitTimeout
from hpcjup.job import CONNECTION_FILE, STATE_FILE
from hpcjup.schedulers.base import JOB_LOG, JobState, JobStatus, Scheduler
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import (
    Connection,
    JobReport,
    SessionRecord,
    read_report,
)
from hpcjup.transport.base import Transport

_SCAN_INTERVAL = 0.2
_PENDING_BACKOFF = (1, 2, 4, 8, 10)
_STARTING_INTERVAL = 3  # while the job runs but Jupyter does not answer yet
LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class Progress:
    """What the status line shows while waiting."""

    state: str  # a JobState value, or "STARTING" once the launcher runs
    elapsed: float
    reason: str | None = None
    expected_start: str | None = None
    node: str | None = None


class ReadyWaiter:
    """Polls one session until its connection.json appears or the job ends."""

    def __init__(
        self,
        transport: Transport,
        scheduler: Scheduler,
        record: SessionRecord,
        paths: SessionPaths,
        on_progress: Callable[[Progress], None] = lambda p: None,
        pending_timeout: float | None = None,
        ready_timeout: float = 360.0,
    ) -> None:
        self.t, self.scheduler, self.record, self.paths = transport, scheduler, record, paths
        self.on_progress = on_progress
        self.pending_timeout = pending_timeout
        self.ready_timeout = ready_timeout
        self.status = JobStatus(record.job_id, JobState.PENDING)
        self.queries = 0  # scheduler queries made (the benchmark reports them)

    def wait(self) -> Connection:
        """The session's connection, once Jupyter answers on the node. Raises on failure or deadline."""
        started = time.monotonic()
        next_query, backoff, seen_log, state_mtime = started, 0, False, None
        running_since: float | None = None
        report: JobReport | None = None
        while True:
            now = time.monotonic()
            files = self.t.scan(self.paths.dir)
            conn = self._connection(files)
            if conn is not None:
                return conn
            info = files.get(STATE_FILE)
            if info is not None and info.mtime != state_mtime:
                state_mtime = info.mtime
                report = read_report(self.t, self.paths.state)
                if report is not None and report.ended:
                    raise self._failure(report)
            if JOB_LOG in files and not seen_log:
                seen_log, next_query = True, now  # the job started: look now, not after the backoff
            if now >= next_query:
                self.status = self._query()
                if not self.status.state.active:
                    raise self._failure(read_report(self.t, self.paths.state))
                if self.status.state is JobState.PENDING:
                    next_query = now + _PENDING_BACKOFF[min(backoff, len(_PENDING_BACKOFF) - 1)]
                    backoff += 1
                else:
                    running_since = running_since or now
                    next_query = now + _STARTING_INTERVAL
            self._check_deadlines(now - started, None if running_since is None else now - running_since)
            state = "STARTING" if report is not None and report.state == "starting" else self.status.state.value
            node = (report.node if report else None) or self.status.nodes
            self.on_progress(Progress(state, now - started, self.status.reason, self.status.expected_start, node))
            time.sleep(_SCAN_INTERVAL)

    def _query(self) -> JobStatus:
        self.queries += 1
        return self.scheduler.status(self.t, self.record.job_id)

    def _connection(self, files: dict) -> Connection | None:
        info = files.get(CONNECTION_FILE)
        if info is None or info.size == 0:
            return None
        try:
            return Connection.from_json(self.t.read_file(self.paths.connection))
        except FileNotFoundError:  # removed between listing and reading: the job is ending
            return None

    def _check_deadlines(self, waited: float, running_for: float | None) -> None:
        job = self.record.job_id
        if running_for is None and self.pending_timeout and waited > self.pending_timeout:
            raise WaitTimeout(
                f"Job {job} was still pending after {waited:.0f} s ({self.status.reason or 'no reason given'}).",
                hint="Try a less busy partition or fewer resources, or wait longer with --timeout.",
            )
        if running_for is not None and running_for > self.ready_timeout:
            raise WaitTimeout(
                f"Job {job} runs, but Jupyter did not answer within {self.ready_timeout:.0f} s.",
                hint=f"Look at the job's log: {self.paths.log}",
            )

    def _failure(self, report: JobReport | None) -> JobFailedError:
        """Why the job ended before Jupyter answered, with the tail of its log."""
        status = self.status if not self.status.state.active else JobStatus(self.record.job_id, JobState.GONE)
        what = f"Job {self.record.job_id} ended"
        if status.state is not JobState.GONE:
            what += f" ({status.state.value}" + (f", exit code {status.exit_code}" if status.exit_code else "") + ")"
        message = f"{what} before Jupyter answered" + (f": {report.message}" if report and report.message else ".")
        return JobFailedError(message, hint=failure_hint(report, self.paths), details=log_tail(self.t, self.paths))


def failure_hint(report: JobReport | None, paths: SessionPaths) -> str:
    """What to do about a job that ended early, by the launcher's reason."""
    reason = report.reason if report else None
    if reason in ("no-jupyter", "jupyter-too-old"):
        return "Install JupyterLab and jupyter_server>=2.20 in the cluster environment, or point --python at a Python that has them."
    if reason is None and report is None:
        return f"The launcher never ran: is `python3` (>= 3.9) on the cluster's PATH in a login shell? The job's log: {paths.log}"
    return f"The job's full log is {paths.log} on the cluster."


def log_tail(transport: Transport, paths: SessionPaths, lines: int = LOG_TAIL_LINES) -> str | None:
    """The last lines of the job's log, or None if there is none."""
    try:
        text = transport.read_file(paths.log).decode(errors="replace")
    except FileNotFoundError:
        return None
    tail = text.rstrip().splitlines()[-lines:]
    return "\n".join(tail) if tail else None
